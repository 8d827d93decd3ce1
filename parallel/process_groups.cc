#include "parallel/process_groups.h"

#include <cstring>

#include "core/backend.h"
#include "parallel/collective.h"
#include "parallel/device_communicator.h"
#include "parallel/mpi_calls.h"
#include "parallel/mpi_collectives.h"
#include "parallel/mpi_communicator.h"

#ifdef MOETRON_HAVE_NCCL
#include "core/cuda/nccl.h"
#endif

namespace moetron {
namespace {

// The device's collectives over the ranks of `mpi`, in its order.
std::unique_ptr<DeviceCollectives> device_collectives(Device device, const MpiCommunicator& mpi) {
  if (device.kind == DeviceKind::cpu) return std::make_unique<MpiCollectives>(mpi.comm());
#ifdef MOETRON_HAVE_NCCL
  if (device.kind == DeviceKind::cuda) {
    // Rank 0 of the group makes the unique id; MPI hands it to the others.
    cuda::NcclId id;
    if (mpi.rank() == 0) id = cuda::nccl_unique_id();
    check_mpi(
        MPI_Bcast(id.bytes.data(), static_cast<int>(id.bytes.size()), MPI_CHAR, 0, mpi.comm()),
        "MPI_Bcast");
    try {
      return std::make_unique<cuda::NcclComm>(id, mpi.size(), mpi.rank());
    } catch (const Error& e) {  // most often two ranks on one GPU
      throw Error(detail::concat(e.what(), " (group ", mpi.name(),
                                 "; each rank needs a GPU of its own: start the ranks through "
                                 "launch/gpu_per_rank.sh)"));
    }
  }
#endif
  throw Error(
      detail::concat("a parallel job on ", device_name(device),
                     ": this build has no collectives for it (a CUDA device needs NCCL, found "
                     "at configure time)"));
}

}  // namespace

ProcessGroups::ProcessGroups(Device device) : device_(device) {}
ProcessGroups::~ProcessGroups() = default;

ProcessGroups::ProcessGroups(const Layout& layout, MPI_Comm base, Device device)
    : layout_(layout), device_(device) {
  MPI_Comm world = MPI_COMM_NULL;
  MPI_Comm_dup(base, &world);  // its own communicator: freed with the groups
  auto world_mpi = std::make_unique<MpiCommunicator>(world, "world");
  rank_ = world_mpi->rank();
  MOETRON_CHECK(world_mpi->size() == layout.world, "layout for ", layout.world, " ranks, world of ",
                world_mpi->size());
  // The device's collectives need its backend on every rank ("device cuda:7 has no backend in
  // this process ..." otherwise, on every rank alike).
  if (device_ != Device{}) run_collectively(world_mpi.get(), [&] { backend(device_); });
  // Same color, one group; ordered by world rank.
  auto dp = world_mpi->split(tp_rank(), rank_, "dp");
  auto tp = world_mpi->split(dp_rank(), rank_, "tp");
  auto ep = world_mpi->split(edp_rank(), rank_, "ep");
  auto edp = world_mpi->split(ep_rank(), rank_, "edp");
  world_ = make(std::move(world_mpi));
  dp_ = make(std::move(dp));
  tp_ = make(std::move(tp));
  ep_ = make(std::move(ep));
  edp_ = make(std::move(edp));
}

ProcessGroups::Comm ProcessGroups::make(std::unique_ptr<MpiCommunicator> mpi) const {
  Comm c;
  c.mpi = std::move(mpi);
  // Every rank of the group takes the same branch: size and device are the same on all.
  if (device_ != Device{} && c.mpi->size() > 1)
    c.device =
        std::make_unique<DeviceCommunicator>(*c.mpi, device_, device_collectives(device_, *c.mpi));
  return c;
}

// A group of one rank needs no communication.
Communicator* ProcessGroups::Comm::get() const {
  if (!mpi || mpi->size() == 1) return nullptr;
  if (device) return device.get();
  return mpi.get();
}

Communicator* ProcessGroups::world() const {
  return world_.get();
}
Communicator* ProcessGroups::dp() const {
  return dp_.get();
}
Communicator* ProcessGroups::tp() const {
  return tp_.get();
}
Communicator* ProcessGroups::ep() const {
  return ep_.get();
}
Communicator* ProcessGroups::edp() const {
  return edp_.get();
}

std::vector<Communicator*> ProcessGroups::all() const {
  std::vector<Communicator*> out;
  for (Communicator* c : {world(), dp(), tp(), ep(), edp()})
    if (c) out.push_back(c);
  return out;
}

MPI_Comm ProcessGroups::mpi_world() const {
  return world_.mpi ? world_.mpi->comm() : MPI_COMM_NULL;
}

Runtime ProcessGroups::runtime(DType compute) const {
  return {device_, {layout_.tp, tp_rank(), tp()}, {layout_.ep, ep_rank(), ep()}, compute};
}

}  // namespace moetron
