// The placement of a collective's parts that the MPI and NCCL communicators share
// (core/comm_parts.h); the MPI equivalence suites test it in use.
#include <gtest/gtest.h>

#include <vector>

#include "core/comm_parts.h"

namespace moetron {
namespace {

TEST(CommParts, PartsLieBackToBackInRankOrder) {
  const std::vector<int64_t> rows{3, 0, 5};
  const CommParts p = comm_parts(rows, 2);  // rows of width 2
  EXPECT_EQ(p.counts, (std::vector<int64_t>{6, 0, 10}));
  EXPECT_EQ(p.offsets, (std::vector<int64_t>{0, 6, 6}));
  EXPECT_EQ(p.total, 16);
  EXPECT_FALSE(p.equal());
  const std::vector<int64_t> even{4, 4, 4};
  EXPECT_TRUE(comm_parts(even).equal());
  EXPECT_EQ(comm_parts(even).offsets, (std::vector<int64_t>{0, 4, 8}));
}

}  // namespace
}  // namespace moetron
