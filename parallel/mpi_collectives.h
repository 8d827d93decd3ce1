// DeviceCollectives (core/device_collectives.h) over MPI, for a device whose memory the host can
// address: cpu:N, the device backend's code on the host. It stands where NCCL stands for CUDA, so
// that CI runs the device communicator (parallel/device_communicator.h) and a device run's
// collectives under mpirun without a GPU. Blocking calls; the MPI communicator is borrowed.
#pragma once

#include <mpi.h>

#include "core/device_collectives.h"

namespace moetron {

class MpiCollectives final : public DeviceCollectives {
 public:
  explicit MpiCollectives(MPI_Comm comm);

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce(void* x, int64_t n, CommType type, bool max) override;
  void all_gather(const void* in, void* out, int64_t n, CommType type) override;
  void reduce_scatter(float* x, const CommParts& parts) override;
  void all_gather(float* x, const CommParts& parts) override;
  void all_to_all_v(const void* send, const CommParts& sent, void* recv, const CommParts& received,
                    CommType type) override;
  void broadcast(void* x, int64_t n, CommType type, int root) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace moetron
