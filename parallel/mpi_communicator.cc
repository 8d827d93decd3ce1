#include "parallel/mpi_communicator.h"

#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/comm_parts.h"

namespace moetron {
namespace {

using Clock = std::chrono::steady_clock;

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::u8:
      return MPI_UINT8_T;
    default:
      MOETRON_CHECK(false, "no MPI type for ", dtype_name(dtype));
  }
  return MPI_DATATYPE_NULL;
}

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw Error(detail::concat(call, " failed: ", std::string(text, static_cast<size_t>(len))));
}

void* data_of(const Tensor& t) {
  return t.defined() ? t.raw_data() : nullptr;
}

// MPI counts are int: every message here must fit.
int as_count(int64_t n) {
  MOETRON_CHECK(n >= 0 && n <= std::numeric_limits<int>::max(), "MPI count ", n,
                " does not fit an int (one call takes at most 2^31 - 1 elements)");
  return static_cast<int>(n);
}

// Times a blocking call into the stats.
class Timed {
 public:
  Timed(CommStats& stats, int64_t bytes) : stats_(stats), start_(Clock::now()) {
    ++stats_.calls;
    stats_.bytes += bytes;
  }
  ~Timed() { stats_.seconds += std::chrono::duration<double>(Clock::now() - start_).count(); }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  CommStats& stats_;
  Clock::time_point start_;
};

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

// MPI's int counts and displacements of `parts`; the last displacement plus its count must fit.
struct MpiParts {
  std::vector<int> counts, displs;
};
MpiParts mpi_parts(const CommParts& parts) {
  MpiParts m;
  for (size_t i = 0; i < parts.counts.size(); ++i) {
    m.counts.push_back(as_count(parts.counts[i]));
    m.displs.push_back(as_count(parts.offsets[i]));
  }
  as_count(parts.total);
  return m;
}

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
  MOETRON_CHECK(out.numel() == in.numel() * size_ && out.dtype() == in.dtype(),
                "all_gather: ", shape_str(in.shape()), " x ", size_, " into ",
                shape_str(out.shape()));
  const Timed t(stats_, static_cast<int64_t>(in.bytes()));
  check_mpi(MPI_Allgather(data_of(in), as_count(in.numel()), mpi_type(in.dtype()), data_of(out),
                          as_count(in.numel()), mpi_type(in.dtype()), comm_),
            "MPI_Allgather");
}

void MpiCommunicator::all_to_all(const Tensor& send, Tensor& recv) {
  MOETRON_CHECK(
      send.numel() == recv.numel() && send.numel() % size_ == 0 && send.dtype() == recv.dtype(),
      "all_to_all: ", shape_str(send.shape()), " -> ", shape_str(recv.shape()));
  const int64_t block = send.numel() / size_;
  const Timed t(stats_, (size_ - 1) * block * static_cast<int64_t>(dtype_size(send.dtype())));
  check_mpi(MPI_Alltoall(data_of(send), as_count(block), mpi_type(send.dtype()), data_of(recv),
                         as_count(block), mpi_type(send.dtype()), comm_),
            "MPI_Alltoall");
}

void MpiCommunicator::all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows,
                                   Tensor& recv, std::span<const int64_t> recv_rows) {
  MOETRON_CHECK(static_cast<int>(send_rows.size()) == size_ &&
                    static_cast<int>(recv_rows.size()) == size_ && send.cols() == recv.cols() &&
                    send.dtype() == recv.dtype(),
                "all_to_all_v over ", name(), ": ", send_rows.size(), " send and ",
                recv_rows.size(), " receive counts for ", size_, " ranks, ",
                shape_str(send.shape()), " -> ", shape_str(recv.shape()));
  const int64_t cols = send.cols();
  const CommParts sent = comm_parts(send_rows, cols), received = comm_parts(recv_rows, cols);
  MOETRON_CHECK(sent.total <= send.numel() && received.total <= recv.numel(),
                "all_to_all_v: ", sent.total, " elements from ", shape_str(send.shape()), ", ",
                received.total, " into ", shape_str(recv.shape()));
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
  MOETRON_CHECK(static_cast<int>(counts.size()) == size_ && x.dtype() == DType::f32,
                "reduce_scatter: ", counts.size(), " parts for ", size_, " ranks");
  const CommParts parts = comm_parts(counts);
  MOETRON_CHECK(parts.total == x.numel(), "reduce_scatter over ", name(), ": parts cover ",
                parts.total, " of ", x.numel(), " elements");
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
  MOETRON_CHECK(static_cast<int>(counts.size()) == size_ && x.dtype() == DType::f32,
                "all_gather: ", counts.size(), " parts for ", size_, " ranks");
  const CommParts parts = comm_parts(counts);
  MOETRON_CHECK(parts.total == x.numel(), "all_gather over ", name(), ": parts cover ", parts.total,
                " of ", x.numel(), " elements");
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
