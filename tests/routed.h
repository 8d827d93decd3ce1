// Tokens routed on the host by the shared router math (core/kernels/router.h): the inputs the
// backward, dispatch and balancing checks start from.
#pragma once

#include <cstdint>
#include <vector>

#include "core/kernels/host.h"

namespace moetron::test {

struct Routed {
  std::vector<float> scores, gates;  // [tokens, experts], [tokens, k]
  std::vector<int32_t> idx;          // [tokens, k]
  std::vector<int64_t> counts;       // [experts] assignments per expert
};

inline Routed route_on_host(const kernels::RouterShape& r, int64_t tokens,
                            const std::vector<float>& logits, const std::vector<float>& bias) {
  Routed out{std::vector<float>(tokens * r.experts), std::vector<float>(tokens * r.k),
             std::vector<int32_t>(tokens * r.k), std::vector<int64_t>(r.experts, 0)};
  kernels::host::router_forward(r, tokens, logits.data(), bias.data(), out.scores.data(),
                                out.idx.data(), out.gates.data());
  for (const int32_t e : out.idx) ++out.counts[e];
  return out;
}

}  // namespace moetron::test
