// The gated delta rule (Gated DeltaNet, arXiv 2412.06464), per value head with state S [dk, dv]:
//   S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T q_t.
// Training runs the chunked form (arXiv 2406.06484) over chunks of s.chunk positions; with
// G = cumsum(g) inside a chunk and Gam_ij = exp(G_i - G_j) (j <= i):
//   A = strict_lower(diag(beta) K K^T o Gam),  U = (I + A)^-1 (beta o V),
//   W = (I + A)^-1 (beta o e^G o K),  V' = U - W S0,
//   O = (e^G o Q) S0 + (Q K^T o Gam) V',  S1 = e^{G_L} S0 + (e^{G_L - G} o K)^T V'.
// (I + A)^-1 is never formed: U and W come from forward substitution, and the backward's
// products with its transpose from back substitution. The last chunk may be shorter (the same
// as zero padding: a padded position has k = 0 and beta = 0 and changes nothing). The forward
// keeps the state at each chunk's start, from which the backward recomputes each chunk.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/cpu/kernels_linear_attention.h"

namespace moetron::cpu {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_row(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// y [n] (+)= S [m, n]^T x [m].
void mat_t_vec(const float* s, const float* x, float* y, int64_t m, int64_t n) {
  std::fill(y, y + n, 0.0f);
  for (int64_t i = 0; i < m; ++i) axpy_row(x[i], s + i * n, y, n);
}

// One chunk of one value head: the gathered inputs and what both passes derive from them.
struct Chunk {
  int64_t len = 0, dk = 0, dv = 0;
  std::vector<float> q, k, v;            // [len, dk], [len, dk], [len, dv]
  std::vector<float> big_g, eg, el, bt;  // [len]: cumsum(g), exp(G), exp(G_last - G), beta
  std::vector<float> gam, qk, kk, a;     // [len, len] lower: Gam, q.k, k.k, A
  std::vector<float> u, w, vp;           // [len, dv], [len, dk], [len, dv]

  Chunk(int64_t c, int64_t dk_, int64_t dv_)
      : dk(dk_),
        dv(dv_),
        q(static_cast<size_t>(c * dk_)),
        k(q.size()),
        v(static_cast<size_t>(c * dv_)),
        big_g(static_cast<size_t>(c)),
        eg(big_g.size()),
        el(big_g.size()),
        bt(big_g.size()),
        gam(static_cast<size_t>(c * c)),
        qk(gam.size()),
        kk(gam.size()),
        a(gam.size()),
        u(v.size()),
        w(q.size()),
        vp(v.size()) {}

  float* row(std::vector<float>& m, int64_t i, int64_t width) { return m.data() + i * width; }
  float& at(std::vector<float>& m, int64_t i, int64_t j) {
    return m[static_cast<size_t>(i * len + j)];
  }

  // Gathers positions [t0, t0 + len) of batch b, value head h, and derives A, U, W and V'
  // with the chunk's initial state s0 [dk, dv].
  void load(const GatedDeltaShape& s, const float* qs, const float* ks, const float* vs,
            const float* gs, const float* betas, int64_t b, int64_t h, int64_t t0, int64_t n,
            const float* s0) {
    len = n;
    const int64_t hk = h / (s.v_heads / s.k_heads);
    float cum = 0.0f;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t t = b * s.seq + t0 + i;
      std::memcpy(row(q, i, dk), qs + (t * s.k_heads + hk) * dk, sizeof(float) * dk);
      std::memcpy(row(k, i, dk), ks + (t * s.k_heads + hk) * dk, sizeof(float) * dk);
      std::memcpy(row(v, i, dv), vs + (t * s.v_heads + h) * dv, sizeof(float) * dv);
      cum += gs[t * s.v_heads + h];
      big_g[i] = cum;
      eg[i] = std::exp(cum);
      bt[i] = betas[t * s.v_heads + h];
    }
    for (int64_t i = 0; i < len; ++i) {
      el[i] = std::exp(big_g[len - 1] - big_g[i]);
      for (int64_t j = 0; j <= i; ++j) {
        at(gam, i, j) = std::exp(big_g[i] - big_g[j]);
        at(qk, i, j) = dot(row(q, i, dk), row(k, j, dk), dk);
        at(kk, i, j) = j < i ? dot(row(k, i, dk), row(k, j, dk), dk) : 0.0f;
        at(a, i, j) = j < i ? bt[i] * at(kk, i, j) * at(gam, i, j) : 0.0f;
      }
    }
    // (I + A) U = beta o V and (I + A) W = beta o e^G o K, by forward substitution.
    for (int64_t i = 0; i < len; ++i) {
      float* ui = row(u, i, dv);
      float* wi = row(w, i, dk);
      const float* vi = row(v, i, dv);
      const float* ki = row(k, i, dk);
      for (int64_t c = 0; c < dv; ++c) ui[c] = bt[i] * vi[c];
      for (int64_t c = 0; c < dk; ++c) wi[c] = bt[i] * eg[i] * ki[c];
      for (int64_t j = 0; j < i; ++j) {
        axpy_row(-at(a, i, j), row(u, j, dv), ui, dv);
        axpy_row(-at(a, i, j), row(w, j, dk), wi, dk);
      }
      // V'_i = U_i - S0^T W_i.
      float* vpi = row(vp, i, dv);
      mat_t_vec(s0, wi, vpi, dk, dv);
      for (int64_t c = 0; c < dv; ++c) vpi[c] = ui[c] - vpi[c];
    }
  }
};

int64_t state_offset(const GatedDeltaShape& s, int64_t b, int64_t h, int64_t c) {
  return ((b * s.v_heads + h) * (s.chunks() + 1) + c) * s.dk * s.dv;
}

}  // namespace

void gated_delta_forward(const GatedDeltaShape& s, const float* q, const float* k, const float* v,
                         const float* g, const float* beta, float* out, float* states) {
  const int64_t dk = s.dk, dv = s.dv;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.v_heads; ++h) {
      Chunk ch(s.chunk, dk, dv);
      std::vector<float> tmp(static_cast<size_t>(dv));
      std::fill_n(states + state_offset(s, b, h, 0), dk * dv, 0.0f);
      for (int64_t c = 0; c < s.chunks(); ++c) {
        const int64_t t0 = c * s.chunk, len = std::min(s.chunk, s.seq - t0);
        const float* s0 = states + state_offset(s, b, h, c);
        float* s1 = states + state_offset(s, b, h, c + 1);
        ch.load(s, q, k, v, g, beta, b, h, t0, len, s0);
        for (int64_t i = 0; i < len; ++i) {
          // O_i = e^{G_i} S0^T q_i + sum_{j <= i} (q_i . k_j) Gam_ij V'_j.
          float* oi = out + ((b * s.seq + t0 + i) * s.v_heads + h) * dv;
          mat_t_vec(s0, ch.row(ch.q, i, dk), tmp.data(), dk, dv);
          for (int64_t n = 0; n < dv; ++n) oi[n] = ch.eg[i] * tmp[static_cast<size_t>(n)];
          for (int64_t j = 0; j <= i; ++j)
            axpy_row(ch.at(ch.qk, i, j) * ch.at(ch.gam, i, j), ch.row(ch.vp, j, dv), oi, dv);
        }
        // S1 = e^{G_L} S0 + sum_i e^{G_L - G_i} k_i V'_i^T.
        const float decay = ch.eg[len - 1];
        for (int64_t m = 0; m < dk * dv; ++m) s1[m] = decay * s0[m];
        for (int64_t i = 0; i < len; ++i) {
          const float* ki = ch.row(ch.k, i, dk);
          for (int64_t m = 0; m < dk; ++m)
            axpy_row(ch.el[i] * ki[m], ch.row(ch.vp, i, dv), s1 + m * dv, dv);
        }
      }
    }
}

void gated_delta_backward(const GatedDeltaShape& s, const float* dout, const float* q,
                          const float* k, const float* v, const float* g, const float* beta,
                          const float* states, float* dq, float* dk_out, float* dv_out, float* dg,
                          float* dbeta) {
  const int64_t dk = s.dk, dv = s.dv, group = s.v_heads / s.k_heads, cmax = s.chunk;
  // A task per (batch, key head): the value heads sharing a key head add into its dq and dk in
  // a fixed order, so the result does not depend on the thread count.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t hk = 0; hk < s.k_heads; ++hk) {
      for (int64_t t = 0; t < s.seq; ++t) {
        const int64_t r = ((b * s.seq + t) * s.k_heads + hk) * dk;
        std::fill_n(dq + r, dk, 0.0f);
        std::fill_n(dk_out + r, dk, 0.0f);
      }
      Chunk ch(cmax, dk, dv);
      const auto sz = [](int64_t n) { return static_cast<size_t>(n); };
      std::vector<float> ds(sz(dk * dv)), ds0(sz(dk * dv)), dvp(sz(cmax * dv)), dp(sz(cmax * cmax)),
          ddk(sz(cmax * dk)), dwk(sz(cmax * dk)), dvb(sz(cmax * dv)), dkb(sz(cmax * dk)),
          dbig_g(sz(cmax)), tmp(sz(std::max(dk, dv))), dqc(sz(cmax * dk)), dbt(sz(cmax));
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        std::fill(ds.begin(), ds.end(), 0.0f);  // the final state has no gradient
        for (int64_t c = s.chunks() - 1; c >= 0; --c) {
          const int64_t t0 = c * s.chunk, len = std::min(s.chunk, s.seq - t0);
          const float* s0 = states + state_offset(s, b, h, c);
          ch.load(s, q, k, v, g, beta, b, h, t0, len, s0);
          const auto m2 = [len](std::vector<float>& m, int64_t i, int64_t j) -> float& {
            return m[static_cast<size_t>(i * len + j)];
          };
          const auto dout_row = [&](int64_t i) {
            return dout + ((b * s.seq + t0 + i) * s.v_heads + h) * dv;
          };
          std::fill(dbig_g.begin(), dbig_g.end(), 0.0f);
          std::fill(dbt.begin(), dbt.end(), 0.0f);
          std::fill_n(dqc.begin(), len * dk, 0.0f);
          std::fill_n(ddk.begin(), len * dk, 0.0f);
          // dV'_j = sum_{i >= j} (q_i . k_j) Gam_ij dO_i + e^{G_L - G_j} dS1^T k_j, and
          // dP_ij = dO_i . V'_j.
          for (int64_t j = 0; j < len; ++j) {
            float* dvpj = dvp.data() + j * dv;
            mat_t_vec(ds.data(), ch.row(ch.k, j, dk), dvpj, dk, dv);
            for (int64_t n = 0; n < dv; ++n) dvpj[n] *= ch.el[j];
            for (int64_t i = j; i < len; ++i)
              axpy_row(ch.at(ch.qk, i, j) * ch.at(ch.gam, i, j), dout_row(i), dvpj, dv);
          }
          for (int64_t i = 0; i < len; ++i)
            for (int64_t j = 0; j <= i; ++j)
              m2(dp, i, j) = dot(dout_row(i), ch.row(ch.vp, j, dv), dv);
          // Through O = (e^G o Q) S0 + (QK^T o Gam) V'.
          for (int64_t i = 0; i < len; ++i) {
            float* dqi = dqc.data() + i * dk;
            const float* doi = dout_row(i);
            for (int64_t m = 0; m < dk; ++m) dqi[m] = ch.eg[i] * dot(s0 + m * dv, doi, dv);
            dbig_g[i] += dot(dqi, ch.row(ch.q, i, dk), dk);  // = e^{G_i} q_i . S0 dO_i
            for (int64_t j = 0; j <= i; ++j) {
              const float pg = m2(dp, i, j) * ch.at(ch.gam, i, j);
              axpy_row(pg, ch.row(ch.k, j, dk), dqi, dk);
              axpy_row(pg, ch.row(ch.q, i, dk), ddk.data() + j * dk, dk);
              if (j < i) {
                const float sgrad = pg * ch.at(ch.qk, i, j);
                dbig_g[i] += sgrad;
                dbig_g[j] -= sgrad;
              }
            }
          }
          // Through S1 = e^{G_L} S0 + (e^{G_L - G} o K)^T V'.
          for (int64_t j = 0; j < len; ++j) {
            float* dkj = ddk.data() + j * dk;
            const float* vpj = ch.row(ch.vp, j, dv);
            float rj = 0.0f;
            for (int64_t m = 0; m < dk; ++m) {
              const float dkd = dot(ds.data() + m * dv, vpj, dv);  // (dS1 V'_j)_m
              dkj[m] += ch.el[j] * dkd;
              rj += ch.el[j] * ch.row(ch.k, j, dk)[m] * dkd;
            }
            dbig_g[j] -= rj;
            dbig_g[len - 1] += rj;
          }
          dbig_g[len - 1] += ch.eg[len - 1] * dot(ds.data(), s0, dk * dv);
          // dS0 = sum_i e^{G_i} q_i dO_i^T + e^{G_L} dS1 - sum_i W_i dV'_i^T;
          // dW_i = -S0 dV'_i.
          for (int64_t m = 0; m < dk * dv; ++m)
            ds0[static_cast<size_t>(m)] = ch.eg[len - 1] * ds[static_cast<size_t>(m)];
          for (int64_t i = 0; i < len; ++i) {
            const float* qi = ch.row(ch.q, i, dk);
            const float* wi = ch.row(ch.w, i, dk);
            const float* dvpi = dvp.data() + i * dv;
            for (int64_t m = 0; m < dk; ++m) {
              axpy_row(ch.eg[i] * qi[m], dout_row(i), ds0.data() + m * dv, dv);
              axpy_row(-wi[m], dvpi, ds0.data() + m * dv, dv);
              dwk[static_cast<size_t>(i * dk + m)] = -dot(s0 + m * dv, dvpi, dv);
            }
          }
          // (I + A)^T dVb = dU (= dV') and (I + A)^T dKb = dW, by back substitution.
          for (int64_t i = len - 1; i >= 0; --i) {
            float* dvbi = dvb.data() + i * dv;
            float* dkbi = dkb.data() + i * dk;
            std::memcpy(dvbi, dvp.data() + i * dv, sizeof(float) * dv);
            std::memcpy(dkbi, dwk.data() + i * dk, sizeof(float) * dk);
            for (int64_t j = i + 1; j < len; ++j) {
              axpy_row(-ch.at(ch.a, j, i), dvb.data() + j * dv, dvbi, dv);
              axpy_row(-ch.at(ch.a, j, i), dkb.data() + j * dk, dkbi, dk);
            }
          }
          // dA_ij = -(dVb_i . U_j + dKb_i . W_j), through A_ij = beta_i (k_i . k_j) Gam_ij.
          for (int64_t i = 0; i < len; ++i)
            for (int64_t j = 0; j < i; ++j) {
              const float da = -(dot(dvb.data() + i * dv, ch.row(ch.u, j, dv), dv) +
                                 dot(dkb.data() + i * dk, ch.row(ch.w, j, dk), dk));
              dbt[i] += da * ch.at(ch.kk, i, j) * ch.at(ch.gam, i, j);
              const float mij = da * ch.bt[i] * ch.at(ch.gam, i, j);
              axpy_row(mij, ch.row(ch.k, j, dk), ddk.data() + i * dk, dk);
              axpy_row(mij, ch.row(ch.k, i, dk), ddk.data() + j * dk, dk);
              const float sgrad = da * ch.at(ch.a, i, j);
              dbig_g[i] += sgrad;
              dbig_g[j] -= sgrad;
            }
          // Through beta o V and beta o e^G o K; then G = cumsum(g) within the chunk.
          for (int64_t i = 0; i < len; ++i) {
            const int64_t t = b * s.seq + t0 + i;
            const float* dvbi = dvb.data() + i * dv;
            const float* dkbi = dkb.data() + i * dk;
            float* dvo = dv_out + (t * s.v_heads + h) * dv;
            for (int64_t n = 0; n < dv; ++n) dvo[n] = ch.bt[i] * dvbi[n];
            dbt[i] += dot(dvbi, ch.row(ch.v, i, dv), dv);
            const float kdot = ch.eg[i] * dot(dkbi, ch.row(ch.k, i, dk), dk);
            dbt[i] += kdot;
            dbig_g[i] += ch.bt[i] * kdot;
            axpy_row(ch.bt[i] * ch.eg[i], dkbi, ddk.data() + i * dk, dk);
          }
          float acc = 0.0f;
          for (int64_t i = len - 1; i >= 0; --i) {
            const int64_t t = b * s.seq + t0 + i;
            acc += dbig_g[i];
            dg[t * s.v_heads + h] = acc;
            dbeta[t * s.v_heads + h] = dbt[i];
            const int64_t r = (t * s.k_heads + hk) * dk;
            axpy_row(1.0f, dqc.data() + i * dk, dq + r, dk);
            axpy_row(1.0f, ddk.data() + i * dk, dk_out + r, dk);
          }
          ds.swap(ds0);
        }
      }
    }
}

void gated_delta_step(const GatedDeltaShape& s, const float* q, const float* k, const float* v,
                      const float* g, const float* beta, float* state, float* out) {
  const int64_t dk = s.dk, dv = s.dv, group = s.v_heads / s.k_heads;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < s.v_heads; ++h) {
    float* st = state + h * dk * dv;
    std::vector<float> u(static_cast<size_t>(dv));
    for (int64_t t = 0; t < s.seq; ++t) {
      const float* qt = q + (t * s.k_heads + h / group) * dk;
      const float* kt = k + (t * s.k_heads + h / group) * dk;
      const float* vt = v + (t * s.v_heads + h) * dv;
      const float alpha = std::exp(g[t * s.v_heads + h]), bt = beta[t * s.v_heads + h];
      for (int64_t m = 0; m < dk * dv; ++m) st[m] *= alpha;
      // u = beta (v - S^T k);  S += k u^T;  o = S^T q.
      mat_t_vec(st, kt, u.data(), dk, dv);
      for (int64_t n = 0; n < dv; ++n)
        u[static_cast<size_t>(n)] = bt * (vt[n] - u[static_cast<size_t>(n)]);
      for (int64_t m = 0; m < dk; ++m) axpy_row(kt[m], u.data(), st + m * dv, dv);
      mat_t_vec(st, qt, out + (t * s.v_heads + h) * dv, dk, dv);
    }
  }
}

}  // namespace moetron::cpu
