// NCCL over device buffers: DeviceCollectives (core/device_collectives.h) for CUDA, which
// parallel/device_communicator.h turns the collectives of core/communicator.h into for device
// tensors. Parts are placed by CommParts (core/comm_parts.h) as the MPI communicator places host
// ones, so the MPI equivalence suites cover that placement. Even reduce-scatters and all-gathers
// are NCCL's own; uneven ones (ZeRO-1's shards) are a grouped ncclReduce / ncclBroadcast per part;
// all_to_all_v is a grouped ncclSend / ncclRecv per peer. Calls are enqueued on the default
// stream, ordered with the kernels, and return without waiting. One device per rank: NCCL
// refuses two ranks on one GPU.
#pragma once

#include <array>
#include <cstdint>

#include "core/comm_parts.h"
#include "core/device_collectives.h"

namespace moetron::cuda {

// An ncclUniqueId's bytes: made by one rank, handed to the others by the caller (over MPI).
struct NcclId {
  std::array<char, 128> bytes{};
};
NcclId nccl_unique_id();
// The NCCL library loaded (ncclGetVersion: 22809 for 2.28.9), for logs.
int nccl_version();

class NcclComm final : public DeviceCollectives {
 public:
  // ncclCommInitRank on the current device; throws Error naming the rank and NCCL's reason.
  NcclComm(const NcclId& id, int ranks, int rank);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

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
  void* comm_ = nullptr;  // an ncclComm_t
  int rank_ = 0, size_ = 1;
};

}  // namespace moetron::cuda
