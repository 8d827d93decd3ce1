// Shape and device checks for every op, then the kernel of the tensors' device.
#include "core/ops.h"

#include <algorithm>

#include "core/cpu/kernels.h"

namespace moetron::ops {
namespace {

void require_cpu_f32(const Tensor& t, const char* op, const char* what) {
  MOETRON_CHECK(t.defined(), op, ": ", what, " is undefined");
  MOETRON_CHECK(t.dtype() == DType::f32, op, ": ", what, " must be f32, is ",
                dtype_name(t.dtype()));
  // The CUDA kernels plug in here; until then every tensor lives on the CPU.
  MOETRON_CHECK(t.device().kind == DeviceKind::cpu, op, ": ", what, " is on ",
                device_name(t.device()), ", which has no kernel in this build");
}

void require_same_numel(const Tensor& a, const Tensor& b, const char* op) {
  MOETRON_CHECK(a.numel() == b.numel(), op, ": ", shape_str(a.shape()), " vs ",
                shape_str(b.shape()));
}

}  // namespace

void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) {
  require_cpu_f32(a, "matmul", "a");
  require_cpu_f32(b, "matmul", "b");
  require_cpu_f32(c, "matmul", "c");
  const int64_t m = trans_a ? a.cols() : a.rows(), k = trans_a ? a.rows() : a.cols();
  const int64_t kb = trans_b ? b.cols() : b.rows(), n = trans_b ? b.rows() : b.cols();
  MOETRON_CHECK(k == kb && c.rows() == m && c.cols() == n, "matmul: ", shape_str(a.shape()),
                trans_a ? "^T" : "", " x ", shape_str(b.shape()), trans_b ? "^T" : "", " -> ",
                shape_str(c.shape()));
  cpu::sgemm(trans_a, trans_b, m, n, k, alpha, a.data<float>(), a.cols(), b.data<float>(), b.cols(),
             beta, c.data<float>(), c.cols());
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
  require_cpu_f32(x, "fill", "x");
  cpu::fill(x.data<float>(), x.numel(), value);
}

void copy(const Tensor& src, Tensor& dst) {
  require_cpu_f32(src, "copy", "src");
  require_cpu_f32(dst, "copy", "dst");
  require_same_numel(src, dst, "copy");
  cpu::copy_block(src.data<float>(), 0, dst.data<float>(), 0, 1, src.numel());
}

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  require_cpu_f32(a, "add", "a");
  require_cpu_f32(b, "add", "b");
  require_cpu_f32(out, "add", "out");
  require_same_numel(a, b, "add");
  require_same_numel(a, out, "add");
  cpu::add(a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  require_cpu_f32(x, "axpy", "x");
  require_cpu_f32(y, "axpy", "y");
  require_same_numel(x, y, "axpy");
  cpu::axpy(alpha, x.data<float>(), y.data<float>(), x.numel());
}

void scale(Tensor& x, float s) {
  require_cpu_f32(x, "scale", "x");
  cpu::scale(x.data<float>(), x.numel(), s);
}

double sum_squares(const Tensor& x) {
  require_cpu_f32(x, "sum_squares", "x");
  return cpu::sum_squares(x.data<float>(), x.numel());
}

bool all_finite(const Tensor& x) {
  require_cpu_f32(x, "all_finite", "x");
  return cpu::all_finite(x.data<float>(), x.numel());
}

void concat_cols(std::span<const Tensor> srcs, Tensor& dst) {
  require_cpu_f32(dst, "concat_cols", "dst");
  int64_t col = 0;
  for (const Tensor& s : srcs) {
    require_cpu_f32(s, "concat_cols", "src");
    MOETRON_CHECK(s.rows() == dst.rows(), "concat_cols: rows ", s.rows(), " vs ", dst.rows());
    cpu::copy_block(s.data<float>(), s.cols(), dst.data<float>() + col, dst.cols(), s.rows(),
                    s.cols());
    col += s.cols();
  }
  MOETRON_CHECK(col == dst.cols(), "concat_cols: ", col, " columns into ", dst.cols());
}

void split_cols(const Tensor& src, std::span<Tensor> dsts) {
  require_cpu_f32(src, "split_cols", "src");
  int64_t col = 0;
  for (Tensor& d : dsts) {
    require_cpu_f32(d, "split_cols", "dst");
    MOETRON_CHECK(d.rows() == src.rows(), "split_cols: rows ", d.rows(), " vs ", src.rows());
    cpu::copy_block(src.data<float>() + col, src.cols(), d.data<float>(), d.cols(), d.rows(),
                    d.cols());
    col += d.cols();
  }
  MOETRON_CHECK(col == src.cols(), "split_cols: ", col, " columns from ", src.cols());
}

void rmsnorm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& y, Tensor& rstd) {
  require_cpu_f32(x, "rmsnorm", "x");
  require_cpu_f32(weight, "rmsnorm", "weight");
  require_cpu_f32(y, "rmsnorm", "y");
  require_cpu_f32(rstd, "rmsnorm", "rstd");
  MOETRON_CHECK(weight.numel() == x.cols() && y.numel() == x.numel() && rstd.numel() == x.rows(),
                "rmsnorm: x ", shape_str(x.shape()), " weight ", shape_str(weight.shape()));
  cpu::rmsnorm_forward(x.data<float>(), weight.data<float>(), eps, y.data<float>(),
                       rstd.data<float>(), x.rows(), x.cols());
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      Tensor& dx, Tensor& dweight, bool accumulate_dx) {
  require_cpu_f32(dy, "rmsnorm_backward", "dy");
  require_cpu_f32(dx, "rmsnorm_backward", "dx");
  require_cpu_f32(dweight, "rmsnorm_backward", "dweight");
  MOETRON_CHECK(dy.numel() == x.numel() && dx.numel() == x.numel() &&
                    dweight.numel() == weight.numel() && rstd.numel() == x.rows(),
                "rmsnorm_backward: shapes");
  cpu::rmsnorm_backward(dy.data<float>(), x.data<float>(), weight.data<float>(), rstd.data<float>(),
                        dx.data<float>(), dweight.data<float>(), accumulate_dx, x.rows(), x.cols());
}

void rope_tables(int64_t seq, int64_t head_dim, float theta, Tensor& cos, Tensor& sin) {
  MOETRON_CHECK(head_dim % 2 == 0, "rope: head_dim ", head_dim, " must be even");
  require_cpu_f32(cos, "rope_tables", "cos");
  require_cpu_f32(sin, "rope_tables", "sin");
  MOETRON_CHECK(cos.numel() == seq * head_dim / 2 && sin.numel() == cos.numel(), "rope tables");
  cpu::rope_tables(seq, head_dim, theta, cos.data<float>(), sin.data<float>());
}

void rope(Tensor& x, const Tensor& cos, const Tensor& sin, RopeStyle style, bool inverse) {
  require_cpu_f32(x, "rope", "x");
  MOETRON_CHECK(x.ndim() == 4 && x.dim(3) % 2 == 0, "rope: x must be [B, T, H, even hd], is ",
                shape_str(x.shape()));
  MOETRON_CHECK(cos.numel() >= x.dim(1) * x.dim(3) / 2 && cos.cols() == x.dim(3) / 2,
                "rope: tables ", shape_str(cos.shape()), " too small for ", shape_str(x.shape()));
  cpu::rope(x.data<float>(), cos.data<float>(), sin.data<float>(), x.dim(0), x.dim(1), x.dim(2),
            x.dim(3), style == RopeStyle::interleaved, inverse);
}

namespace {
cpu::AttentionShape attention_shape(const Tensor& q, const Tensor& k, const Tensor& v) {
  require_cpu_f32(q, "attention", "q");
  require_cpu_f32(k, "attention", "k");
  require_cpu_f32(v, "attention", "v");
  MOETRON_CHECK(q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape() && q.dim(0) == k.dim(0) &&
                    q.dim(1) == k.dim(1) && q.dim(3) == k.dim(3) && q.dim(2) % k.dim(2) == 0,
                "attention: q ", shape_str(q.shape()), " k ", shape_str(k.shape()), " v ",
                shape_str(v.shape()));
  return {q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3)};
}
}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                       Tensor& lse) {
  const cpu::AttentionShape s = attention_shape(q, k, v);
  require_cpu_f32(out, "attention", "out");
  require_cpu_f32(lse, "attention", "lse");
  MOETRON_CHECK(out.shape() == q.shape() && lse.numel() == s.batch * s.heads * s.seq,
                "attention: out ", shape_str(out.shape()), " lse ", shape_str(lse.shape()));
  cpu::attention_forward(s, q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                         lse.data<float>());
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv) {
  const cpu::AttentionShape s = attention_shape(q, k, v);
  MOETRON_CHECK(dout.shape() == q.shape() && out.shape() == q.shape() && dq.shape() == q.shape() &&
                    dk.shape() == k.shape() && dv.shape() == v.shape() &&
                    lse.numel() == s.batch * s.heads * s.seq,
                "attention_backward: shapes");
  cpu::attention_backward(s, dout.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(),
                          out.data<float>(), lse.data<float>(), dq.data<float>(), dk.data<float>(),
                          dv.data<float>());
}

void swiglu_forward(const Tensor& gate_up, Tensor& out) {
  require_cpu_f32(gate_up, "swiglu", "gate_up");
  require_cpu_f32(out, "swiglu", "out");
  MOETRON_CHECK(gate_up.rows() == out.rows() && gate_up.cols() == 2 * out.cols(),
                "swiglu: gate_up ", shape_str(gate_up.shape()), " out ", shape_str(out.shape()));
  cpu::swiglu_forward(gate_up.data<float>(), out.data<float>(), out.rows(), out.cols());
}

void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) {
  require_cpu_f32(dout, "swiglu_backward", "dout");
  require_cpu_f32(dgate_up, "swiglu_backward", "dgate_up");
  MOETRON_CHECK(gate_up.rows() == dout.rows() && gate_up.cols() == 2 * dout.cols() &&
                    dgate_up.numel() == gate_up.numel(),
                "swiglu_backward: shapes");
  cpu::swiglu_backward(dout.data<float>(), gate_up.data<float>(), dgate_up.data<float>(),
                       dout.rows(), dout.cols());
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

void check_ids(std::span<const int32_t> ids, int64_t vocab, const char* what) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab)
      throw Error(detail::concat(what, " id ", id, " is outside the vocabulary [0, ", vocab, ")"));
}

}  // namespace

void embedding_forward(std::span<const int32_t> ids, const Tensor& table, Tensor& out,
                       const VocabShard& shard) {
  require_cpu_f32(table, "embedding", "table");
  require_cpu_f32(out, "embedding", "out");
  MOETRON_CHECK(out.rows() == static_cast<int64_t>(ids.size()) && out.cols() == table.cols(),
                "embedding: ", ids.size(), " ids into ", shape_str(out.shape()));
  const VocabShard s = resolve(shard, table.rows());
  check_ids(ids, s.vocab, "token");
  cpu::embedding_forward(ids.data(), static_cast<int64_t>(ids.size()), table.data<float>(), s.first,
                         s.valid, table.cols(), out.data<float>());
}

void embedding_backward(std::span<const int32_t> ids, const Tensor& dout, Tensor& dtable,
                        const VocabShard& shard) {
  require_cpu_f32(dout, "embedding_backward", "dout");
  require_cpu_f32(dtable, "embedding_backward", "dtable");
  MOETRON_CHECK(dout.rows() == static_cast<int64_t>(ids.size()) && dout.cols() == dtable.cols(),
                "embedding_backward: shapes");
  const VocabShard s = resolve(shard, dtable.rows());
  for (int32_t id : ids)
    MOETRON_CHECK(id >= 0 && id < s.vocab, "embedding_backward: id ", id, " of ", s.vocab);
  cpu::embedding_backward(ids.data(), static_cast<int64_t>(ids.size()), dout.data<float>(),
                          dout.cols(), dtable.data<float>(), s.first, s.valid);
}

void ce_shard_stats(const Tensor& logits, std::span<const int32_t> targets, const VocabShard& shard,
                    Tensor& stats) {
  require_cpu_f32(logits, "ce_shard_stats", "logits");
  require_cpu_f32(stats, "ce_shard_stats", "stats");
  MOETRON_CHECK(
      static_cast<int64_t>(targets.size()) == logits.rows() && stats.numel() == logits.rows() * 3,
      "ce_shard_stats: ", targets.size(), " targets, logits ", shape_str(logits.shape()),
      ", stats ", shape_str(stats.shape()));
  const VocabShard s = resolve(shard, logits.cols());
  check_ids(targets, s.vocab, "target");
  cpu::ce_shard_stats(logits.data<float>(), targets.data(), logits.rows(), logits.cols(), s.first,
                      s.valid, stats.data<float>());
}

double ce_combine_stats(const Tensor& all_stats, Tensor& lse) {
  require_cpu_f32(all_stats, "ce_combine_stats", "all_stats");
  require_cpu_f32(lse, "ce_combine_stats", "lse");
  const int64_t rows = lse.numel();
  MOETRON_CHECK(rows > 0 && all_stats.numel() % (rows * 3) == 0,
                "ce_combine_stats: ", shape_str(all_stats.shape()), " for ", rows, " rows");
  return cpu::ce_combine_stats(all_stats.data<float>(), all_stats.numel() / (rows * 3), rows,
                               lse.data<float>());
}

void ce_shard_backward(Tensor& logits, std::span<const int32_t> targets, const VocabShard& shard,
                       const Tensor& lse, float grad_scale) {
  require_cpu_f32(logits, "ce_shard_backward", "logits");
  require_cpu_f32(lse, "ce_shard_backward", "lse");
  MOETRON_CHECK(
      static_cast<int64_t>(targets.size()) == logits.rows() && lse.numel() == logits.rows(),
      "ce_shard_backward: shapes");
  const VocabShard s = resolve(shard, logits.cols());
  cpu::ce_shard_backward(logits.data<float>(), targets.data(), logits.rows(), logits.cols(),
                         s.first, s.valid, lse.data<float>(), grad_scale);
}

int64_t ce_workspace_size(int64_t rows, int64_t vocab) {
  return cpu::ce_chunk_rows(rows, vocab) * vocab;
}

double head_cross_entropy(const Tensor& h, const Tensor& w, std::span<const int32_t> targets,
                          float grad_scale, Tensor* dh, Tensor* dw, Tensor& workspace) {
  require_cpu_f32(h, "head_cross_entropy", "h");
  require_cpu_f32(w, "head_cross_entropy", "w");
  require_cpu_f32(workspace, "head_cross_entropy", "workspace");
  MOETRON_CHECK(h.cols() == w.cols() && static_cast<int64_t>(targets.size()) == h.rows(),
                "head_cross_entropy: h ", shape_str(h.shape()), " w ", shape_str(w.shape()), " ",
                targets.size(), " targets");
  MOETRON_CHECK(workspace.numel() >= ce_workspace_size(h.rows(), w.rows()),
                "head_cross_entropy: workspace too small");
  MOETRON_CHECK((dh == nullptr) == (dw == nullptr), "head_cross_entropy: dh and dw go together");
  if (dh) {
    MOETRON_CHECK(dh->numel() == h.numel() && dw->numel() == w.numel(),
                  "head_cross_entropy: grads");
  }
  for (int32_t t : targets)
    if (t < 0 || t >= w.rows())
      throw Error(
          detail::concat("target id ", t, " is outside the vocabulary [0, ", w.rows(), ")"));
  return cpu::head_cross_entropy(h.data<float>(), w.data<float>(), targets.data(), h.rows(),
                                 h.cols(), w.rows(), grad_scale, dh ? dh->data<float>() : nullptr,
                                 dw ? dw->data<float>() : nullptr, workspace.data<float>());
}

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWStep& s) {
  require_same_numel(param, grad, "adamw");
  require_same_numel(param, m, "adamw");
  require_same_numel(param, v, "adamw");
  MOETRON_CHECK(s.step >= 1, "adamw: step counts from 1");
  cpu::adamw(param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
             param.numel(), s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.step);
}

}  // namespace moetron::ops
