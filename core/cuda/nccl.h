// NCCL over device buffers: the collectives of core/communicator.h for device memory, their parts
// placed by CommParts (core/comm_parts.h) exactly as the MPI communicator places host ones, so
// the MPI equivalence suites cover that placement. Even reduce-scatters and all-gathers are
// NCCL's own; uneven ones (ZeRO-1's shards) are a grouped ncclReduce / ncclBroadcast per part;
// all_to_all_v is a grouped ncclSend / ncclRecv per peer. Calls are enqueued on the default
// stream, ordered with the kernels, and return without waiting. One device per rank: NCCL
// refuses two ranks on one GPU.
#pragma once

#include <array>
#include <cstdint>

#include "core/comm_parts.h"

namespace moetron::cuda {

// An ncclUniqueId's bytes: made by one rank, handed to the others by the caller (over MPI).
struct NcclId {
  std::array<char, 128> bytes{};
};
NcclId nccl_unique_id();

enum class NcclType : uint8_t { f32, f64, i32, i64, bf16 };

class NcclComm {
 public:
  // ncclCommInitRank on the current device; throws Error naming the rank and NCCL's reason.
  NcclComm(const NcclId& id, int ranks, int rank);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // x [n] reduced over the group in place (sum, or max).
  void all_reduce(void* x, int64_t n, NcclType type, bool max = false) const;
  // x holds size() parts; afterwards this rank's part holds the group's sum of it (the other
  // parts are left as they were or hold partial sums).
  void reduce_scatter(float* x, const CommParts& parts) const;
  // The inverse: afterwards every part of x holds what its rank had in it.
  void all_gather(float* x, const CommParts& parts) const;
  // Part j of `send` goes to rank j; part i of `recv` comes from rank i.
  void all_to_all_v(const void* send, const CommParts& sent, void* recv, const CommParts& received,
                    NcclType type) const;
  void broadcast(void* x, int64_t n, NcclType type, int root) const;

 private:
  void* comm_ = nullptr;  // an ncclComm_t
  int rank_ = 0, size_ = 1;
};

}  // namespace moetron::cuda
