// Collective communication over one group of ranks, as layers and the trainer see it. The MPI
// implementation (parallel/mpi_communicator.h) moves host tensors; an NCCL one will move device
// tensors behind the same interface, so models/ never changes for it.
//
// Every call is counted: calls, payload bytes and the seconds this rank spent blocked in it
// (blocking calls, and wait() of non-blocking ones). "Payload" is the data this rank hands to
// the collective: the tensor's bytes for all_reduce and broadcast, this rank's part for
// all_gather and reduce_scatter, the rows sent to other ranks for all_to_all(_v).
// docs/parallelism.md relates the counts to each layout's analytic volume.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "core/comm_parts.h"
#include "core/tensor.h"

namespace moetron {

enum class ReduceOp : uint8_t { sum, max, bit_xor /* integers only */ };

struct CommStats {
  int64_t calls = 0;
  int64_t bytes = 0;
  double seconds = 0.0;
};

// A collective started by an *_async call. Its buffers belong to it until wait() returns.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  // Lets the collective progress (MPI progresses only inside MPI calls); true once complete.
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  const std::string& name() const { return name_; }  // "dp", "tp", "ep", "edp", "world"

  // x (f32, f64, i32 or i64) reduced elementwise over the group, in place.
  virtual void all_reduce(Tensor& x, ReduceOp op = ReduceOp::sum) = 0;
  // out = every rank's `in` concatenated in rank order (all the same size).
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // `send` holds size() equal blocks, block j for rank j; `recv` receives block i from rank i.
  virtual void all_to_all(const Tensor& send, Tensor& recv) = 0;
  // Rows of equal width: send_rows[j] consecutive rows of `send` go to rank j, in rank order;
  // `recv` receives recv_rows[i] rows from rank i, in rank order (both spans have size()).
  virtual void all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, Tensor& recv,
                            std::span<const int64_t> recv_rows) = 0;
  virtual void broadcast(Tensor& x, int root) = 0;
  virtual void barrier() = 0;

  // Non-blocking, in place on a flat f32 tensor.
  virtual std::unique_ptr<CommRequest> all_reduce_async(Tensor& x) = 0;  // sum
  // x is split into size() consecutive parts of counts[i] elements; after wait(), this rank's
  // part holds the sum over the group of that part (the other parts hold garbage).
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& x,
                                                            std::span<const int64_t> counts) = 0;
  // The inverse: after wait(), every part of x holds what its rank had in it.
  virtual std::unique_ptr<CommRequest> all_gather_async(Tensor& x,
                                                        std::span<const int64_t> counts) = 0;

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 protected:
  explicit Communicator(std::string name) : name_(std::move(name)) {}

  // Counts one call of `bytes` payload into the stats and adds the seconds until it goes out of
  // scope.
  class Timed {
   public:
    Timed(CommStats& stats, int64_t bytes);
    ~Timed();
    Timed(const Timed&) = delete;
    Timed& operator=(const Timed&) = delete;

   private:
    CommStats& stats_;
    std::chrono::steady_clock::time_point start_;
  };

  // The arguments' checks every implementation makes (Error naming the group and the shapes),
  // returning where the parts lie: all_gather's sizes; all_to_all's block; all_to_all_v's sent
  // and received parts; the reduce-scatter's and all-gather's parts of a flat f32 x.
  void check_all_gather(const Tensor& in, const Tensor& out) const;
  int64_t all_to_all_block(const Tensor& send, const Tensor& recv) const;
  std::pair<CommParts, CommParts> all_to_all_v_parts(const Tensor& send,
                                                     std::span<const int64_t> send_rows,
                                                     const Tensor& recv,
                                                     std::span<const int64_t> recv_rows) const;
  CommParts flat_parts(const Tensor& x, std::span<const int64_t> counts, const char* what) const;

  CommStats stats_;

 private:
  std::string name_;
};

}  // namespace moetron
