// The seam between the tokens a rank routes and the experts that compute them (Megatron's
// token_dispatcher.py). A rank dispatches rows grouped by global expert; each rank then gets
// the rows for its own experts grouped by local expert, computes them, and sends the results
// back in the order the rows left. Locally (ep = 1) rows stay where they are; with expert
// parallelism they travel by all_to_all_v over the expert-parallel group: counts first, then
// the rows, then a permutation from source-major to expert-major order.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/communicator.h"
#include "core/tensor.h"
#include "models/row_buffer.h"

namespace moetron {

class TokenDispatcher {
 public:
  // experts: the global count; ep_comm: null for ep = 1; device: where the rows and the plan's
  // permutations live (the counts and the offsets stay on the host: they size the exchange, and
  // the experts' GEMMs read their row ranges there).
  TokenDispatcher(int64_t experts, Communicator* ep_comm, Device device = {});

  // Exchanges how many rows this rank sends to each global expert (counts [experts]); after
  // it, local_rows() and local_offsets() describe what this rank's experts receive.
  void plan(std::span<const int64_t> counts);
  bool local() const { return ep_comm_ == nullptr; }  // rows never leave the rank
  int64_t sent_rows() const { return sent_rows_; }
  // Of those, the rows that go to another rank's experts.
  int64_t sent_off_rank() const { return sent_off_rank_; }
  // The rows this rank's experts receive from other ranks.
  int64_t received_off_rank() const { return received_off_rank_; }
  int64_t local_rows() const { return local_rows_; }
  // [local experts + 1] i64 on the host: rows of local expert e are [offsets[e], offsets[e + 1]).
  const Tensor& local_offsets() const { return local_offsets_; }

  // Sent rows (grouped by global expert) -> this rank's experts' rows (grouped by local expert).
  // Only when !local(): a local dispatcher's sent rows already are its experts' rows.
  void dispatch(const Tensor& sent, Tensor& local);
  // The inverse: this rank's experts' rows -> the sent rows, back where they came from.
  void combine(const Tensor& local, Tensor& sent);

 private:
  int64_t experts_;
  Communicator* ep_comm_;
  Device device_;
  int64_t sent_rows_ = 0, sent_off_rank_ = 0, received_off_rank_ = 0, local_rows_ = 0;
  Tensor local_offsets_;
  std::vector<int64_t> send_rows_, recv_rows_;  // per rank of the group
  Tensor to_expert_major_;                      // i32: local row <- received row
  Tensor to_source_major_;                      // i32: received row <- local row
  Tensor counts_send_, counts_recv_;
  RowBuffer buffer_;  // rows in transit, in source-major order
};

}  // namespace moetron
