#include "core/communicator.h"

#include "core/check.h"

namespace moetron {

Communicator::Timed::Timed(CommStats& stats, int64_t bytes)
    : stats_(stats), start_(std::chrono::steady_clock::now()) {
  ++stats_.calls;
  stats_.bytes += bytes;
}

Communicator::Timed::~Timed() {
  stats_.seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Communicator::check_all_gather(const Tensor& in, const Tensor& out) const {
  MOETRON_CHECK(out.numel() == in.numel() * size() && out.dtype() == in.dtype(), "all_gather over ",
                name(), ": ", shape_str(in.shape()), " x ", size(), " into ",
                shape_str(out.shape()));
}

int64_t Communicator::all_to_all_block(const Tensor& send, const Tensor& recv) const {
  MOETRON_CHECK(
      send.numel() == recv.numel() && send.numel() % size() == 0 && send.dtype() == recv.dtype(),
      "all_to_all over ", name(), ": ", shape_str(send.shape()), " -> ", shape_str(recv.shape()));
  return send.numel() / size();
}

std::pair<CommParts, CommParts> Communicator::all_to_all_v_parts(
    const Tensor& send, std::span<const int64_t> send_rows, const Tensor& recv,
    std::span<const int64_t> recv_rows) const {
  MOETRON_CHECK(static_cast<int>(send_rows.size()) == size() &&
                    static_cast<int>(recv_rows.size()) == size() && send.cols() == recv.cols() &&
                    send.dtype() == recv.dtype(),
                "all_to_all_v over ", name(), ": ", send_rows.size(), " send and ",
                recv_rows.size(), " receive counts for ", size(), " ranks, ",
                shape_str(send.shape()), " -> ", shape_str(recv.shape()));
  const int64_t cols = send.cols();
  CommParts sent = comm_parts(send_rows, cols), received = comm_parts(recv_rows, cols);
  MOETRON_CHECK(sent.total <= send.numel() && received.total <= recv.numel(), "all_to_all_v over ",
                name(), ": ", sent.total, " elements from ", shape_str(send.shape()), ", ",
                received.total, " into ", shape_str(recv.shape()));
  return {std::move(sent), std::move(received)};
}

CommParts Communicator::flat_parts(const Tensor& x, std::span<const int64_t> counts,
                                   const char* what) const {
  MOETRON_CHECK(static_cast<int>(counts.size()) == size() && x.dtype() == DType::f32, what,
                " over ", name(), ": ", counts.size(), " parts of ", dtype_name(x.dtype()), " for ",
                size(), " ranks");
  CommParts parts = comm_parts(counts);
  MOETRON_CHECK(parts.total == x.numel(), what, " over ", name(), ": parts cover ", parts.total,
                " of ", x.numel(), " elements");
  return parts;
}

}  // namespace moetron
