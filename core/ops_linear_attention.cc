// Shape, dtype and device checks of the linear-attention ops, then the tensors' backend.
#include "core/ops_linear_attention.h"

#include <initializer_list>

#include "core/backend.h"

namespace moetron::ops {
namespace {

void require_f32(std::initializer_list<const Tensor*> ts, const char* op) {
  for (const Tensor* t : ts) {
    MOETRON_CHECK(t->defined(), op, ": an argument is undefined");
    MOETRON_CHECK(t->dtype() == DType::f32, op, ": arguments must be f32, one is ",
                  dtype_name(t->dtype()));
  }
}

// q, k [B, T, Hk, dk], v [B, T, Hv, dv], g, beta [B, T, Hv] (training) or without B (decoding).
void check_delta(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                 const Tensor& beta, int lead, const char* op) {
  require_f32({&q, &k, &v, &g, &beta}, op);
  const int n = lead + 2;
  bool ok = q.ndim() == n && k.shape() == q.shape() && v.ndim() == n && g.ndim() == n - 1 &&
            beta.shape() == g.shape();
  for (int d = 0; ok && d < lead; ++d) ok = v.dim(d) == q.dim(d) && g.dim(d) == q.dim(d);
  ok = ok && g.dim(lead) == v.dim(lead) && v.dim(lead) % q.dim(lead) == 0;
  MOETRON_CHECK(ok, op, ": q ", shape_str(q.shape()), " k ", shape_str(k.shape()), " v ",
                shape_str(v.shape()), " g ", shape_str(g.shape()), " beta ",
                shape_str(beta.shape()), " (value heads a multiple of key heads)");
}

Shape states_shape(const Tensor& q, const Tensor& v) {
  const int64_t chunks = (q.dim(1) + kGatedDeltaChunk - 1) / kGatedDeltaChunk;
  return {q.dim(0), v.dim(2), chunks + 1, q.dim(3), v.dim(3)};
}

}  // namespace

void gated_delta_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                         const Tensor& beta, Tensor& out, Tensor& states) {
  check_delta(q, k, v, g, beta, 2, "gated_delta_forward");
  require_f32({&out, &states}, "gated_delta_forward");
  MOETRON_CHECK(out.shape() == v.shape() && states.shape() == states_shape(q, v),
                "gated_delta_forward: out ", shape_str(out.shape()), " states ",
                shape_str(states.shape()), " for v ", shape_str(v.shape()), ", want states ",
                shape_str(states_shape(q, v)));
  backend_of("gated_delta_forward", {&q, &k, &v, &g, &beta, &out, &states})
      .gated_delta_forward(q, k, v, g, beta, out, states);
}

void gated_delta_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& g, const Tensor& beta, const Tensor& states, Tensor& dq,
                          Tensor& dk, Tensor& dv, Tensor& dg, Tensor& dbeta) {
  check_delta(q, k, v, g, beta, 2, "gated_delta_backward");
  require_f32({&dout, &states, &dq, &dk, &dv, &dg, &dbeta}, "gated_delta_backward");
  MOETRON_CHECK(dout.shape() == v.shape() && states.shape() == states_shape(q, v) &&
                    dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() &&
                    dg.shape() == g.shape() && dbeta.shape() == beta.shape(),
                "gated_delta_backward: shapes");
  backend_of("gated_delta_backward",
             {&dout, &q, &k, &v, &g, &beta, &states, &dq, &dk, &dv, &dg, &dbeta})
      .gated_delta_backward(dout, q, k, v, g, beta, states, dq, dk, dv, dg, dbeta);
}

void gated_delta_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                      const Tensor& beta, Tensor& state, Tensor& out) {
  check_delta(q, k, v, g, beta, 1, "gated_delta_step");
  require_f32({&state, &out}, "gated_delta_step");
  MOETRON_CHECK(out.shape() == v.shape() && state.shape() == Shape({v.dim(1), q.dim(2), v.dim(2)}),
                "gated_delta_step: out ", shape_str(out.shape()), " state ",
                shape_str(state.shape()), " for q ", shape_str(q.shape()), " v ",
                shape_str(v.shape()));
  backend_of("gated_delta_step", {&q, &k, &v, &g, &beta, &state, &out})
      .gated_delta_step(q, k, v, g, beta, state, out);
}

void conv_silu_forward(const Tensor& x, const Tensor& w, Tensor& pre, Tensor& y) {
  require_f32({&x, &w, &pre, &y}, "conv_silu_forward");
  MOETRON_CHECK(x.ndim() == 3 && w.ndim() == 2 && w.dim(0) == x.dim(2) && w.dim(1) >= 1 &&
                    pre.shape() == x.shape() && y.shape() == x.shape(),
                "conv_silu_forward: x ", shape_str(x.shape()), " (B, T, C) w ",
                shape_str(w.shape()), " (C, K) pre ", shape_str(pre.shape()), " y ",
                shape_str(y.shape()));
  backend_of("conv_silu_forward", {&x, &w, &pre, &y}).conv_silu_forward(x, w, pre, y);
}

void conv_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& pre,
                        Tensor& dx, Tensor& dw) {
  require_f32({&dy, &x, &w, &pre, &dx, &dw}, "conv_silu_backward");
  MOETRON_CHECK(x.ndim() == 3 && w.ndim() == 2 && w.dim(0) == x.dim(2) && dy.shape() == x.shape() &&
                    pre.shape() == x.shape() && dx.shape() == x.shape() && dw.shape() == w.shape(),
                "conv_silu_backward: shapes");
  backend_of("conv_silu_backward", {&dy, &x, &w, &pre, &dx, &dw})
      .conv_silu_backward(dy, x, w, pre, dx, dw);
}

void conv_silu_step(const Tensor& x, const Tensor& w, Tensor& state, Tensor& y) {
  require_f32({&x, &w, &state, &y}, "conv_silu_step");
  MOETRON_CHECK(x.ndim() == 2 && w.ndim() == 2 && w.dim(0) == x.dim(1) &&
                    state.shape() == Shape({w.dim(1) - 1, x.dim(1)}) && y.shape() == x.shape(),
                "conv_silu_step: x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " state ",
                shape_str(state.shape()), " (K - 1, C) y ", shape_str(y.shape()));
  backend_of("conv_silu_step", {&x, &w, &state, &y}).conv_silu_step(x, w, state, y);
}

void l2norm_forward(const Tensor& x, float eps, float scale, Tensor& y, Tensor& rnorm) {
  require_f32({&x, &y, &rnorm}, "l2norm_forward");
  MOETRON_CHECK(y.shape() == x.shape() && rnorm.numel() == x.rows() && eps > 0,
                "l2norm_forward: x ", shape_str(x.shape()), " y ", shape_str(y.shape()), " rnorm ",
                shape_str(rnorm.shape()), " eps ", eps);
  backend_of("l2norm_forward", {&x, &y, &rnorm}).l2norm_forward(x, eps, scale, y, rnorm);
}

void l2norm_backward(const Tensor& dy, const Tensor& x, const Tensor& rnorm, float scale,
                     Tensor& dx) {
  require_f32({&dy, &x, &rnorm, &dx}, "l2norm_backward");
  MOETRON_CHECK(dy.shape() == x.shape() && dx.shape() == x.shape() && rnorm.numel() == x.rows(),
                "l2norm_backward: shapes");
  backend_of("l2norm_backward", {&dy, &x, &rnorm, &dx}).l2norm_backward(dy, x, rnorm, scale, dx);
}

void gdn_gates_forward(const Tensor& a, const Tensor& b, const Tensor& a_log, const Tensor& dt_bias,
                       Tensor& g, Tensor& beta) {
  require_f32({&a, &b, &a_log, &dt_bias, &g, &beta}, "gdn_gates_forward");
  MOETRON_CHECK(b.shape() == a.shape() && g.shape() == a.shape() && beta.shape() == a.shape() &&
                    a_log.numel() == a.cols() && dt_bias.numel() == a.cols(),
                "gdn_gates_forward: a ", shape_str(a.shape()), " b ", shape_str(b.shape()),
                " A_log ", shape_str(a_log.shape()), " dt_bias ", shape_str(dt_bias.shape()));
  backend_of("gdn_gates_forward", {&a, &b, &a_log, &dt_bias, &g, &beta})
      .gdn_gates_forward(a, b, a_log, dt_bias, g, beta);
}

void gdn_gates_backward(const Tensor& dg, const Tensor& dbeta, const Tensor& a, const Tensor& a_log,
                        const Tensor& dt_bias, const Tensor& beta, Tensor& da, Tensor& db,
                        Tensor& da_log, Tensor& ddt_bias) {
  require_f32({&dg, &dbeta, &a, &a_log, &dt_bias, &beta, &da, &db, &da_log, &ddt_bias},
              "gdn_gates_backward");
  MOETRON_CHECK(
      dg.shape() == a.shape() && dbeta.shape() == a.shape() && beta.shape() == a.shape() &&
          da.shape() == a.shape() && db.shape() == a.shape() && a_log.numel() == a.cols() &&
          dt_bias.numel() == a.cols() && da_log.numel() == a.cols() && ddt_bias.numel() == a.cols(),
      "gdn_gates_backward: shapes");
  backend_of("gdn_gates_backward",
             {&dg, &dbeta, &a, &a_log, &dt_bias, &beta, &da, &db, &da_log, &ddt_bias})
      .gdn_gates_backward(dg, dbeta, a, a_log, dt_bias, beta, da, db, da_log, ddt_bias);
}

void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, float eps, Tensor& y,
                           Tensor& rstd) {
  require_f32({&x, &z, &w, &y, &rstd}, "gated_rmsnorm_forward");
  MOETRON_CHECK(z.shape() == x.shape() && y.shape() == x.shape() && w.numel() == x.cols() &&
                    rstd.numel() == x.rows(),
                "gated_rmsnorm_forward: x ", shape_str(x.shape()), " z ", shape_str(z.shape()),
                " w ", shape_str(w.shape()), " y ", shape_str(y.shape()));
  backend_of("gated_rmsnorm_forward", {&x, &z, &w, &y, &rstd})
      .gated_rmsnorm_forward(x, z, w, eps, y, rstd);
}

void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, Tensor& dx, Tensor& dz, Tensor& dw) {
  require_f32({&dy, &x, &z, &w, &rstd, &dx, &dz, &dw}, "gated_rmsnorm_backward");
  MOETRON_CHECK(dy.shape() == x.shape() && z.shape() == x.shape() && dx.shape() == x.shape() &&
                    dz.shape() == x.shape() && w.numel() == x.cols() && dw.numel() == x.cols() &&
                    rstd.numel() == x.rows(),
                "gated_rmsnorm_backward: shapes");
  backend_of("gated_rmsnorm_backward", {&dy, &x, &z, &w, &rstd, &dx, &dz, &dw})
      .gated_rmsnorm_backward(dy, x, z, w, rstd, dx, dz, dw);
}

}  // namespace moetron::ops
