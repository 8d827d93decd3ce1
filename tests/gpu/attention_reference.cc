#include "tests/gpu/attention_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace moetron::gpu {
namespace {

// Row (b, t, head) of a [B, T, n, d] tensor.
struct Rows {
  int64_t seq, n, d;
  int64_t at(int64_t b, int64_t t, int64_t h) const { return ((b * seq + t) * n + h) * d; }
};

double dot(const float* a, const float* b, int64_t d) {
  double s = 0;
  for (int64_t c = 0; c < d; ++c) s += double{a[c]} * double{b[c]};
  return s;
}

// The softmax row of query (b, i, h): p[j] for j <= i; returns {max, lse}.
std::pair<double, double> probabilities(const cuda::AttentionShape& s, const std::vector<float>& q,
                                        const std::vector<float>& k, int64_t b, int64_t i,
                                        int64_t h, std::vector<double>& p) {
  const Rows qr{s.seq, s.heads, s.head_dim}, kr{s.seq, s.kv_heads, s.head_dim};
  const int64_t kv = h / (s.heads / s.kv_heads);
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= i; ++j) {
    p[j] = double{s.scale} * dot(&q[qr.at(b, i, h)], &k[kr.at(b, j, kv)], s.head_dim);
    mx = std::max(mx, p[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j <= i; ++j) sum += std::exp(p[j] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t j = 0; j <= i; ++j) p[j] = std::exp(p[j] - lse);
  return {mx, lse};
}

}  // namespace

AttentionResult attention_reference(const cuda::AttentionShape& s, const std::vector<float>& q,
                                    const std::vector<float>& k, const std::vector<float>& v) {
  const Rows orow{s.seq, s.heads, s.value_dim}, vr{s.seq, s.kv_heads, s.value_dim};
  AttentionResult r;
  r.out.assign(static_cast<size_t>(s.batch * s.seq * s.heads * s.value_dim), 0.0);
  r.lse.resize(static_cast<size_t>(s.batch * s.heads * s.seq));
  r.row_max.resize(r.lse.size());
  std::vector<double> p(static_cast<size_t>(s.seq));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq; ++i) {
        const auto [mx, lse] = probabilities(s, q, k, b, i, h, p);
        const int64_t stat = (b * s.heads + h) * s.seq + i;
        r.lse[stat] = lse;
        r.row_max[stat] = mx;
        const int64_t kv = h / (s.heads / s.kv_heads);
        double* o = &r.out[orow.at(b, i, h)];
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t c = 0; c < s.value_dim; ++c) o[c] += p[j] * v[vr.at(b, j, kv) + c];
      }
  return r;
}

AttentionGrads attention_reference_backward(const cuda::AttentionShape& s,
                                            const std::vector<float>& q,
                                            const std::vector<float>& k,
                                            const std::vector<float>& v,
                                            const std::vector<float>& dout) {
  const Rows qr{s.seq, s.heads, s.head_dim}, kr{s.seq, s.kv_heads, s.head_dim};
  const Rows orow{s.seq, s.heads, s.value_dim}, vr{s.seq, s.kv_heads, s.value_dim};
  AttentionGrads g;
  g.dq.assign(q.size(), 0.0);
  g.dk.assign(k.size(), 0.0);
  g.dv.assign(v.size(), 0.0);
  std::vector<double> p(static_cast<size_t>(s.seq)), dp(p.size());
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq; ++i) {
        probabilities(s, q, k, b, i, h, p);
        const int64_t kv = h / (s.heads / s.kv_heads);
        const float* d = &dout[orow.at(b, i, h)];
        double rowsum = 0;  // sum_j p_j dp_j = dout . out
        for (int64_t j = 0; j <= i; ++j) {
          dp[j] = dot(d, &v[vr.at(b, j, kv)], s.value_dim);
          rowsum += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - rowsum) * double{s.scale};
          for (int64_t c = 0; c < s.head_dim; ++c) {
            g.dq[qr.at(b, i, h) + c] += ds * k[kr.at(b, j, kv) + c];
            g.dk[kr.at(b, j, kv) + c] += ds * q[qr.at(b, i, h) + c];
          }
          for (int64_t c = 0; c < s.value_dim; ++c) g.dv[vr.at(b, j, kv) + c] += p[j] * d[c];
        }
      }
  return g;
}

}  // namespace moetron::gpu
