// Shape, dtype and device checks for every op, then the backend of the tensors' device.
#include "core/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/backend.h"

namespace moetron::ops {
namespace {

void require(const Tensor& t, DType dtype, const char* op, const char* what) {
  MOETRON_CHECK(t.defined(), op, ": ", what, " is undefined");
  MOETRON_CHECK(t.dtype() == dtype, op, ": ", what, " must be ", dtype_name(dtype), ", is ",
                dtype_name(t.dtype()));
}

void require_f32(const Tensor& t, const char* op, const char* what) {
  require(t, DType::f32, op, what);
}

// A device scalar that a reduction adds into: [1] f64.
void require_scalar_sum(const Tensor& t, const char* op) {
  require(t, DType::f64, op, "sum");
  MOETRON_CHECK(t.numel() == 1, op, ": the sum is one element, got ", shape_str(t.shape()));
}

void require_same_numel(const Tensor& a, const Tensor& b, const char* op) {
  MOETRON_CHECK(a.numel() == b.numel(), op, ": ", shape_str(a.shape()), " vs ",
                shape_str(b.shape()));
}

}  // namespace

void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) {
  MOETRON_CHECK(a.defined() && b.defined() && a.dtype() == b.dtype() &&
                    (a.dtype() == DType::f32 || a.dtype() == DType::bf16),
                "matmul: a and b must both be f32 or both bf16, got ",
                a.defined() ? dtype_name(a.dtype()) : "none", " and ",
                b.defined() ? dtype_name(b.dtype()) : "none");
  require_f32(c, "matmul", "c");
  const int64_t m = trans_a ? a.cols() : a.rows(), k = trans_a ? a.rows() : a.cols();
  const int64_t kb = trans_b ? b.cols() : b.rows(), n = trans_b ? b.rows() : b.cols();
  MOETRON_CHECK(k == kb && c.rows() == m && c.cols() == n, "matmul: ", shape_str(a.shape()),
                trans_a ? "^T" : "", " x ", shape_str(b.shape()), trans_b ? "^T" : "", " -> ",
                shape_str(c.shape()));
  backend_of("matmul", {&a, &b, &c}).matmul(a, trans_a, b, trans_b, c, alpha, beta);
}

void matmul_batched(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                    float alpha, float beta) {
  MOETRON_CHECK(a.ndim() == 3 && b.ndim() == 3 && c.ndim() == 3 && a.dim(0) == b.dim(0) &&
                    a.dim(0) == c.dim(0),
                "matmul_batched: ", shape_str(a.shape()), " x ", shape_str(b.shape()), " -> ",
                shape_str(c.shape()));
  for (int64_t i = 0; i < a.dim(0); ++i) {
    Tensor ci = c.slice(i, i + 1).reshape({c.dim(1), c.dim(2)});
    matmul(a.slice(i, i + 1).reshape({a.dim(1), a.dim(2)}), trans_a,
           b.slice(i, i + 1).reshape({b.dim(1), b.dim(2)}), trans_b, ci, alpha, beta);
  }
}

void fill(Tensor& x, float value) {
  require_f32(x, "fill", "x");
  backend_of("fill", {&x}).fill(x, value);
}

void cast(const Tensor& src, Tensor& dst) {
  MOETRON_CHECK(src.defined() && dst.defined() &&
                    ((src.dtype() == DType::f32 && dst.dtype() == DType::bf16) ||
                     (src.dtype() == DType::bf16 && dst.dtype() == DType::f32)),
                "cast: f32 -> bf16 or bf16 -> f32, got ",
                src.defined() ? dtype_name(src.dtype()) : "none", " -> ",
                dst.defined() ? dtype_name(dst.dtype()) : "none");
  require_same_numel(src, dst, "cast");
  backend_of("cast", {&src, &dst}).cast(src, dst);
}

void copy(const Tensor& src, Tensor& dst) {
  require_f32(src, "copy", "src");
  require_f32(dst, "copy", "dst");
  require_same_numel(src, dst, "copy");
  backend_of("copy", {&src, &dst}).copy(src, dst);
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  require_f32(a, "add", "a");
  require_f32(b, "add", "b");
  require_f32(out, "add", "out");
  require_same_numel(a, b, "add");
  require_same_numel(a, out, "add");
  backend_of("add", {&a, &b, &out}).add(a, b, out);
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  require_f32(x, "axpy", "x");
  require_f32(y, "axpy", "y");
  require_same_numel(x, y, "axpy");
  backend_of("axpy", {&x, &y}).axpy(alpha, x, y);
}

void scale(Tensor& x, float s) {
  require_f32(x, "scale", "x");
  backend_of("scale", {&x}).scale(x, s);
}

void sum_squares(const Tensor& x, Tensor& sum) {
  require_f32(x, "sum_squares", "x");
  require_scalar_sum(sum, "sum_squares");
  backend_of("sum_squares", {&x, &sum}).sum_squares(x, sum);
}

namespace {
// a [n, H, da], b [n, H or 1, db], whole [n, H, da + db].
void check_heads(const char* op, const Tensor& a, const Tensor& b, const Tensor& whole) {
  for (const Tensor* t : {&a, &b, &whole}) require_f32(*t, op, "a tensor");
  MOETRON_CHECK(a.ndim() == 3 && b.ndim() == 3 && whole.ndim() == 3 && a.dim(0) == whole.dim(0) &&
                    b.dim(0) == whole.dim(0) && a.dim(1) == whole.dim(1) &&
                    (b.dim(1) == whole.dim(1) || b.dim(1) == 1) &&
                    a.dim(2) + b.dim(2) == whole.dim(2),
                op, ": a ", shape_str(a.shape()), " b ", shape_str(b.shape()), " whole ",
                shape_str(whole.shape()));
}
}  // namespace

void concat_heads(const Tensor& a, const Tensor& b, Tensor& dst) {
  check_heads("concat_heads", a, b, dst);
  backend_of("concat_heads", {&a, &b, &dst}).concat_heads(a, b, dst);
}

void split_heads(const Tensor& src, Tensor& a, Tensor& b) {
  check_heads("split_heads", a, b, src);
  backend_of("split_heads", {&src, &a, &b}).split_heads(src, a, b);
}

void transpose01(const Tensor& src, Tensor& dst) {
  require_f32(src, "transpose01", "src");
  require_f32(dst, "transpose01", "dst");
  MOETRON_CHECK(src.ndim() == 3 && dst.ndim() == 3 && dst.dim(0) == src.dim(1) &&
                    dst.dim(1) == src.dim(0) && dst.dim(2) == src.dim(2),
                "transpose01: ", shape_str(src.shape()), " -> ", shape_str(dst.shape()));
  backend_of("transpose01", {&src, &dst}).transpose01(src, dst);
}

void concat_cols(std::span<const Tensor> srcs, Tensor& dst) {
  require_f32(dst, "concat_cols", "dst");
  int64_t col = 0;
  for (const Tensor& s : srcs) {
    require_f32(s, "concat_cols", "src");
    MOETRON_CHECK(s.rows() == dst.rows() && s.device() == dst.device(), "concat_cols: rows ",
                  s.rows(), " vs ", dst.rows());
    col += s.cols();
  }
  MOETRON_CHECK(col == dst.cols(), "concat_cols: ", col, " columns into ", dst.cols());
  backend_of("concat_cols", {&dst}).concat_cols(srcs, dst);
}

void split_cols(const Tensor& src, std::span<Tensor> dsts) {
  require_f32(src, "split_cols", "src");
  int64_t col = 0;
  for (const Tensor& d : dsts) {
    require_f32(d, "split_cols", "dst");
    MOETRON_CHECK(d.rows() == src.rows() && d.device() == src.device(), "split_cols: rows ",
                  d.rows(), " vs ", src.rows());
    col += d.cols();
  }
  MOETRON_CHECK(col == src.cols(), "split_cols: ", col, " columns from ", src.cols());
  backend_of("split_cols", {&src}).split_cols(src, dsts);
}

void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd) {
  require_f32(x, "rmsnorm", "x");
  require_f32(weight, "rmsnorm", "weight");
  require_f32(y, "rmsnorm", "y");
  require_f32(rstd, "rmsnorm", "rstd");
  MOETRON_CHECK(weight.numel() == x.cols() && y.numel() == x.numel() && rstd.numel() == x.rows(),
                "rmsnorm: x ", shape_str(x.shape()), " weight ", shape_str(weight.shape()));
  backend_of("rmsnorm", {&x, &weight, &y, &rstd}).rmsnorm_forward(x, weight, eps, y, rstd);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight, bool accumulate_dx) {
  for (const Tensor* t : {&dy, &x, &weight, &rstd, static_cast<const Tensor*>(&dx),
                          static_cast<const Tensor*>(&dweight)})
    require_f32(*t, "rmsnorm_backward", "a tensor");
  MOETRON_CHECK(dy.numel() == x.numel() && dx.numel() == x.numel() &&
                    dweight.numel() == weight.numel() && rstd.numel() == x.rows(),
                "rmsnorm_backward: shapes");
  backend_of("rmsnorm_backward", {&dy, &x, &weight, &rstd, &dx, &dweight})
      .rmsnorm_backward(dy, x, weight, rstd, dx, dweight, accumulate_dx);
}

void rope_tables(const Tensor& inv_freq, float attention_factor, Tensor& cos, Tensor& sin) {
  require_f32(inv_freq, "rope_tables", "inv_freq");
  require_f32(cos, "rope_tables", "cos");
  require_f32(sin, "rope_tables", "sin");
  MOETRON_CHECK(inv_freq.ndim() == 1 && cos.ndim() == 2 && cos.shape() == sin.shape() &&
                    cos.dim(1) == inv_freq.dim(0),
                "rope_tables: inv_freq ", shape_str(inv_freq.shape()), " cos ",
                shape_str(cos.shape()), " sin ", shape_str(sin.shape()));
  backend_of("rope_tables", {&inv_freq, &cos, &sin})
      .rope_tables(inv_freq, attention_factor, cos, sin);
}

void rope(Tensor& x, const Tensor& cos, const Tensor& sin, RopeStyle style, bool inverse) {
  require_f32(x, "rope", "x");
  require_f32(cos, "rope", "cos");
  require_f32(sin, "rope", "sin");
  MOETRON_CHECK(x.ndim() == 4 && x.dim(3) % 2 == 0, "rope: x must be [B, T, H, even hd], is ",
                shape_str(x.shape()));
  MOETRON_CHECK(cos.numel() >= x.dim(1) * cos.cols() && cos.cols() >= 1 &&
                    2 * cos.cols() <= x.dim(3) && sin.shape() == cos.shape(),
                "rope: tables ", shape_str(cos.shape()), " do not fit ", shape_str(x.shape()),
                " (want [>= T, <= head_dim / 2])");
  backend_of("rope", {&x, &cos, &sin}).rope(x, cos, sin, style, inverse);
}

namespace {
void check_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                     DType operands) {
  MOETRON_CHECK(operands == DType::f32 || operands == DType::bf16,
                "attention: operands must be f32 or bf16, not ", dtype_name(operands));
  require_f32(q, "attention", "q");
  require_f32(k, "attention", "k");
  require_f32(v, "attention", "v");
  MOETRON_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4 && q.dim(0) == k.dim(0) &&
                    q.dim(1) == k.dim(1) && q.dim(3) == k.dim(3) && v.dim(0) == k.dim(0) &&
                    v.dim(1) == k.dim(1) && v.dim(2) == k.dim(2) && q.dim(2) % k.dim(2) == 0 &&
                    std::isfinite(scale) && scale > 0,
                "attention: q ", shape_str(q.shape()), " k ", shape_str(k.shape()), " v ",
                shape_str(v.shape()), " scale ", scale);
}
// out and dout: [B, T, H, dv].
Shape out_shape(const Tensor& q, const Tensor& v) {
  return {q.dim(0), q.dim(1), q.dim(2), v.dim(3)};
}
}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor& out,
                       Tensor& lse, Tensor* row_max, DType operands) {
  check_attention(q, k, v, scale, operands);
  require_f32(out, "attention", "out");
  require_f32(lse, "attention", "lse");
  MOETRON_CHECK(out.shape() == out_shape(q, v) && lse.numel() == q.dim(0) * q.dim(2) * q.dim(1),
                "attention: out ", shape_str(out.shape()), " lse ", shape_str(lse.shape()));
  if (row_max) {
    require_f32(*row_max, "attention", "row_max");
    MOETRON_CHECK(row_max->numel() == lse.numel(), "attention: row_max ",
                  shape_str(row_max->shape()));
  }
  const Tensor none;
  backend_of("attention", {&q, &k, &v, &out, &lse, row_max ? row_max : &none})
      .attention_forward(q, k, v, scale, out, lse, row_max, operands);
}

void head_max(const Tensor& row_max, Tensor& acc) {
  require_f32(row_max, "head_max", "row_max");
  require_f32(acc, "head_max", "acc");
  MOETRON_CHECK(row_max.ndim() == 3 && acc.numel() == row_max.dim(1), "head_max: row_max ",
                shape_str(row_max.shape()), " acc ", shape_str(acc.shape()));
  backend_of("head_max", {&row_max, &acc}).head_max(row_max, acc);
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        float scale, const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk,
                        Tensor& dv, DType operands) {
  check_attention(q, k, v, scale, operands);
  for (const Tensor* t : {&dout, &out, &lse, static_cast<const Tensor*>(&dq),
                          static_cast<const Tensor*>(&dk), static_cast<const Tensor*>(&dv)})
    require_f32(*t, "attention_backward", "a tensor");
  MOETRON_CHECK(dout.shape() == out_shape(q, v) && out.shape() == dout.shape() &&
                    dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() &&
                    lse.numel() == q.dim(0) * q.dim(2) * q.dim(1),
                "attention_backward: shapes");
  backend_of("attention_backward", {&dout, &q, &k, &v, &out, &lse, &dq, &dk, &dv})
      .attention_backward(dout, q, k, v, scale, out, lse, dq, dk, dv, operands);
}

void swiglu_forward(const Tensor& gate_up, Tensor& out) {
  require_f32(gate_up, "swiglu", "gate_up");
  require_f32(out, "swiglu", "out");
  MOETRON_CHECK(gate_up.rows() == out.rows() && gate_up.cols() == 2 * out.cols(),
                "swiglu: gate_up ", shape_str(gate_up.shape()), " out ", shape_str(out.shape()));
  backend_of("swiglu", {&gate_up, &out}).swiglu_forward(gate_up, out);
}

void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  require_f32(dout, "swiglu_backward", "dout");
  require_f32(gate_up, "swiglu_backward", "gate_up");
  require_f32(dgate_up, "swiglu_backward", "dgate_up");
  MOETRON_CHECK(gate_up.rows() == dout.rows() && gate_up.cols() == 2 * dout.cols() &&
                    dgate_up.numel() == gate_up.numel(),
                "swiglu_backward: shapes");
  backend_of("swiglu_backward", {&dout, &gate_up, &dgate_up})
      .swiglu_backward(dout, gate_up, dgate_up);
}

void sigmoid_gate(const Tensor& x, const Tensor& gate, Tensor& y) {
  require_f32(x, "sigmoid_gate", "x");
  require_f32(gate, "sigmoid_gate", "gate");
  require_f32(y, "sigmoid_gate", "y");
  MOETRON_CHECK(y.shape() == x.shape() && gate.rows() == x.rows() &&
                    (gate.numel() == x.numel() || gate.cols() == 1),
                "sigmoid_gate: x ", shape_str(x.shape()), " gate ", shape_str(gate.shape()),
                " (x's shape or [rows, 1]) y ", shape_str(y.shape()));
  backend_of("sigmoid_gate", {&x, &gate, &y}).sigmoid_gate(x, gate, y);
}

void sigmoid_gate_backward(const Tensor& dy, const Tensor& x, const Tensor& gate, Tensor& dx,
                           Tensor& dgate) {
  for (const Tensor* t :
       {&dy, &x, &gate, static_cast<const Tensor*>(&dx), static_cast<const Tensor*>(&dgate)})
    require_f32(*t, "sigmoid_gate_backward", "a tensor");
  MOETRON_CHECK(dy.shape() == x.shape() && dx.shape() == x.shape() &&
                    dgate.shape() == gate.shape() && gate.rows() == x.rows() &&
                    (gate.numel() == x.numel() || gate.cols() == 1),
                "sigmoid_gate_backward: shapes");
  backend_of("sigmoid_gate_backward", {&dy, &x, &gate, &dx, &dgate})
      .sigmoid_gate_backward(dy, x, gate, dx, dgate);
}

namespace {

// The shard with its defaults resolved against a table or logits of `rows` rows/columns.
VocabShard resolve(const VocabShard& s, int64_t rows) {
  VocabShard r = s;
  if (r.vocab < 0) r.vocab = rows;
  if (r.valid < 0) r.valid = std::min(rows, r.vocab - r.first);
  MOETRON_CHECK(r.first >= 0 && r.valid >= 0 && r.valid <= rows && r.first + r.valid <= r.vocab,
                "vocabulary block [", r.first, ", +", r.valid, ") of ", r.vocab, " with ", rows,
                " rows");
  return r;
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out, const VocabShard& shard,
                       Tensor* outside) {
  require(ids, DType::i32, "embedding", "ids");
  require_f32(table, "embedding", "table");
  require_f32(out, "embedding", "out");
  MOETRON_CHECK(out.rows() == ids.numel() && out.cols() == table.cols(), "embedding: ", ids.numel(),
                " ids into ", shape_str(out.shape()));
  if (outside) require_scalar_sum(*outside, "embedding");
  const Tensor none;
  backend_of("embedding", {&ids, &table, &out, outside ? outside : &none})
      .embedding_forward(ids, table, out, resolve(shard, table.rows()), outside);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable,
                        const VocabShard& shard) {
  require(ids, DType::i32, "embedding_backward", "ids");
  require_f32(dout, "embedding_backward", "dout");
  require_f32(dtable, "embedding_backward", "dtable");
  MOETRON_CHECK(dout.rows() == ids.numel() && dout.cols() == dtable.cols(),
                "embedding_backward: shapes");
  backend_of("embedding_backward", {&ids, &dout, &dtable})
      .embedding_backward(ids, dout, dtable, resolve(shard, dtable.rows()));
}

void ce_shard_stats(const Tensor& logits, const Tensor& targets, const VocabShard& shard,
                    Tensor& stats, Tensor* outside) {
  require_f32(logits, "ce_shard_stats", "logits");
  require(targets, DType::i32, "ce_shard_stats", "targets");
  require_f32(stats, "ce_shard_stats", "stats");
  MOETRON_CHECK(targets.numel() == logits.rows() && stats.numel() == logits.rows() * 3,
                "ce_shard_stats: ", targets.numel(), " targets, logits ", shape_str(logits.shape()),
                ", stats ", shape_str(stats.shape()));
  if (outside) require_scalar_sum(*outside, "ce_shard_stats");
  const Tensor none;
  backend_of("ce_shard_stats", {&logits, &targets, &stats, outside ? outside : &none})
      .ce_shard_stats(logits, targets, resolve(shard, logits.cols()), stats, outside);
}

void ce_combine_stats(const Tensor& all_stats, Tensor& lse, Tensor& loss_sum) {
  require_f32(all_stats, "ce_combine_stats", "all_stats");
  require_f32(lse, "ce_combine_stats", "lse");
  require_scalar_sum(loss_sum, "ce_combine_stats");
  const int64_t rows = lse.numel();
  MOETRON_CHECK(rows > 0 && all_stats.numel() % (rows * 3) == 0,
                "ce_combine_stats: ", shape_str(all_stats.shape()), " for ", rows, " rows");
  backend_of("ce_combine_stats", {&all_stats, &lse, &loss_sum})
      .ce_combine_stats(all_stats, lse, loss_sum);
}

void ce_shard_backward(Tensor& logits, const Tensor& targets, const VocabShard& shard,
                       const Tensor& lse, float grad_scale) {
  require_f32(logits, "ce_shard_backward", "logits");
  require(targets, DType::i32, "ce_shard_backward", "targets");
  require_f32(lse, "ce_shard_backward", "lse");
  MOETRON_CHECK(targets.numel() == logits.rows() && lse.numel() == logits.rows(),
                "ce_shard_backward: shapes");
  backend_of("ce_shard_backward", {&logits, &targets, &lse})
      .ce_shard_backward(logits, targets, resolve(shard, logits.cols()), lse, grad_scale);
}

int64_t ce_workspace_size(int64_t rows, int64_t vocab, Device device) {
  return backend(device).ce_workspace_size(rows, vocab);
}

void head_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, float grad_scale,
                        Tensor* dh, Tensor* dw, Tensor& workspace, Tensor& loss_sum,
                        Tensor* outside) {
  require_scalar_sum(loss_sum, "head_cross_entropy");
  if (outside) require_scalar_sum(*outside, "head_cross_entropy");
  require_f32(h, "head_cross_entropy", "h");
  require_f32(w, "head_cross_entropy", "w");
  require(targets, DType::i32, "head_cross_entropy", "targets");
  require_f32(workspace, "head_cross_entropy", "workspace");
  MOETRON_CHECK(h.cols() == w.cols() && targets.numel() == h.rows(), "head_cross_entropy: h ",
                shape_str(h.shape()), " w ", shape_str(w.shape()), " ", targets.numel(),
                " targets");
  MOETRON_CHECK(workspace.numel() >= ce_workspace_size(h.rows(), w.rows(), h.device()),
                "head_cross_entropy: workspace too small");
  MOETRON_CHECK((dh == nullptr) == (dw == nullptr), "head_cross_entropy: dh and dw go together");
  const Tensor none;
  if (dh) {
    require_f32(*dh, "head_cross_entropy", "dh");
    require_f32(*dw, "head_cross_entropy", "dw");
    MOETRON_CHECK(dh->numel() == h.numel() && dw->numel() == w.numel(),
                  "head_cross_entropy: grads");
  }
  backend_of("head_cross_entropy", {&h, &w, &targets, &workspace, &loss_sum, dh ? dh : &none,
                                    dw ? dw : &none, outside ? outside : &none})
      .head_cross_entropy(h, w, targets, grad_scale, dh, dw, workspace, loss_sum, outside);
}

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s) {
  for (const Tensor* t : {static_cast<const Tensor*>(&param), &grad, static_cast<const Tensor*>(&m),
                          static_cast<const Tensor*>(&v)})
    require_f32(*t, "adamw", "a tensor");
  require_same_numel(param, grad, "adamw");
  require_same_numel(param, m, "adamw");
  require_same_numel(param, v, "adamw");
  MOETRON_CHECK(s.step >= 1, "adamw: step counts from 1");
  backend_of("adamw", {&param, &grad, &m, &v}).adamw(param, grad, m, v, s);
}

template <typename T>
Tensor from_host(std::span<const T> values, Device device) {
  Tensor t = Tensor::empty({static_cast<int64_t>(values.size())}, dtype_of<T>(), device);
  copy_from_host(values, t);
  return t;
}

template <typename T>
void copy_from_host(std::span<const T> values, Tensor& t) {
  MOETRON_CHECK(t.dtype() == dtype_of<T>() && t.numel() == static_cast<int64_t>(values.size()),
                "copy_from_host: ", values.size(), " values into ", shape_str(t.shape()), " ",
                dtype_name(t.dtype()));
  if (values.empty()) return;
  backend(t.device()).copy_bytes(t.raw_data(), t.device(), values.data(), Device{}, t.bytes());
}

template <typename T>
std::vector<T> to_host(const Tensor& t) {
  MOETRON_CHECK(t.dtype() == dtype_of<T>(), "to_host: a ", dtype_name(t.dtype()), " tensor");
  std::vector<T> out(static_cast<size_t>(t.numel()));
  if (!out.empty())
    backend(t.device()).copy_bytes(out.data(), Device{}, t.raw_data(), t.device(), t.bytes());
  return out;
}

Tensor to_device(const Tensor& t, Device device) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  if (t.numel() == 0) return out;
  // Through the host when neither side is: a device backend copies to and from the host.
  if (t.device().kind != DeviceKind::cpu && device.kind != DeviceKind::cpu) {
    const Tensor host = to_device(t, Device{});
    return to_device(host, device);
  }
  Backend& b = backend(device.kind == DeviceKind::cpu ? t.device() : device);
  b.copy_bytes(out.raw_data(), device, t.raw_data(), t.device(), t.bytes());
  return out;
}

template Tensor from_host<int32_t>(std::span<const int32_t>, Device);
template Tensor from_host<int64_t>(std::span<const int64_t>, Device);
template Tensor from_host<float>(std::span<const float>, Device);
template void copy_from_host<int32_t>(std::span<const int32_t>, Tensor&);
template void copy_from_host<int64_t>(std::span<const int64_t>, Tensor&);
template void copy_from_host<float>(std::span<const float>, Tensor&);
template std::vector<int32_t> to_host<int32_t>(const Tensor&);
template std::vector<int64_t> to_host<int64_t>(const Tensor&);
template std::vector<float> to_host<float>(const Tensor&);
template std::vector<double> to_host<double>(const Tensor&);

}  // namespace moetron::ops
