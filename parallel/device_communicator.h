// The collectives of core/communicator.h for a run on a device: tensors on the host go to the
// group's MPI communicator (the dispatcher's counts, the step's scalars), tensors on the run's
// device to the device's collectives (NCCL on CUDA, core/cuda/nccl.h; MPI over host memory on
// cpu:N, parallel/mpi_collectives.h). A call whose tensors lie on two devices is an Error. The
// sizes and parts are checked and placed by the same code as the MPI communicator's
// (Communicator's checks, CommParts), and every call is counted here, either kind.
//
// Device collectives are enqueued in order with the device's kernels (NCCL on the compute stream)
// and the *_async calls return requests that are already complete: work after them on the device
// sees their result, so no host wait is needed. (A host tensor's request is the MPI
// communicator's: the seconds its wait() blocks are counted there.) Overlap with the backward pass
// (a stream of the collectives' own, ordered by events) is not done yet.
#pragma once

#include <initializer_list>
#include <memory>

#include "core/communicator.h"
#include "core/device_collectives.h"

namespace moetron {

class DeviceCommunicator final : public Communicator {
 public:
  // `host` is borrowed and must outlive this; `collectives` spans the same ranks in the same
  // order.
  DeviceCommunicator(Communicator& host, Device device,
                     std::unique_ptr<DeviceCollectives> collectives);

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  Device device() const { return device_; }

  void all_reduce(Tensor& x, ReduceOp op) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void all_to_all(const Tensor& send, Tensor& recv) override;
  void all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, Tensor& recv,
                    std::span<const int64_t> recv_rows) override;
  void broadcast(Tensor& x, int root) override;
  void barrier() override;

  std::unique_ptr<CommRequest> all_reduce_async(Tensor& x) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& x,
                                                    std::span<const int64_t> counts) override;
  std::unique_ptr<CommRequest> all_gather_async(Tensor& x,
                                                std::span<const int64_t> counts) override;

 private:
  // True when the tensors are the device's, false when the host's; an Error otherwise. Tensors
  // without storage (no elements) go either way.
  bool on_device(const char* what, std::initializer_list<const Tensor*> tensors) const;
  // Runs `call` on the host communicator, adds what it counted to this one's stats and returns
  // what `call` returns.
  template <typename Call>
  auto on_host(Call&& call);

  Communicator& host_;
  Device device_;
  std::unique_ptr<DeviceCollectives> collectives_;
};

}  // namespace moetron
