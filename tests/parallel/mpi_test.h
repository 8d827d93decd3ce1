// GoogleTest under mpirun: every rank runs every test; rank 0 prints the usual report, the
// other ranks only their failures. MpiTest's TearDown makes a failure on any rank a failure of
// the test on rank 0, so the report and the exit status tell the truth.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "parallel/mpi_communicator.h"

namespace moetron::test {

// The world of the running test program (MPI_COMM_WORLD).
MpiCommunicator& world();

// A path every rank can use: rank 0's `mine`, broadcast.
std::string shared_path(const std::string& mine);

class MpiTest : public ::testing::Test {
 protected:
  void TearDown() override;
};

// Skips the test unless the job has exactly `ranks` ranks.
#define MOETRON_REQUIRE_WORLD(ranks)                                          \
  do {                                                                        \
    if (::moetron::test::world().size() != (ranks))                           \
      GTEST_SKIP() << "needs " << (ranks) << " ranks (mpirun -np " << (ranks) \
                   << "), this job has " << ::moetron::test::world().size();  \
  } while (0)

}  // namespace moetron::test
