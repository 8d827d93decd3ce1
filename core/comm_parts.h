// Where the parts of a collective lie in its buffer (core/communicator.h): part i, of counts[i]
// elements, starts at offsets[i]; the parts lie back to back in rank order, `total` elements in
// all. Rows of a width count as rows * width elements. The MPI communicator places its messages
// by it and the NCCL one (core/cuda/nccl.h) does too, so the MPI equivalence suites test the
// placement both use.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/check.h"

namespace moetron {

struct CommParts {
  std::vector<int64_t> counts, offsets;
  int64_t total = 0;
  // Every part the same size: the case NCCL's reduce-scatter and all-gather take as they are.
  bool equal() const {
    for (const int64_t c : counts)
      if (c != counts.front()) return false;
    return true;
  }
};

// A collective's parts must be one per rank of the group.
inline void check_part_count(const CommParts& p, int size, const char* what) {
  MOETRON_CHECK(static_cast<int>(p.counts.size()) == size, what, ": ", p.counts.size(),
                " parts for ", size, " ranks");
}

inline CommParts comm_parts(std::span<const int64_t> counts, int64_t width = 1) {
  CommParts p;
  p.counts.reserve(counts.size());
  p.offsets.reserve(counts.size());
  for (const int64_t c : counts) {
    MOETRON_CHECK(c >= 0, "a collective's part of ", c, " elements");
    p.offsets.push_back(p.total);
    p.counts.push_back(c * width);
    p.total += c * width;
  }
  return p;
}

}  // namespace moetron
