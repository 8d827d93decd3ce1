#include "models/token_dispatcher.h"

#include <numeric>

#include "core/ops.h"

namespace moetron {

TokenDispatcher::TokenDispatcher(int64_t experts, Communicator* ep_comm, Device device)
    : experts_(experts),
      ep_comm_(ep_comm && ep_comm->size() > 1 ? ep_comm : nullptr),
      device_(device),
      buffer_(DType::f32, device) {
  if (ep_comm_) {  // on the host: the counts size the exchange
    counts_send_ = Tensor::empty({experts}, DType::i64);
    counts_recv_ = Tensor::empty({experts}, DType::i64);
  }
}

void TokenDispatcher::plan(std::span<const int64_t> counts) {
  MOETRON_CHECK(static_cast<int64_t>(counts.size()) == experts_, "dispatch plan: ", counts.size(),
                " counts for ", experts_, " experts");
  sent_rows_ = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<int64_t> offsets;
  if (!ep_comm_) {
    offsets.assign(counts.size() + 1, 0);
    std::partial_sum(counts.begin(), counts.end(), offsets.begin() + 1);
    local_offsets_ = ops::from_host(std::span<const int64_t>(offsets));
    local_rows_ = sent_rows_;
    sent_off_rank_ = received_off_rank_ = 0;
    return;
  }
  const int ranks = ep_comm_->size();
  const int64_t local_experts = experts_ / ranks;
  // counts [ranks, local experts]: block j holds the counts for rank j's experts (host tensors:
  // the counts are exchanged before any row moves).
  std::copy(counts.begin(), counts.end(), counts_send_.data<int64_t>());
  ep_comm_->all_to_all(counts_send_, counts_recv_);
  const int64_t* recv = counts_recv_.data<int64_t>();  // [source rank, local expert]
  send_rows_.assign(static_cast<size_t>(ranks), 0);
  recv_rows_.assign(static_cast<size_t>(ranks), 0);
  offsets.assign(static_cast<size_t>(local_experts + 1), 0);
  for (int j = 0; j < ranks; ++j)
    for (int64_t e = 0; e < local_experts; ++e) {
      send_rows_[static_cast<size_t>(j)] += counts[static_cast<size_t>(j * local_experts + e)];
      recv_rows_[static_cast<size_t>(j)] += recv[j * local_experts + e];
      offsets[static_cast<size_t>(e + 1)] += recv[j * local_experts + e];
    }
  std::partial_sum(offsets.begin(), offsets.end(), offsets.begin());
  local_rows_ = offsets.back();
  sent_off_rank_ = sent_rows_ - send_rows_[static_cast<size_t>(ep_comm_->rank())];
  received_off_rank_ = local_rows_ - recv_rows_[static_cast<size_t>(ep_comm_->rank())];
  // Received rows are [source][expert]; the experts want [expert][source].
  std::vector<int32_t> to_expert(static_cast<size_t>(local_rows_)),
      to_source(static_cast<size_t>(local_rows_));
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  int64_t received = 0;
  for (int j = 0; j < ranks; ++j)
    for (int64_t e = 0; e < local_experts; ++e)
      for (int64_t i = 0; i < recv[j * local_experts + e]; ++i, ++received) {
        const int64_t row = fill[static_cast<size_t>(e)]++;
        to_expert[static_cast<size_t>(row)] = static_cast<int32_t>(received);
        to_source[static_cast<size_t>(received)] = static_cast<int32_t>(row);
      }
  local_offsets_ = ops::from_host(std::span<const int64_t>(offsets));
  to_expert_major_ = ops::from_host(std::span<const int32_t>(to_expert), device_);
  to_source_major_ = ops::from_host(std::span<const int32_t>(to_source), device_);
}

void TokenDispatcher::dispatch(const Tensor& sent, Tensor& local) {
  MOETRON_CHECK(!this->local() && sent.rows() == sent_rows_ && local.rows() == local_rows_,
                "dispatch: ", sent.rows(), " sent and ", local.rows(), " local rows, the plan has ",
                sent_rows_, " and ", local_rows_);
  Tensor received = buffer_.rows(local_rows_, sent.cols());
  ep_comm_->all_to_all_v(sent, send_rows_, received, recv_rows_);
  ops::gather_rows(received, to_expert_major_, local);
}

void TokenDispatcher::combine(const Tensor& local, Tensor& sent) {
  MOETRON_CHECK(!this->local() && sent.rows() == sent_rows_ && local.rows() == local_rows_,
                "combine: ", sent.rows(), " sent and ", local.rows(), " local rows, the plan has ",
                sent_rows_, " and ", local_rows_);
  Tensor back = buffer_.rows(local_rows_, local.cols());
  ops::gather_rows(local, to_source_major_, back);
  ep_comm_->all_to_all_v(back, recv_rows_, sent, send_rows_);
}

}  // namespace moetron
