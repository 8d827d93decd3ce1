// main() of the MPI test programs (see mpi_test.h).
#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/threads.h"
#include "parallel/mpi_runtime.h"
#include "tests/parallel/mpi_test.h"

namespace moetron::test {
namespace {

MpiCommunicator* g_world = nullptr;

// Prints failed assertions only, each with the rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "rank %d: %s:%d: failure\n%s\n", rank_,
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

MpiCommunicator& world() {
  return *g_world;
}

std::string shared_path(const std::string& mine) {
  Tensor n = Tensor::zeros({1}, DType::i64);
  n.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
  world().broadcast(n, 0);
  Tensor text = Tensor::zeros({std::max<int64_t>(n.data<int64_t>()[0], 1)}, DType::u8);
  if (world().rank() == 0) std::copy(mine.begin(), mine.end(), text.data<uint8_t>());
  world().broadcast(text, 0);
  return {reinterpret_cast<const char*>(text.data<uint8_t>()),
          static_cast<size_t>(n.data<int64_t>()[0])};
}

void MpiTest::TearDown() {
  Tensor failed = Tensor::empty({1}, DType::i32);
  failed.data<int32_t>()[0] = HasFailure() ? 1 : 0;
  world().all_reduce(failed, ReduceOp::max);
  if (failed.data<int32_t>()[0] != 0 && !HasFailure())
    ADD_FAILURE() << "another rank failed this test (its failures are printed with its rank)";
}

}  // namespace moetron::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const moetron::MpiRuntime mpi;
  if (!mpi.active()) {
    std::fprintf(stderr, "run this test program under mpirun (see tests/CMakeLists.txt)\n");
    return 2;
  }
  moetron::MpiCommunicator world(MPI_COMM_WORLD, "world");
  moetron::test::g_world = &world;
  moetron::set_compute_threads(1);  // ranks share the cores
  if (mpi.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new moetron::test::FailurePrinter(mpi.rank()));
  }
  const int status = RUN_ALL_TESTS();
  moetron::test::g_world = nullptr;
  return status;
}
