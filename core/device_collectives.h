// Collectives over one group's device memory, as a device's communication library offers them:
// raw buffers, element counts and types, parts placed by CommParts. NCCL implements it for CUDA
// (core/cuda/nccl.h); MPI over host-addressable memory for cpu:N, the device backend's code on
// the host (parallel/mpi_collectives.h), so that the code turning tensors into these calls
// (parallel/device_communicator.h) runs in CI. Calls may only be enqueued (NCCL's are, on the
// compute stream): work after them on the device sees their result, the host only after a
// device-to-host copy.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/comm_parts.h"

namespace moetron {

enum class CommType : uint8_t { f32, f64, i32, i64, bf16 };

inline size_t comm_type_bytes(CommType t) {
  return t == CommType::bf16 ? 2 : (t == CommType::f32 || t == CommType::i32 ? 4 : 8);
}

class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // x [n] reduced over the group in place (sum, or max).
  virtual void all_reduce(void* x, int64_t n, CommType type, bool max) = 0;
  // out [size() * n] = every rank's in [n] in rank order.
  virtual void all_gather(const void* in, void* out, int64_t n, CommType type) = 0;
  // x holds size() f32 parts; afterwards this rank's part holds the group's sum of it (the other
  // parts are left as they were or hold partial sums).
  virtual void reduce_scatter(float* x, const CommParts& parts) = 0;
  // The inverse: afterwards every part of x holds what its rank had in it.
  virtual void all_gather(float* x, const CommParts& parts) = 0;
  // Part j of `send` goes to rank j; part i of `recv` comes from rank i.
  virtual void all_to_all_v(const void* send, const CommParts& sent, void* recv,
                            const CommParts& received, CommType type) = 0;
  virtual void broadcast(void* x, int64_t n, CommType type, int root) = 0;
};

}  // namespace moetron
