#include "models/generate.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <tuple>
#include <utility>

namespace moetron {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Row r of logits [n, vocab], limited to the ids below `vocab` (0: all).
std::span<const float> row(const Tensor& logits, int64_t r, int64_t vocab) {
  const int64_t cols = vocab > 0 ? std::min(vocab, logits.cols()) : logits.cols();
  return logits.span<float>().subspan(static_cast<size_t>(r * logits.cols()),
                                      static_cast<size_t>(cols));
}

void check_request(const Decoder& decoder, std::span<const int32_t> prompt, int64_t max_tokens,
                   int64_t depth) {
  if (prompt.empty()) throw Error("generate: the prompt has no tokens");
  if (max_tokens < 1) throw Error(detail::concat("generate: max tokens ", max_tokens, " < 1"));
  const int64_t need = generation_max_len(static_cast<int64_t>(prompt.size()), max_tokens, depth);
  MOETRON_CHECK(decoder.max_len() >= need, "decoder max_len ", decoder.max_len(), " < ", need);
}

// The speculative-sampling rule for one draft d ~ q against the target p: accept with
// probability min(1, p(d) / q(d)); otherwise the token comes from norm(max(0, p - q)).
// Returns the accepted draft or the replacement, and whether the draft was accepted.
std::pair<int32_t, bool> verify_draft(Sampler& sampler, const Distribution& p,
                                      const Distribution& q, int32_t draft) {
  const auto d = static_cast<size_t>(draft);
  if (sampler.uniform() * q[d] < p[d]) return {draft, true};
  Distribution residual(p.size());
  for (size_t i = 0; i < p.size(); ++i) residual[i] = std::max(0.0, p[i] - q[i]);
  // p == q up to rounding leaves nothing: then p itself (rejection had probability ~0).
  if (std::accumulate(residual.begin(), residual.end(), 0.0) <= 0.0) residual = p;
  return {sampler.draw(residual), false};
}

}  // namespace

int64_t GenerateResult::total_drafted() const {
  return std::accumulate(drafted.begin(), drafted.end(), int64_t{0});
}

int64_t GenerateResult::total_accepted() const {
  return std::accumulate(accepted.begin(), accepted.end(), int64_t{0});
}

int64_t generation_max_len(int64_t prompt_tokens, int64_t max_tokens, int64_t mtp_depth) {
  // The last token generated is never fed; a verification feeds t_n and D drafts.
  return prompt_tokens + max_tokens + mtp_depth;
}

GenerateResult generate(Decoder& decoder, std::span<const int32_t> prompt,
                        const GenerateOptions& o) {
  check_request(decoder, prompt, o.max_tokens, 0);
  Sampler sampler(o.sampling);
  GenerateResult r;
  const Clock::time_point t0 = Clock::now();
  decoder.reset();
  auto commit = [&](int32_t token) {
    r.tokens.push_back(token);
    if (o.on_token) o.on_token(token);
  };
  const Tensor logits = decoder.forward(prompt);
  commit(sampler.sample(row(logits, logits.rows() - 1, o.vocab)));
  r.main_forwards = 1;
  r.prefill_seconds = seconds_since(t0);
  while (static_cast<int64_t>(r.tokens.size()) < o.max_tokens) {
    const int32_t last = r.tokens.back();
    commit(sampler.sample(row(decoder.forward({&last, 1}), 0, o.vocab)));
    ++r.main_forwards;
  }
  r.total_seconds = seconds_since(t0);
  return r;
}

GenerateResult generate_speculative(Decoder& decoder, std::span<const int32_t> prompt,
                                    const GenerateOptions& o) {
  const int64_t depth = decoder.mtp_depth();
  if (depth < 1)
    throw Error(
        "generate: --speculative mtp needs MTP modules, and this model has none "
        "(model.num_nextn_predict_layers = 0)");
  check_request(decoder, prompt, o.max_tokens, depth);
  Sampler sampler(o.sampling);
  GenerateResult r;
  r.drafted.assign(static_cast<size_t>(depth), 0);
  r.accepted.assign(static_cast<size_t>(depth), 0);
  const auto prompt_len = static_cast<int64_t>(prompt.size());
  // seq: the committed tokens t_0 .. t_n; the main model has run on t_0 .. t_{n-1}.
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  auto generated = [&] { return static_cast<int64_t>(seq.size()) - prompt_len; };
  auto commit = [&](int32_t token) {
    seq.push_back(token);
    if (o.on_token && generated() <= o.max_tokens) o.on_token(token);
  };
  const Clock::time_point t0 = Clock::now();
  decoder.reset();
  const Tensor prompt_logits = decoder.forward(prompt);
  commit(sampler.sample(row(prompt_logits, prompt_logits.rows() - 1, o.vocab)));
  r.main_forwards = 1;
  r.prefill_seconds = seconds_since(t0);

  std::vector<int32_t> drafts, inputs;
  std::vector<Distribution> draft_dists;
  while (generated() < o.max_tokens) {
    const int64_t n = decoder.length();  // == seq.size() - 1
    const int64_t d = std::min(depth, o.max_tokens - generated() - 1);
    // Draft: module k catches up over its pending positions [mtp_length(k), n), reading
    // t_{j+k}: committed up to t_n, the drafts d_1 .. d_{k-1} beyond. Its last row drafts
    // t_{n+k}.
    const Clock::time_point draft_start = Clock::now();
    drafts.clear();
    draft_dists.clear();
    for (int64_t k = 1; k <= d; ++k) {
      ++r.drafted[static_cast<size_t>(k - 1)];
      inputs.clear();
      for (int64_t j = decoder.mtp_length(k); j < n; ++j)
        inputs.push_back(j + k <= n ? seq[static_cast<size_t>(j + k)]
                                    : drafts[static_cast<size_t>(j + k - n - 1)]);
      const Tensor logits = decoder.mtp_forward(k, inputs);
      const std::span<const float> last = row(logits, logits.rows() - 1, o.vocab);
      if (sampler.greedy()) {
        drafts.push_back(Sampler::argmax(last));
      } else {
        draft_dists.push_back(sampler.distribution(last));
        drafts.push_back(sampler.draw(draft_dists.back()));
      }
    }
    // Positions that read a draft are recomputed next round: module k keeps [0, n - k].
    for (int64_t k = 1; k <= d; ++k)
      decoder.mtp_truncate(k, std::min(decoder.mtp_length(k), std::max<int64_t>(0, n - k + 1)));
    r.draft_seconds += seconds_since(draft_start);

    // Verify: one main forward over [t_n, d_1 .. d_d]; row i predicts t_{n+i+1}.
    inputs.assign(1, seq.back());
    inputs.insert(inputs.end(), drafts.begin(), drafts.end());
    const Tensor logits = decoder.forward(inputs);
    ++r.main_forwards;
    int64_t a = 0;
    int32_t next = -1;
    for (; a < d; ++a) {
      const int32_t draft = drafts[static_cast<size_t>(a)];
      bool ok;
      if (sampler.greedy()) {
        next = Sampler::argmax(row(logits, a, o.vocab));
        ok = next == draft;
      } else {
        std::tie(next, ok) = verify_draft(sampler, sampler.distribution(row(logits, a, o.vocab)),
                                          draft_dists[static_cast<size_t>(a)], draft);
      }
      if (!ok) break;
      ++r.accepted[static_cast<size_t>(a)];
      commit(draft);
    }
    // Every draft accepted: the last row gives one more token for free.
    if (a == d) next = sampler.sample(row(logits, d, o.vocab));
    commit(next);
    decoder.truncate(n + a + 1);  // keep t_n and the accepted drafts
  }
  seq.resize(static_cast<size_t>(prompt_len + o.max_tokens));
  r.tokens.assign(seq.begin() + prompt_len, seq.end());
  r.total_seconds = seconds_since(t0);
  return r;
}

}  // namespace moetron
