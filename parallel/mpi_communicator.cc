#include "parallel/mpi_communicator.h"

#include <chrono>
#include <cstring>
#include <functional>
#include <vector>

#include "core/check.h"
#include "core/comm_parts.h"
#include "parallel/mpi_calls.h"

namespace moetron {
namespace {

using Clock = std::chrono::steady_clock;

void* data_of(const Tensor& t) {
  return t.defined() ? t.raw_data() : nullptr;
}

// The requests are started in the *_async calls and waited here; clang's MPI checker cannot
// follow a request into an object, hence the NOLINT blocks around both ends.
// NOLINTBEGIN(clang-analyzer-optin.mpi.MPI-Checker)
class MpiRequest final : public CommRequest {
 public:
  // `after` runs once the operation completed (e.g. moving a reduce-scatter result in place).
  MpiRequest(MPI_Request request, CommStats& stats, std::function<void()> after)
      : request_(request), stats_(stats), after_(std::move(after)) {}
  ~MpiRequest() override {
    // Never leave MPI writing into freed memory.
    if (!done_) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (done_) return;
    const auto start = Clock::now();
    check_mpi(MPI_Wait(&request_, MPI_STATUS_IGNORE), "MPI_Wait");
    stats_.seconds += std::chrono::duration<double>(Clock::now() - start).count();
    finish();
  }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    check_mpi(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    if (flag) finish();
    return done_;
  }

 private:
  void finish() {
    done_ = true;
    if (after_) after_();
  }
  MPI_Request request_;
  CommStats& stats_;
  std::function<void()> after_;
  bool done_ = false;
};
// NOLINTEND(clang-analyzer-optin.mpi.MPI-Checker)

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : Communicator(std::move(name)), comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(int color, int key,
                                                        std::string name) const {
  MPI_Comm out = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(comm_, color, key, &out), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(out, std::move(name));
}

void MpiCommunicator::all_reduce(Tensor& x, ReduceOp op) {
  const Timed t(stats_, static_cast<int64_t>(x.bytes()));
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data_of(x), as_count(x.numel()), mpi_type(x.dtype()),
                          op == ReduceOp::sum   ? MPI_SUM
                          : op == ReduceOp::max ? MPI_MAX
                                                : MPI_BXOR,
                          comm_),
            "MPI_Allreduce");
}

void MpiCommunicator::all_gather(const Tensor& in, Tensor& out) {
  check_all_gather(in, out);
  const Timed t(stats_, static_cast<int64_t>(in.bytes()));
  check_mpi(MPI_Allgather(data_of(in), as_count(in.numel()), mpi_type(in.dtype()), data_of(out),
                          as_count(in.numel()), mpi_type(in.dtype()), comm_),
            "MPI_Allgather");
}

void MpiCommunicator::all_to_all(const Tensor& send, Tensor& recv) {
  const int64_t block = all_to_all_block(send, recv);
  const Timed t(stats_, (size_ - 1) * block * static_cast<int64_t>(dtype_size(send.dtype())));
  check_mpi(MPI_Alltoall(data_of(send), as_count(block), mpi_type(send.dtype()), data_of(recv),
                         as_count(block), mpi_type(send.dtype()), comm_),
            "MPI_Alltoall");
}

void MpiCommunicator::all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows,
                                   Tensor& recv, std::span<const int64_t> recv_rows) {
  const auto [sent, received] = all_to_all_v_parts(send, send_rows, recv, recv_rows);
  const MpiParts s = mpi_parts(sent), r = mpi_parts(received);
  const int64_t sent_elsewhere = sent.total - sent.counts[static_cast<size_t>(rank_)];
  const Timed t(stats_, sent_elsewhere * static_cast<int64_t>(dtype_size(send.dtype())));
  // A zero-row tensor may have no storage: MPI is given a valid dummy address.
  char dummy = 0;
  void* sp = sent.total > 0 ? data_of(send) : &dummy;
  void* rp = received.total > 0 ? data_of(recv) : &dummy;
  check_mpi(MPI_Alltoallv(sp, s.counts.data(), s.displs.data(), mpi_type(send.dtype()), rp,
                          r.counts.data(), r.displs.data(), mpi_type(send.dtype()), comm_),
            "MPI_Alltoallv");
}

void MpiCommunicator::broadcast(Tensor& x, int root) {
  const Timed t(stats_, static_cast<int64_t>(x.bytes()));
  check_mpi(MPI_Bcast(data_of(x), as_count(x.numel()), mpi_type(x.dtype()), root, comm_),
            "MPI_Bcast");
}

void MpiCommunicator::barrier() {
  const Timed t(stats_, 0);
  check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
}

// NOLINTBEGIN(clang-analyzer-optin.mpi.MPI-Checker): MpiRequest waits every request.
std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_async(Tensor& x) {
  ++stats_.calls;
  stats_.bytes += static_cast<int64_t>(x.bytes());
  MPI_Request r = MPI_REQUEST_NULL;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data_of(x), as_count(x.numel()), mpi_type(x.dtype()),
                           MPI_SUM, comm_, &r),
            "MPI_Iallreduce");
  return std::make_unique<MpiRequest>(r, stats_, nullptr);
}

std::unique_ptr<CommRequest> MpiCommunicator::reduce_scatter_async(
    Tensor& x, std::span<const int64_t> counts) {
  const CommParts parts = flat_parts(x, counts, "reduce_scatter");
  auto m = std::make_shared<MpiParts>(mpi_parts(parts));
  ++stats_.calls;
  stats_.bytes += counts[static_cast<size_t>(rank_)] * 4;
  MPI_Request r = MPI_REQUEST_NULL;
  // In place, MPI leaves this rank's reduced part at the start of the buffer: move it home.
  float* base = x.data<float>();
  check_mpi(
      MPI_Ireduce_scatter(MPI_IN_PLACE, base, m->counts.data(), MPI_FLOAT, MPI_SUM, comm_, &r),
      "MPI_Ireduce_scatter");
  const int mine = m->displs[static_cast<size_t>(rank_)];
  const int n = m->counts[static_cast<size_t>(rank_)];
  // The count array must outlive the operation: the request keeps it.
  return std::make_unique<MpiRequest>(r, stats_, [base, mine, n, m] {
    if (mine != 0 && n > 0) std::memmove(base + mine, base, static_cast<size_t>(n) * 4);
  });
}

std::unique_ptr<CommRequest> MpiCommunicator::all_gather_async(Tensor& x,
                                                               std::span<const int64_t> counts) {
  const CommParts parts = flat_parts(x, counts, "all_gather");
  auto m = std::make_shared<MpiParts>(mpi_parts(parts));
  ++stats_.calls;
  stats_.bytes += counts[static_cast<size_t>(rank_)] * 4;
  MPI_Request r = MPI_REQUEST_NULL;
  check_mpi(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x.data<float>(), m->counts.data(),
                            m->displs.data(), MPI_FLOAT, comm_, &r),
            "MPI_Iallgatherv");
  // The count arrays must outlive the operation: the request keeps them.
  return std::make_unique<MpiRequest>(r, stats_, [m] {});
}

// NOLINTEND(clang-analyzer-optin.mpi.MPI-Checker)

}  // namespace moetron
