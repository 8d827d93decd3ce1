#include "parallel/process_groups.h"

#include "parallel/mpi_communicator.h"

namespace moetron {

ProcessGroups::ProcessGroups() = default;
ProcessGroups::~ProcessGroups() = default;

ProcessGroups::ProcessGroups(const Layout& layout, MPI_Comm base) : layout_(layout) {
  MPI_Comm world = MPI_COMM_NULL;
  MPI_Comm_dup(base, &world);  // its own communicator: freed with the groups
  world_ = std::make_unique<MpiCommunicator>(world, "world");
  rank_ = world_->rank();
  MOETRON_CHECK(world_->size() == layout.world, "layout for ", layout.world, " ranks, world of ",
                world_->size());
  // Same color, one group; ordered by world rank.
  dp_ = world_->split(tp_rank(), rank_, "dp");
  tp_ = world_->split(dp_rank(), rank_, "tp");
  ep_ = world_->split(edp_rank(), rank_, "ep");
  edp_ = world_->split(ep_rank(), rank_, "edp");
}

namespace {
// A group of one rank needs no communication.
Communicator* if_shared(const std::unique_ptr<MpiCommunicator>& c) {
  return c && c->size() > 1 ? c.get() : nullptr;
}
}  // namespace

Communicator* ProcessGroups::world() const {
  return if_shared(world_);
}
Communicator* ProcessGroups::dp() const {
  return if_shared(dp_);
}
Communicator* ProcessGroups::tp() const {
  return if_shared(tp_);
}
Communicator* ProcessGroups::ep() const {
  return if_shared(ep_);
}
Communicator* ProcessGroups::edp() const {
  return if_shared(edp_);
}

std::vector<Communicator*> ProcessGroups::all() const {
  std::vector<Communicator*> out;
  for (Communicator* c : {world(), dp(), tp(), ep(), edp()})
    if (c) out.push_back(c);
  return out;
}

MPI_Comm ProcessGroups::mpi_world() const {
  return world_ ? world_->comm() : MPI_COMM_NULL;
}

Runtime ProcessGroups::runtime(Device device, DType compute) const {
  return {device, {layout_.tp, tp_rank(), tp()}, {layout_.ep, ep_rank(), ep()}, compute};
}

}  // namespace moetron
