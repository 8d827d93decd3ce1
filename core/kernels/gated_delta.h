// The gated delta rule (core/ops_linear_attention.h) for the device backend, in phases that each
// run a thread per independent piece, so a head's sequence is spread over many threads:
//  1. a thread per (batch, value head, chunk): the chunk's cumulative decay G and its WY factors
//     U and W (they do not depend on the state), and for the backward the chunk's (q.k) Gam;
//  2. a thread per (batch, value head, value column): the recurrence over the chunks in order
//     (column n of each state depends only on column n of the one before; the backward's state
//     gradient likewise, in reverse order);
//  3. forward, a thread per (batch, position, value head): the outputs from the chunk's initial
//     state; backward, a thread per (batch, key head, chunk): the rest of the chunk's gradient,
//     its value heads in order adding into dq and dk (no atomics).
// The decoding step runs a thread per (value head, value column). The chunked form and its
// gradient are the CPU backend's (core/cpu/gated_delta.cc, which says the equations), written
// again here as plain loops: the CPU backend stays the independent oracle the op harness
// compares with. Sums run in index order, so they agree with the CPU's vectorised ones to
// rounding; every thread's sums are the same whatever the launch, so the result is
// deterministic. What passes between phases lives in the backend's scratch (GdWork).
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

// One chunk of one value head in phase 3 of the backward: q, k and v read in place (rows `ldk`
// and `ldv` apart), U and W from phase 1's work, the rest derived again in the task's slab.
struct GdChunk {
  int64_t len, dk, dv, ldk, ldv;
  const float *q, *k, *v;       // [len, dk], [len, dk], [len, dv] (strided)
  const float *u, *w;           // [len, dv], [len, dk]
  float *big_g, *eg, *el, *bt;  // [len]: cumsum(g), exp(G), exp(G_last - G), beta
  float *gam, *qk, *kk, *a;     // [len, len] lower: Gam, q.k, k.k, A
  float* vp;                    // [len, dv]

  MT_HD float& at(float* m, int64_t i, int64_t j) const { return m[i * len + j]; }
  MT_HD const float* qi(int64_t i) const { return q + i * ldk; }
  MT_HD const float* ki(int64_t i) const { return k + i * ldk; }
  MT_HD const float* vi(int64_t i) const { return v + i * ldv; }
};

MT_HD int64_t gd_chunk_floats(const GatedDeltaDims& s) {
  const int64_t c = s.chunk;
  return c * s.dv + 4 * c + 4 * c * c;
}
MT_HD GdChunk gd_chunk_in(const GatedDeltaDims& s, float* slab) {
  const int64_t c = s.chunk;
  GdChunk ch{};
  ch.dk = s.dk;
  ch.dv = s.dv;
  ch.ldk = s.k_heads * s.dk;
  ch.ldv = s.v_heads * s.dv;
  float* p = slab;
  const auto take = [&p](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  ch.big_g = take(c);
  ch.eg = take(c);
  ch.el = take(c);
  ch.bt = take(c);
  ch.gam = take(c * c);
  ch.qk = take(c * c);
  ch.kk = take(c * c);
  ch.a = take(c * c);
  ch.vp = take(c * s.dv);
  return ch;
}

// Points ch at positions [t0, t0 + n) of batch b, value head h, and derives A and, with the
// chunk's initial state s0 [dk, dv], V' = U - W S0 (U [n, dv] and W [n, dk] from phase 1).
MT_HD void gd_chunk_load(GdChunk& ch, const GatedDeltaDims& s, const float* qs, const float* ks,
                         const float* vs, const float* gs, const float* betas, const float* u,
                         const float* w, int64_t b, int64_t h, int64_t t0, int64_t n,
                         const float* s0) {
  const int64_t dk = ch.dk, dv = ch.dv, hk = h / (s.v_heads / s.k_heads);
  const int64_t first = b * s.seq + t0;
  ch.len = n;
  ch.q = qs + (first * s.k_heads + hk) * dk;
  ch.k = ks + (first * s.k_heads + hk) * dk;
  ch.v = vs + (first * s.v_heads + h) * dv;
  ch.u = u;
  ch.w = w;
  float cum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = first + i;
    cum += gs[t * s.v_heads + h];
    ch.big_g[i] = cum;
    ch.eg[i] = expf(cum);
    ch.bt[i] = betas[t * s.v_heads + h];
  }
  for (int64_t i = 0; i < n; ++i) {
    ch.el[i] = expf(ch.big_g[n - 1] - ch.big_g[i]);
    for (int64_t j = 0; j <= i; ++j) {
      ch.at(ch.gam, i, j) = expf(ch.big_g[i] - ch.big_g[j]);
      ch.at(ch.qk, i, j) = gd_dot(ch.qi(i), ch.ki(j), dk);
      ch.at(ch.kk, i, j) = j < i ? gd_dot(ch.ki(i), ch.ki(j), dk) : 0.0f;
      ch.at(ch.a, i, j) = j < i ? ch.bt[i] * ch.at(ch.kk, i, j) * ch.at(ch.gam, i, j) : 0.0f;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    float* vpi = ch.vp + i * dv;
    gd_mat_t_vec(s0, ch.w + i * dk, vpi, dk, dv);
    for (int64_t c = 0; c < dv; ++c) vpi[c] = ch.u[i * dv + c] - vpi[c];
  }
}

// What passes between the phases, per (batch, value head) `ph` at position t of its sequence:
// U [ph, t, dv], W [ph, t, dk], G [ph, t] (the cumulative log decay within t's chunk) and, forward,
// V' [ph, t, dv]; backward, dV' [ph, t, dv] in `vp`, (q_i . k_j) Gam_ij [ph, chunk, C, C] and
// the gradient of each chunk's final state dS [ph, chunk, dk, dv].
struct GdWork {
  float *u, *w, *big_g, *vp, *qkg, *ds, *slabs;
};

// Phase 3 of the backward's scratch per (batch, key head, chunk).
MT_HD int64_t gd_backward_slab_floats(const GatedDeltaDims& s) {
  const int64_t c = s.chunk;
  return gd_chunk_floats(s) + c * s.dv + c * c + 3 * c * s.dk + 2 * c;
}

MT_HD int64_t gd_work_floats(const GatedDeltaDims& s, bool backward) {
  const int64_t heads = s.batch * s.v_heads, c = s.chunk, chunks = s.chunks();
  const int64_t shared = heads * s.seq * (2 * s.dv + s.dk + 1);
  if (!backward) return shared;
  return shared + heads * chunks * (c * c + s.dk * s.dv) +
         s.batch * s.k_heads * chunks * gd_backward_slab_floats(s);
}
MT_HD GdWork gd_work_in(const GatedDeltaDims& s, bool backward, float* scratch) {
  const int64_t heads = s.batch * s.v_heads, c = s.chunk, chunks = s.chunks();
  GdWork wk{};
  float* p = scratch;
  const auto take = [&p](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  wk.u = take(heads * s.seq * s.dv);
  wk.w = take(heads * s.seq * s.dk);
  wk.big_g = take(heads * s.seq);
  wk.vp = take(heads * s.seq * s.dv);
  if (backward) {
    wk.qkg = take(heads * chunks * c * c);
    wk.ds = take(heads * chunks * s.dk * s.dv);
    wk.slabs = p;
  }
  return wk;
}

// Where (batch, value head) ph's chunk c starts, and how long it is.
struct GdSpan {
  int64_t b, h, hk, t0, len;
};
MT_HD GdSpan gd_span(const GatedDeltaDims& s, int64_t ph, int64_t c) {
  const int64_t t0 = c * s.chunk;
  return {ph / s.v_heads, ph % s.v_heads, (ph % s.v_heads) / (s.v_heads / s.k_heads), t0,
          s.seq - t0 < s.chunk ? s.seq - t0 : s.chunk};
}

// Phase 1, task = ph * chunks + c: G, and (I + A) U = beta o V, (I + A) W = beta o e^G o K by
// forward substitution, A_ij = beta_i (k_i . k_j) Gam_ij (j < i); with wk.qkg, (q_i . k_j) Gam_ij.
MT_HD void gd_chunk_factors(const GatedDeltaDims& s, const float* q, const float* k, const float* v,
                            const float* g, const float* beta, const GdWork& wk, int64_t task) {
  const int64_t ph = task / s.chunks(), c = task % s.chunks(), dk = s.dk, dv = s.dv;
  const GdSpan sp = gd_span(s, ph, c);
  const auto kq_at = [&](const float* x, int64_t i) {
    return x + ((sp.b * s.seq + sp.t0 + i) * s.k_heads + sp.hk) * dk;
  };
  const auto vh_at = [&](int64_t i) { return (sp.b * s.seq + sp.t0 + i) * s.v_heads + sp.h; };
  float* big_g = wk.big_g + ph * s.seq + sp.t0;
  float* u = wk.u + (ph * s.seq + sp.t0) * dv;
  float* w = wk.w + (ph * s.seq + sp.t0) * dk;
  float cum = 0.0f;
  for (int64_t i = 0; i < sp.len; ++i) {
    cum += g[vh_at(i)];
    big_g[i] = cum;
  }
  for (int64_t i = 0; i < sp.len; ++i) {
    const float bt = beta[vh_at(i)], eg = expf(big_g[i]);
    const float* ki = kq_at(k, i);
    float* ui = u + i * dv;
    float* wi = w + i * dk;
    for (int64_t n = 0; n < dv; ++n) ui[n] = bt * v[vh_at(i) * dv + n];
    for (int64_t m = 0; m < dk; ++m) wi[m] = bt * eg * ki[m];
    for (int64_t j = 0; j < i; ++j) {
      const float a = bt * gd_dot(ki, kq_at(k, j), dk) * expf(big_g[i] - big_g[j]);
      gd_axpy(-a, u + j * dv, ui, dv);
      gd_axpy(-a, w + j * dk, wi, dk);
    }
  }
  if (!wk.qkg) return;
  float* qkg = wk.qkg + task * s.chunk * s.chunk;
  for (int64_t i = 0; i < sp.len; ++i)
    for (int64_t j = 0; j <= i; ++j)
      qkg[i * s.chunk + j] = gd_dot(kq_at(q, i), kq_at(k, j), dk) * expf(big_g[i] - big_g[j]);
}

// Phase 2 forward, task = ph * dv + n: column n of each chunk's initial state (the last, the
// final state), with V'_i = U_i - W_i S0 and S1 = e^{G_L} S0 + sum_i e^{G_L - G_i} k_i V'_i^T.
MT_HD void gd_state_column(const GatedDeltaDims& s, const float* k, float* states, const GdWork& wk,
                           int64_t task) {
  const int64_t ph = task / s.dv, n = task % s.dv, dk = s.dk, dv = s.dv;
  const GdSpan first = gd_span(s, ph, 0);
  float* s0 = states + gd_state_offset(s, first.b, first.h, 0) + n;
  for (int64_t m = 0; m < dk; ++m) s0[m * dv] = 0.0f;
  for (int64_t c = 0; c < s.chunks(); ++c, s0 += dk * dv) {
    const GdSpan sp = gd_span(s, ph, c);
    const float* big_g = wk.big_g + ph * s.seq + sp.t0;
    const int64_t row = ph * s.seq + sp.t0;
    float* s1 = s0 + dk * dv;
    for (int64_t i = 0; i < sp.len; ++i) {
      const float* wi = wk.w + (row + i) * dk;
      float y = 0.0f;
      for (int64_t m = 0; m < dk; ++m) y = fmaf(wi[m], s0[m * dv], y);
      wk.vp[(row + i) * dv + n] = wk.u[(row + i) * dv + n] - y;
    }
    const float last = big_g[sp.len - 1], decay = expf(last);
    for (int64_t m = 0; m < dk; ++m) s1[m * dv] = decay * s0[m * dv];
    for (int64_t i = 0; i < sp.len; ++i) {
      const float el = expf(last - big_g[i]), vpi = wk.vp[(row + i) * dv + n];
      const float* ki = k + ((sp.b * s.seq + sp.t0 + i) * s.k_heads + sp.hk) * dk;
      for (int64_t m = 0; m < dk; ++m) s1[m * dv] = fmaf(el * ki[m], vpi, s1[m * dv]);
    }
  }
}

// Phase 3 forward, task = (b * seq + t) * v_heads + h, out's row:
// O_i = e^{G_i} S0^T q_i + sum_{j <= i} (q_i . k_j) Gam_ij V'_j.
MT_HD void gd_output_row(const GatedDeltaDims& s, const float* q, const float* k,
                         const float* states, const GdWork& wk, float* out, int64_t task) {
  const int64_t h = task % s.v_heads, b = task / s.v_heads / s.seq, t = task / s.v_heads % s.seq;
  const int64_t ph = b * s.v_heads + h, c = t / s.chunk, dk = s.dk, dv = s.dv;
  const GdSpan sp = gd_span(s, ph, c);
  const int64_t i = t - sp.t0;
  const float* big_g = wk.big_g + ph * s.seq + sp.t0;
  const float* qi = q + ((b * s.seq + t) * s.k_heads + sp.hk) * dk;
  float* oi = out + task * dv;
  gd_mat_t_vec(states + gd_state_offset(s, b, h, c), qi, oi, dk, dv);
  const float eg = expf(big_g[i]);
  for (int64_t n = 0; n < dv; ++n) oi[n] = eg * oi[n];
  for (int64_t j = 0; j <= i; ++j) {
    const float* kj = k + ((b * s.seq + sp.t0 + j) * s.k_heads + sp.hk) * dk;
    gd_axpy(gd_dot(qi, kj, dk) * expf(big_g[i] - big_g[j]), wk.vp + (ph * s.seq + sp.t0 + j) * dv,
            oi, dv);
  }
}

// Phase 2 backward, task = ph * dv + n, the chunks in reverse: column n of dV' and of each
// chunk's final-state gradient dS1 (zero for the last chunk; dS0 of chunk c is dS1 of c - 1):
// dV'_j = e^{G_L - G_j} dS1^T k_j + sum_{i >= j} (q_i . k_j) Gam_ij dO_i,
// dS0 = e^{G_L} dS1 + sum_i e^{G_i} q_i dO_i^T - sum_i W_i dV'_i^T.
MT_HD void gd_state_grad_column(const GatedDeltaDims& s, const float* dout, const float* q,
                                const float* k, const GdWork& wk, int64_t task) {
  const int64_t ph = task / s.dv, n = task % s.dv, dk = s.dk, dv = s.dv, chunks = s.chunks();
  float* ds1 = wk.ds + ((ph * chunks + chunks - 1) * dk * dv) + n;
  for (int64_t m = 0; m < dk; ++m) ds1[m * dv] = 0.0f;  // the final state has no gradient
  for (int64_t c = chunks - 1; c >= 0; --c, ds1 -= dk * dv) {
    const GdSpan sp = gd_span(s, ph, c);
    const float* big_g = wk.big_g + ph * s.seq + sp.t0;
    const float* qkg = wk.qkg + (ph * chunks + c) * s.chunk * s.chunk;
    const int64_t row = ph * s.seq + sp.t0;
    const auto kq_at = [&](const float* x, int64_t i) {
      return x + ((sp.b * s.seq + sp.t0 + i) * s.k_heads + sp.hk) * dk;
    };
    const auto do_at = [&](int64_t i) {
      return dout[((sp.b * s.seq + sp.t0 + i) * s.v_heads + sp.h) * dv + n];
    };
    const float last = big_g[sp.len - 1];
    for (int64_t j = 0; j < sp.len; ++j) {
      const float* kj = kq_at(k, j);
      float y = 0.0f;
      for (int64_t m = 0; m < dk; ++m) y = fmaf(kj[m], ds1[m * dv], y);
      y *= expf(last - big_g[j]);
      for (int64_t i = j; i < sp.len; ++i) y = fmaf(qkg[i * s.chunk + j], do_at(i), y);
      wk.vp[(row + j) * dv + n] = y;
    }
    if (c == 0) break;
    float* ds0 = ds1 - dk * dv;
    const float decay = expf(last);
    for (int64_t m = 0; m < dk; ++m) ds0[m * dv] = decay * ds1[m * dv];
    for (int64_t i = 0; i < sp.len; ++i) {
      const float eg = expf(big_g[i]), doi = do_at(i), dvpi = wk.vp[(row + i) * dv + n];
      const float* qi = kq_at(q, i);
      const float* wi = wk.w + (row + i) * dk;
      for (int64_t m = 0; m < dk; ++m) {
        ds0[m * dv] = fmaf(eg * qi[m], doi, ds0[m * dv]);
        ds0[m * dv] = fmaf(-wi[m], dvpi, ds0[m * dv]);
      }
    }
  }
}

// Phase 3 backward, task = (b * k_heads + hk) * chunks + c: dq and dk of the key head's rows of
// chunk c (summed over its value heads in order), and dv, dg, dbeta of each of those value heads,
// from the chunk's dS1 and dV' (phase 2).
MT_HD void gd_chunk_backward(const GatedDeltaDims& s, const float* dout, const float* q,
                             const float* k, const float* v, const float* g, const float* beta,
                             const float* states, const GdWork& wk, float* dq, float* dk_out,
                             float* dv_out, float* dg, float* dbeta, int64_t task) {
  const int64_t chunks = s.chunks(), c = task % chunks, b = task / chunks / s.k_heads;
  const int64_t hk = task / chunks % s.k_heads, dk = s.dk, dv = s.dv, cmax = s.chunk;
  const int64_t group = s.v_heads / s.k_heads, t0 = c * s.chunk;
  const int64_t len = s.seq - t0 < s.chunk ? s.seq - t0 : s.chunk;
  for (int64_t t = t0; t < t0 + len; ++t)
    for (int64_t m = 0; m < dk; ++m) {
      dq[((b * s.seq + t) * s.k_heads + hk) * dk + m] = 0.0f;
      dk_out[((b * s.seq + t) * s.k_heads + hk) * dk + m] = 0.0f;
    }
  float* slab = wk.slabs + task * gd_backward_slab_floats(s);
  GdChunk ch = gd_chunk_in(s, slab);
  float* p = slab + gd_chunk_floats(s);
  const auto take = [&p](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  float* dvb = take(cmax * dv);
  float* dp = take(cmax * cmax);
  float* ddk = take(cmax * dk);
  float* dkb = take(cmax * dk);
  float* dqc = take(cmax * dk);
  float* dbig_g = take(cmax);
  float* dbt = take(cmax);
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    const int64_t ph = b * s.v_heads + h;
    const float* s0 = states + gd_state_offset(s, b, h, c);
    const float* ds = wk.ds + (ph * chunks + c) * dk * dv;
    const int64_t row = ph * s.seq + t0;  // the chunk's first row in phase 1's and 2's work
    const float* dvp = wk.vp + row * dv;
    gd_chunk_load(ch, s, q, k, v, g, beta, wk.u + row * dv, wk.w + row * dk, b, h, t0, len, s0);
    const auto dout_row = [&](int64_t i) {
      return dout + ((b * s.seq + t0 + i) * s.v_heads + h) * dv;
    };
    for (int64_t i = 0; i < len; ++i) {
      dbig_g[i] = 0.0f;
      dbt[i] = 0.0f;
      for (int64_t m = 0; m < dk; ++m) dqc[i * dk + m] = ddk[i * dk + m] = 0.0f;
    }
    // dP_ij = dO_i . V'_j.
    for (int64_t i = 0; i < len; ++i)
      for (int64_t j = 0; j <= i; ++j) dp[i * len + j] = gd_dot(dout_row(i), ch.vp + j * dv, dv);
    // Through O = (e^G o Q) S0 + (QK^T o Gam) V'.
    for (int64_t i = 0; i < len; ++i) {
      float* dqi = dqc + i * dk;
      const float* doi = dout_row(i);
      for (int64_t m = 0; m < dk; ++m) dqi[m] = ch.eg[i] * gd_dot(s0 + m * dv, doi, dv);
      dbig_g[i] += gd_dot(dqi, ch.qi(i), dk);
      for (int64_t j = 0; j <= i; ++j) {
        const float pg = dp[i * len + j] * ch.at(ch.gam, i, j);
        gd_axpy(pg, ch.ki(j), dqi, dk);
        gd_axpy(pg, ch.qi(i), ddk + j * dk, dk);
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
        rj += ch.el[j] * ch.ki(j)[m] * dkd;
      }
      dbig_g[j] -= rj;
      dbig_g[len - 1] += rj;
    }
    dbig_g[len - 1] += ch.eg[len - 1] * gd_dot(ds, s0, dk * dv);
    // (I + A)^T dVb = dU (= dV') and (I + A)^T dKb = dW (= -S0 dV'), by back substitution.
    for (int64_t i = len - 1; i >= 0; --i) {
      for (int64_t n = 0; n < dv; ++n) dvb[i * dv + n] = dvp[i * dv + n];
      for (int64_t m = 0; m < dk; ++m) dkb[i * dk + m] = -gd_dot(s0 + m * dv, dvp + i * dv, dv);
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
        gd_axpy(mij, ch.ki(j), ddk + i * dk, dk);
        gd_axpy(mij, ch.ki(i), ddk + j * dk, dk);
        const float sgrad = da * ch.at(ch.a, i, j);
        dbig_g[i] += sgrad;
        dbig_g[j] -= sgrad;
      }
    // Through beta o V and beta o e^G o K; then G = cumsum(g) within the chunk.
    for (int64_t i = 0; i < len; ++i) {
      const int64_t t = b * s.seq + t0 + i;
      float* dvo = dv_out + (t * s.v_heads + h) * dv;
      for (int64_t n = 0; n < dv; ++n) dvo[n] = ch.bt[i] * dvb[i * dv + n];
      dbt[i] += gd_dot(dvb + i * dv, ch.vi(i), dv);
      const float kdot = ch.eg[i] * gd_dot(dkb + i * dk, ch.ki(i), dk);
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
  }
}

// Decoding, task = h * dv + n: column n of value head h's state [v_heads, dk, dv] over s.seq
// tokens of one sequence in order (batch 1): u = beta (v - S^T k); S += k u^T; o = S^T q.
MT_HD void gated_delta_step_column(const GatedDeltaDims& s, const float* q, const float* k,
                                   const float* v, const float* g, const float* beta, float* state,
                                   float* out, int64_t task) {
  const int64_t h = task / s.dv, n = task % s.dv, dk = s.dk, dv = s.dv;
  const int64_t hk = h / (s.v_heads / s.k_heads);
  float* st = state + h * dk * dv + n;
  for (int64_t t = 0; t < s.seq; ++t) {
    const float* qt = q + (t * s.k_heads + hk) * dk;
    const float* kt = k + (t * s.k_heads + hk) * dk;
    const float alpha = expf(g[t * s.v_heads + h]), bt = beta[t * s.v_heads + h];
    float u = 0.0f;
    for (int64_t m = 0; m < dk; ++m) {
      st[m * dv] *= alpha;
      u = fmaf(kt[m], st[m * dv], u);
    }
    u = bt * (v[(t * s.v_heads + h) * dv + n] - u);
    float o = 0.0f;
    for (int64_t m = 0; m < dk; ++m) {
      st[m * dv] = fmaf(kt[m], u, st[m * dv]);
      o = fmaf(qt[m], st[m * dv], o);
    }
    out[(t * s.v_heads + h) * dv + n] = o;
  }
}

}  // namespace moetron::kernels
