#include "parallel/layout.h"

#include <sstream>

#include "core/check.h"

namespace moetron {
namespace {

using detail::concat;

std::string divisors_of(int n) {
  std::string out;
  for (int d = 1; d <= n; ++d)
    if (n % d == 0) out += (out.empty() ? "" : ", ") + std::to_string(d);
  return out;
}

}  // namespace

std::string Layout::describe() const {
  std::ostringstream os;
  os << "dp " << dp << " x tp " << tp << " (ep " << ep << ", expert-dp " << edp() << "), ZeRO-1 "
     << (zero1 ? "on" : "off");
  return os.str();
}

Layout resolve_layout(const config::RunConfig& cfg, int world) {
  Layout l;
  l.world = world;
  const config::ParallelConfig& p = cfg.parallel();
  l.zero1 = p.zero1();
  l.overlap_grad_reduce = p.overlap_grad_reduce();
  l.tp = p.tp();
  l.ep = p.ep();
  if (p.dp() == 0) {  // whatever mpirun started, over tp
    if (world % l.tp != 0)
      throw CollectiveError(concat("parallel.tp = ", l.tp, " does not divide the ", world,
                                   " ranks that were started (valid tp for ", world,
                                   " ranks: ", divisors_of(world), ")"));
    l.dp = world / l.tp;
  } else {
    l.dp = p.dp();
  }
  if (l.dp * l.tp != world)
    throw CollectiveError(concat("parallel.dp x parallel.tp = ", l.dp, " x ", l.tp, " = ",
                                 l.dp * l.tp, " ranks, but ", world, " ranks were started: start ",
                                 l.dp * l.tp, " ranks, or choose dp x tp = ", world, " (tp one of ",
                                 divisors_of(world), "; dp 0 takes world / tp)"));
  if (world % l.ep != 0)
    throw CollectiveError(concat("parallel.ep = ", l.ep, " must divide the world of ", world,
                                 " ranks (valid ep: divisors of ", world,
                                 " that divide model.moe.n_routed_experts)"));
  return l;
}

std::string layout_notes(const config::RunConfig& cfg, const Layout& l) {
  const int64_t vocab = cfg.model().vocab_size();
  const int64_t padded = (vocab + l.tp - 1) / l.tp * l.tp;
  if (padded == vocab) return "";
  return concat("model.vocab_size ", vocab, " is padded to ", padded, " (a multiple of tp = ", l.tp,
                ") for the vocabulary-parallel embedding and head; the padding rows are "
                "zero, never trained, and not saved");
}

}  // namespace moetron
