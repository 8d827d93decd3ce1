// The gated delta rule (core/ops_linear_attention.h) for the device backend, a task per thread:
// the forward a (batch, value head) per thread over its chunks in order, the backward a (batch,
// key head) per thread (the value heads sharing a key head add into its dq and dk in order, as on
// the CPU, so nothing needs atomics), the decoding step a value head per thread. The chunked
// form and its gradient are the CPU backend's (core/cpu/gated_delta.cc, which says the
// equations), written again here as plain loops over a slab of scratch floats per task: the CPU
// backend stays the independent oracle the op harness compares with. Sums run in index order, so
// they agree with the CPU's vectorised ones to rounding. Correct and deterministic; one thread
// per head is not fast on a GPU (a chunk-parallel kernel is the next step).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

// q, k [batch, seq, k_heads, dk]; v, out [batch, seq, v_heads, dv]; g, beta [batch, seq,
// v_heads]; states [batch, v_heads, chunks + 1, dk, dv].
struct GatedDeltaDims {
  int64_t batch, seq, k_heads, v_heads, dk, dv, chunk;
  MT_HD int64_t chunks() const { return (seq + chunk - 1) / chunk; }
};

MT_HD float gd_dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s = fmaf(a[i], b[i], s);
  return s;
}
MT_HD void gd_axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fmaf(alpha, x[i], y[i]);
}
// y [n] = S [m, n]^T x [m].
MT_HD void gd_mat_t_vec(const float* s, const float* x, float* y, int64_t m, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = 0.0f;
  for (int64_t i = 0; i < m; ++i) gd_axpy(x[i], s + i * n, y, n);
}

MT_HD int64_t gd_state_offset(const GatedDeltaDims& s, int64_t b, int64_t h, int64_t c) {
  return ((b * s.v_heads + h) * (s.chunks() + 1) + c) * s.dk * s.dv;
}

// One chunk of one value head in a slab: the gathered inputs and what both passes derive.
struct GdChunk {
  int64_t len, dk, dv;
  float *q, *k, *v;             // [len, dk], [len, dk], [len, dv]
  float *big_g, *eg, *el, *bt;  // [len]: cumsum(g), exp(G), exp(G_last - G), beta
  float *gam, *qk, *kk, *a;     // [len, len] lower: Gam, q.k, k.k, A
  float *u, *w, *vp;            // [len, dv], [len, dk], [len, dv]

  MT_HD float& at(float* m, int64_t i, int64_t j) const { return m[i * len + j]; }
};

MT_HD int64_t gd_chunk_floats(const GatedDeltaDims& s) {
  const int64_t c = s.chunk;
  return 3 * c * s.dk + 3 * c * s.dv + 4 * c + 4 * c * c;
}
MT_HD GdChunk gd_chunk_in(const GatedDeltaDims& s, float* slab) {
  const int64_t c = s.chunk;
  GdChunk ch{};
  ch.dk = s.dk;
  ch.dv = s.dv;
  float* p = slab;
  const auto take = [&p](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  ch.q = take(c * s.dk);
  ch.k = take(c * s.dk);
  ch.v = take(c * s.dv);
  ch.big_g = take(c);
  ch.eg = take(c);
  ch.el = take(c);
  ch.bt = take(c);
  ch.gam = take(c * c);
  ch.qk = take(c * c);
  ch.kk = take(c * c);
  ch.a = take(c * c);
  ch.u = take(c * s.dv);
  ch.w = take(c * s.dk);
  ch.vp = take(c * s.dv);
  return ch;
}

// Gathers positions [t0, t0 + n) of batch b, value head h, and derives A, U, W and V' with the
// chunk's initial state s0 [dk, dv].
MT_HD void gd_chunk_load(GdChunk& ch, const GatedDeltaDims& s, const float* qs, const float* ks,
                         const float* vs, const float* gs, const float* betas, int64_t b, int64_t h,
                         int64_t t0, int64_t n, const float* s0) {
  const int64_t dk = ch.dk, dv = ch.dv, hk = h / (s.v_heads / s.k_heads);
  ch.len = n;
  float cum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = b * s.seq + t0 + i;
    for (int64_t m = 0; m < dk; ++m) {
      ch.q[i * dk + m] = qs[(t * s.k_heads + hk) * dk + m];
      ch.k[i * dk + m] = ks[(t * s.k_heads + hk) * dk + m];
    }
    for (int64_t m = 0; m < dv; ++m) ch.v[i * dv + m] = vs[(t * s.v_heads + h) * dv + m];
    cum += gs[t * s.v_heads + h];
    ch.big_g[i] = cum;
    ch.eg[i] = expf(cum);
    ch.bt[i] = betas[t * s.v_heads + h];
  }
  for (int64_t i = 0; i < n; ++i) {
    ch.el[i] = expf(ch.big_g[n - 1] - ch.big_g[i]);
    for (int64_t j = 0; j <= i; ++j) {
      ch.at(ch.gam, i, j) = expf(ch.big_g[i] - ch.big_g[j]);
      ch.at(ch.qk, i, j) = gd_dot(ch.q + i * dk, ch.k + j * dk, dk);
      ch.at(ch.kk, i, j) = j < i ? gd_dot(ch.k + i * dk, ch.k + j * dk, dk) : 0.0f;
      ch.at(ch.a, i, j) = j < i ? ch.bt[i] * ch.at(ch.kk, i, j) * ch.at(ch.gam, i, j) : 0.0f;
    }
  }
  // (I + A) U = beta o V and (I + A) W = beta o e^G o K, by forward substitution; V' = U - W S0.
  for (int64_t i = 0; i < n; ++i) {
    float* ui = ch.u + i * dv;
    float* wi = ch.w + i * dk;
    for (int64_t c = 0; c < dv; ++c) ui[c] = ch.bt[i] * ch.v[i * dv + c];
    for (int64_t c = 0; c < dk; ++c) wi[c] = ch.bt[i] * ch.eg[i] * ch.k[i * dk + c];
    for (int64_t j = 0; j < i; ++j) {
      gd_axpy(-ch.at(ch.a, i, j), ch.u + j * dv, ui, dv);
      gd_axpy(-ch.at(ch.a, i, j), ch.w + j * dk, wi, dk);
    }
    float* vpi = ch.vp + i * dv;
    gd_mat_t_vec(s0, wi, vpi, dk, dv);
    for (int64_t c = 0; c < dv; ++c) vpi[c] = ui[c] - vpi[c];
  }
}

MT_HD int64_t gated_delta_forward_floats(const GatedDeltaDims& s) {
  return gd_chunk_floats(s) + s.dv;
}

// Task = b * v_heads + h: its outputs and its chunks' initial states (the last the final state).
MT_HD void gated_delta_forward_task(const GatedDeltaDims& s, const float* q, const float* k,
                                    const float* v, const float* g, const float* beta, float* out,
                                    float* states, float* slab, int64_t task) {
  const int64_t b = task / s.v_heads, h = task % s.v_heads, dk = s.dk, dv = s.dv;
  GdChunk ch = gd_chunk_in(s, slab);
  float* tmp = slab + gd_chunk_floats(s);
  float* first = states + gd_state_offset(s, b, h, 0);
  for (int64_t m = 0; m < dk * dv; ++m) first[m] = 0.0f;
  for (int64_t c = 0; c < s.chunks(); ++c) {
    const int64_t t0 = c * s.chunk, len = s.seq - t0 < s.chunk ? s.seq - t0 : s.chunk;
    const float* s0 = states + gd_state_offset(s, b, h, c);
    float* s1 = states + gd_state_offset(s, b, h, c + 1);
    gd_chunk_load(ch, s, q, k, v, g, beta, b, h, t0, len, s0);
    for (int64_t i = 0; i < len; ++i) {
      // O_i = e^{G_i} S0^T q_i + sum_{j <= i} (q_i . k_j) Gam_ij V'_j.
      float* oi = out + ((b * s.seq + t0 + i) * s.v_heads + h) * dv;
      gd_mat_t_vec(s0, ch.q + i * dk, tmp, dk, dv);
      for (int64_t n = 0; n < dv; ++n) oi[n] = ch.eg[i] * tmp[n];
      for (int64_t j = 0; j <= i; ++j)
        gd_axpy(ch.at(ch.qk, i, j) * ch.at(ch.gam, i, j), ch.vp + j * dv, oi, dv);
    }
    // S1 = e^{G_L} S0 + sum_i e^{G_L - G_i} k_i V'_i^T.
    const float decay = ch.eg[len - 1];
    for (int64_t m = 0; m < dk * dv; ++m) s1[m] = decay * s0[m];
    for (int64_t i = 0; i < len; ++i)
      for (int64_t m = 0; m < dk; ++m)
        gd_axpy(ch.el[i] * ch.k[i * dk + m], ch.vp + i * dv, s1 + m * dv, dv);
  }
}

MT_HD int64_t gated_delta_backward_floats(const GatedDeltaDims& s) {
  const int64_t c = s.chunk, dk = s.dk, dv = s.dv;
  return gd_chunk_floats(s) + 2 * dk * dv + 2 * c * dv + c * c + 4 * c * dk + 2 * c;
}

// Task = b * k_heads + hk: dq and dk of the key head (summed over its value heads in order), and
// dv, dg, dbeta of each of those value heads.
MT_HD void gated_delta_backward_task(const GatedDeltaDims& s, const float* dout, const float* q,
                                     const float* k, const float* v, const float* g,
                                     const float* beta, const float* states, float* dq,
                                     float* dk_out, float* dv_out, float* dg, float* dbeta,
                                     float* slab, int64_t task) {
  const int64_t b = task / s.k_heads, hk = task % s.k_heads, dk = s.dk, dv = s.dv;
  const int64_t group = s.v_heads / s.k_heads, cmax = s.chunk;
  for (int64_t t = 0; t < s.seq; ++t)
    for (int64_t m = 0; m < dk; ++m) {
      dq[((b * s.seq + t) * s.k_heads + hk) * dk + m] = 0.0f;
      dk_out[((b * s.seq + t) * s.k_heads + hk) * dk + m] = 0.0f;
    }
  GdChunk ch = gd_chunk_in(s, slab);
  float* p = slab + gd_chunk_floats(s);
  const auto take = [&p](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  float* ds = take(dk * dv);
  float* ds0 = take(dk * dv);
  float* dvp = take(cmax * dv);
  float* dvb = take(cmax * dv);
  float* dp = take(cmax * cmax);
  float* ddk = take(cmax * dk);
  float* dwk = take(cmax * dk);
  float* dkb = take(cmax * dk);
  float* dqc = take(cmax * dk);
  float* dbig_g = take(cmax);
  float* dbt = take(cmax);
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    for (int64_t m = 0; m < dk * dv; ++m) ds[m] = 0.0f;  // the final state has no gradient
    for (int64_t c = s.chunks() - 1; c >= 0; --c) {
      const int64_t t0 = c * s.chunk, len = s.seq - t0 < s.chunk ? s.seq - t0 : s.chunk;
      const float* s0 = states + gd_state_offset(s, b, h, c);
      gd_chunk_load(ch, s, q, k, v, g, beta, b, h, t0, len, s0);
      const auto dout_row = [&](int64_t i) {
        return dout + ((b * s.seq + t0 + i) * s.v_heads + h) * dv;
      };
      for (int64_t i = 0; i < len; ++i) {
        dbig_g[i] = 0.0f;
        dbt[i] = 0.0f;
        for (int64_t m = 0; m < dk; ++m) dqc[i * dk + m] = ddk[i * dk + m] = 0.0f;
      }
      // dV'_j = sum_{i >= j} (q_i . k_j) Gam_ij dO_i + e^{G_L - G_j} dS1^T k_j;
      // dP_ij = dO_i . V'_j.
      for (int64_t j = 0; j < len; ++j) {
        float* dvpj = dvp + j * dv;
        gd_mat_t_vec(ds, ch.k + j * dk, dvpj, dk, dv);
        for (int64_t n = 0; n < dv; ++n) dvpj[n] *= ch.el[j];
        for (int64_t i = j; i < len; ++i)
          gd_axpy(ch.at(ch.qk, i, j) * ch.at(ch.gam, i, j), dout_row(i), dvpj, dv);
      }
      for (int64_t i = 0; i < len; ++i)
        for (int64_t j = 0; j <= i; ++j) dp[i * len + j] = gd_dot(dout_row(i), ch.vp + j * dv, dv);
      // Through O = (e^G o Q) S0 + (QK^T o Gam) V'.
      for (int64_t i = 0; i < len; ++i) {
        float* dqi = dqc + i * dk;
        const float* doi = dout_row(i);
        for (int64_t m = 0; m < dk; ++m) dqi[m] = ch.eg[i] * gd_dot(s0 + m * dv, doi, dv);
        dbig_g[i] += gd_dot(dqi, ch.q + i * dk, dk);
        for (int64_t j = 0; j <= i; ++j) {
          const float pg = dp[i * len + j] * ch.at(ch.gam, i, j);
          gd_axpy(pg, ch.k + j * dk, dqi, dk);
          gd_axpy(pg, ch.q + i * dk, ddk + j * dk, dk);
          if (j < i) {
            const float sgrad = pg * ch.at(ch.qk, i, j);
            dbig_g[i] += sgrad;
            dbig_g[j] -= sgrad;
          }
        }
      }
      // Through S1 = e^{G_L} S0 + (e^{G_L - G} o K)^T V'.
      for (int64_t j = 0; j < len; ++j) {
        float rj = 0.0f;
        for (int64_t m = 0; m < dk; ++m) {
          const float dkd = gd_dot(ds + m * dv, ch.vp + j * dv, dv);  // (dS1 V'_j)_m
          ddk[j * dk + m] += ch.el[j] * dkd;
          rj += ch.el[j] * ch.k[j * dk + m] * dkd;
        }
        dbig_g[j] -= rj;
        dbig_g[len - 1] += rj;
      }
      dbig_g[len - 1] += ch.eg[len - 1] * gd_dot(ds, s0, dk * dv);
      // dS0 = sum_i e^{G_i} q_i dO_i^T + e^{G_L} dS1 - sum_i W_i dV'_i^T; dW_i = -S0 dV'_i.
      for (int64_t m = 0; m < dk * dv; ++m) ds0[m] = ch.eg[len - 1] * ds[m];
      for (int64_t i = 0; i < len; ++i)
        for (int64_t m = 0; m < dk; ++m) {
          gd_axpy(ch.eg[i] * ch.q[i * dk + m], dout_row(i), ds0 + m * dv, dv);
          gd_axpy(-ch.w[i * dk + m], dvp + i * dv, ds0 + m * dv, dv);
          dwk[i * dk + m] = -gd_dot(s0 + m * dv, dvp + i * dv, dv);
        }
      // (I + A)^T dVb = dU (= dV') and (I + A)^T dKb = dW, by back substitution.
      for (int64_t i = len - 1; i >= 0; --i) {
        for (int64_t n = 0; n < dv; ++n) dvb[i * dv + n] = dvp[i * dv + n];
        for (int64_t m = 0; m < dk; ++m) dkb[i * dk + m] = dwk[i * dk + m];
        for (int64_t j = i + 1; j < len; ++j) {
          gd_axpy(-ch.at(ch.a, j, i), dvb + j * dv, dvb + i * dv, dv);
          gd_axpy(-ch.at(ch.a, j, i), dkb + j * dk, dkb + i * dk, dk);
        }
      }
      // dA_ij = -(dVb_i . U_j + dKb_i . W_j), through A_ij = beta_i (k_i . k_j) Gam_ij.
      for (int64_t i = 0; i < len; ++i)
        for (int64_t j = 0; j < i; ++j) {
          const float da =
              -(gd_dot(dvb + i * dv, ch.u + j * dv, dv) + gd_dot(dkb + i * dk, ch.w + j * dk, dk));
          dbt[i] += da * ch.at(ch.kk, i, j) * ch.at(ch.gam, i, j);
          const float mij = da * ch.bt[i] * ch.at(ch.gam, i, j);
          gd_axpy(mij, ch.k + j * dk, ddk + i * dk, dk);
          gd_axpy(mij, ch.k + i * dk, ddk + j * dk, dk);
          const float sgrad = da * ch.at(ch.a, i, j);
          dbig_g[i] += sgrad;
          dbig_g[j] -= sgrad;
        }
      // Through beta o V and beta o e^G o K; then G = cumsum(g) within the chunk.
      for (int64_t i = 0; i < len; ++i) {
        const int64_t t = b * s.seq + t0 + i;
        float* dvo = dv_out + (t * s.v_heads + h) * dv;
        for (int64_t n = 0; n < dv; ++n) dvo[n] = ch.bt[i] * dvb[i * dv + n];
        dbt[i] += gd_dot(dvb + i * dv, ch.v + i * dv, dv);
        const float kdot = ch.eg[i] * gd_dot(dkb + i * dk, ch.k + i * dk, dk);
        dbt[i] += kdot;
        dbig_g[i] += ch.bt[i] * kdot;
        gd_axpy(ch.bt[i] * ch.eg[i], dkb + i * dk, ddk + i * dk, dk);
      }
      float acc = 0.0f;
      for (int64_t i = len - 1; i >= 0; --i) {
        const int64_t t = b * s.seq + t0 + i;
        acc += dbig_g[i];
        dg[t * s.v_heads + h] = acc;
        dbeta[t * s.v_heads + h] = dbt[i];
        const int64_t r = (t * s.k_heads + hk) * dk;
        for (int64_t m = 0; m < dk; ++m) {
          dq[r + m] += dqc[i * dk + m];
          dk_out[r + m] += ddk[i * dk + m];
        }
      }
      for (int64_t m = 0; m < dk * dv; ++m) ds[m] = ds0[m];
    }
  }
}

MT_HD int64_t gated_delta_step_floats(const GatedDeltaDims& s) {
  return s.dv;
}

// Value head h of s.seq tokens of one sequence in order (batch 1); state [v_heads, dk, dv].
MT_HD void gated_delta_step_head(const GatedDeltaDims& s, const float* q, const float* k,
                                 const float* v, const float* g, const float* beta, float* state,
                                 float* out, float* u, int64_t h) {
  const int64_t dk = s.dk, dv = s.dv, group = s.v_heads / s.k_heads;
  float* st = state + h * dk * dv;
  for (int64_t t = 0; t < s.seq; ++t) {
    const float* qt = q + (t * s.k_heads + h / group) * dk;
    const float* kt = k + (t * s.k_heads + h / group) * dk;
    const float* vt = v + (t * s.v_heads + h) * dv;
    const float alpha = expf(g[t * s.v_heads + h]), bt = beta[t * s.v_heads + h];
    for (int64_t m = 0; m < dk * dv; ++m) st[m] *= alpha;
    // u = beta (v - S^T k);  S += k u^T;  o = S^T q.
    gd_mat_t_vec(st, kt, u, dk, dv);
    for (int64_t n = 0; n < dv; ++n) u[n] = bt * (vt[n] - u[n]);
    for (int64_t m = 0; m < dk; ++m) gd_axpy(kt[m], u, st + m * dv, dv);
    gd_mat_t_vec(st, qt, out + (t * s.v_heads + h) * dv, dk, dv);
  }
}

}  // namespace moetron::kernels
