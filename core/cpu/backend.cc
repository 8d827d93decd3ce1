// The CPU backend: host memory and the kernels of core/cpu/, behind core/backend.h. Arguments
// arrive checked by core/ops*.cc; what is left here is taking pointers and the checks only the
// data can answer (token ids and expert indices in range).
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/backend.h"
#include "core/cpu/kernels.h"
#include "core/cpu/kernels_decode.h"
#include "core/cpu/kernels_linear_attention.h"
#include "core/cpu/router.h"
#include "core/kernels/host.h"
#include "core/memory_counter.h"
#include "core/ops.h"
#include "core/ops_linear_attention.h"

namespace moetron {
namespace {

// 64-byte alignment: one cache line, and what AVX-512 loads like best.
constexpr size_t kAlignment = 64;

// The first id outside [0, vocab) is an Error, or with `outside` set their number is added to it
// (ops::embedding_forward); the kernels read no row for those.
void check_ids(const Tensor& ids, int64_t vocab, const char* what, Tensor* outside) {
  const std::span<const int32_t> s = ids.span<int32_t>();
  auto is_outside = [vocab](int32_t id) { return id < 0 || id >= vocab; };
  if (outside != nullptr) {
    outside->data<double>()[0] +=
        static_cast<double>(std::count_if(s.begin(), s.end(), is_outside));
    return;
  }
  if (const auto it = std::find_if(s.begin(), s.end(), is_outside); it != s.end())
    throw Error(detail::concat(what, " id ", *it, " is outside the vocabulary [0, ", vocab, ")"));
}

cpu::Router router_of(const Tensor& logits, const ops::RouterConfig& c) {
  return {logits.rows(),    c.experts,    c.k,
          c.n_group,        c.topk_group, c.scoring == ops::Scoring::softmax,
          c.norm_topk_prob, c.scaling};
}

class CpuBackend final : public Backend {
 public:
  Device device() const override { return {}; }
  std::string name() const override { return std::string("cpu (") + cpu::gemm_backend() + ")"; }

  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
    if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
    memory_.allocated(bytes);
    return p;
  }
  void release(void* data, size_t bytes) noexcept override {
    std::free(data);
    memory_.released(bytes);
  }
  MemoryUse memory_use() const override { return memory_.use(); }
  void reset_peak() override { memory_.reset_peak(); }
  void copy_bytes(void* dst, Device, const void* src, Device, size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void zero_bytes(void* data, size_t bytes) override { std::memset(data, 0, bytes); }
  void synchronize() override {}

  void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float alpha,
              float beta) override {
    const int64_t m = ta ? a.cols() : a.rows(), k = ta ? a.rows() : a.cols();
    const int64_t n = tb ? b.rows() : b.cols();
    if (a.dtype() == DType::bf16) {
      cpu::gemm_bf16(ta, tb, m, n, k, alpha, static_cast<const uint16_t*>(a.raw_data()), a.cols(),
                     static_cast<const uint16_t*>(b.raw_data()), b.cols(), beta, c.data<float>(),
                     c.cols());
      return;
    }
    cpu::sgemm(ta, tb, m, n, k, alpha, a.data<float>(), a.cols(), b.data<float>(), b.cols(), beta,
               c.data<float>(), c.cols());
  }
  void grouped_matmul(const Tensor& x, std::span<const Tensor> weights, const Tensor& offsets,
                      Tensor& y) override {
    const int64_t* o = offsets.data<int64_t>();
    for (size_t e = 0; e < weights.size(); ++e) {
      if (o[e + 1] == o[e]) continue;
      Tensor ye = y.slice(o[e], o[e + 1]);
      ops::matmul(x.slice(o[e], o[e + 1]), false, weights[e], true, ye);
    }
  }
  void grouped_matmul_backward(const Tensor& dy, const Tensor& x, std::span<const Tensor> weights,
                               const Tensor& offsets, std::span<Tensor> dweights,
                               Tensor& dx) override {
    const int64_t* o = offsets.data<int64_t>();
    for (size_t e = 0; e < weights.size(); ++e) {
      if (o[e + 1] == o[e]) continue;
      const Tensor dye = dy.slice(o[e], o[e + 1]);
      ops::matmul(dye, true, x.slice(o[e], o[e + 1]), false, dweights[e], 1.0f, 1.0f);
      Tensor dxe = dx.slice(o[e], o[e + 1]);
      ops::matmul(dye, false, weights[e], false, dxe);
    }
  }
  void fill(Tensor& x, float value) override { cpu::fill(x.data<float>(), x.numel(), value); }
  void cast(const Tensor& src, Tensor& dst) override {
    if (src.dtype() == DType::f32)
      cpu::to_bf16(src.data<float>(), static_cast<uint16_t*>(dst.raw_data()), src.numel());
    else
      cpu::from_bf16(static_cast<const uint16_t*>(src.raw_data()), dst.data<float>(), src.numel());
  }
  void copy(const Tensor& src, Tensor& dst) override {
    cpu::copy_block(src.data<float>(), 0, dst.data<float>(), 0, 1, src.numel());
  }
  void add(const Tensor& a, const Tensor& b, Tensor& out) override {
    cpu::add(a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
  }
  void axpy(float alpha, const Tensor& x, Tensor& y) override {
    cpu::axpy(alpha, x.data<float>(), y.data<float>(), x.numel());
  }
  void scale(Tensor& x, float s) override { cpu::scale(x.data<float>(), x.numel(), s); }
  void sum_squares(const Tensor& x, Tensor& sum) override {
    sum.data<double>()[0] += cpu::sum_squares(x.data<float>(), x.numel());
  }
  void concat_cols(std::span<const Tensor> srcs, Tensor& dst) override {
    int64_t col = 0;
    for (const Tensor& s : srcs) {
      cpu::copy_block(s.data<float>(), s.cols(), dst.data<float>() + col, dst.cols(), s.rows(),
                      s.cols());
      col += s.cols();
    }
  }
  void split_cols(const Tensor& src, std::span<Tensor> dsts) override {
    int64_t col = 0;
    for (Tensor& d : dsts) {
      cpu::copy_block(src.data<float>() + col, src.cols(), d.data<float>(), d.cols(), d.rows(),
                      d.cols());
      col += d.cols();
    }
  }
  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                       Tensor& rstd) override {
    cpu::rmsnorm_forward(x.data<float>(), w.data<float>(), eps, y.data<float>(), rstd.data<float>(),
                         x.rows(), x.cols());
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        Tensor& dx, Tensor& dw, bool accumulate_dx) override {
    cpu::rmsnorm_backward(dy.data<float>(), x.data<float>(), w.data<float>(), rstd.data<float>(),
                          dx.data<float>(), dw.data<float>(), accumulate_dx, x.rows(), x.cols());
  }
  void concat_heads(const Tensor& a, const Tensor& b, Tensor& dst) override {
    cpu::concat_heads(a.data<float>(), b.data<float>(), dst.data<float>(), a.dim(0), a.dim(1),
                      a.dim(2), b.dim(2), b.dim(1) == 1);
  }
  void split_heads(const Tensor& src, Tensor& a, Tensor& b) override {
    cpu::split_heads(src.data<float>(), a.data<float>(), b.data<float>(), a.dim(0), a.dim(1),
                     a.dim(2), b.dim(2), b.dim(1) == 1);
  }
  void transpose01(const Tensor& src, Tensor& dst) override {
    cpu::transpose01(src.data<float>(), src.dim(0), src.dim(1), src.dim(2), dst.data<float>());
  }
  void rope_tables(const Tensor& inv_freq, float attention_factor, Tensor& cos,
                   Tensor& sin) override {
    cpu::rope_tables(cos.dim(0), cos.dim(1), inv_freq.data<float>(), attention_factor,
                     cos.data<float>(), sin.data<float>());
  }
  void rope(Tensor& x, const Tensor& cos, const Tensor& sin, ops::RopeStyle style,
            bool inverse) override {
    cpu::rope(x.data<float>(), cos.data<float>(), sin.data<float>(), x.dim(0), x.dim(1), x.dim(2),
              x.dim(3), cos.cols(), style == ops::RopeStyle::interleaved, inverse);
  }
  static cpu::AttentionShape shape_of(const Tensor& q, const Tensor& k, const Tensor& v,
                                      float scale) {
    return {q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), v.dim(3), scale};
  }
  // bf16 operands (ops::attention_forward): the fp32 kernels on rounded copies of the inputs,
  // their results rounded in place.
  static std::vector<float> rounded(const Tensor& t) {
    std::vector<float> r(static_cast<size_t>(t.numel()));
    cpu::round_bf16(t.data<float>(), r.data(), t.numel());
    return r;
  }
  static void round_in_place(Tensor& t) {
    cpu::round_bf16(t.data<float>(), t.data<float>(), t.numel());
  }
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         Tensor& out, Tensor& lse, Tensor* row_max, DType operands) override {
    const cpu::AttentionShape s = shape_of(q, k, v, scale);
    float* rm = row_max ? row_max->data<float>() : nullptr;
    if (operands == DType::f32) {
      cpu::attention_forward(s, q.data<float>(), k.data<float>(), v.data<float>(),
                             out.data<float>(), lse.data<float>(), rm);
      return;
    }
    const std::vector<float> rq = rounded(q), rk = rounded(k), rv = rounded(v);
    cpu::attention_forward(s, rq.data(), rk.data(), rv.data(), out.data<float>(), lse.data<float>(),
                           rm);
    round_in_place(out);
  }
  void head_max(const Tensor& row_max, Tensor& acc) override {
    cpu::head_max(row_max.data<float>(), row_max.dim(0), row_max.dim(1), row_max.dim(2),
                  acc.data<float>());
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          float scale, const Tensor& out, const Tensor& lse, Tensor& dq, Tensor& dk,
                          Tensor& dv, DType operands) override {
    const cpu::AttentionShape s = shape_of(q, k, v, scale);
    if (operands == DType::f32) {
      cpu::attention_backward(s, dout.data<float>(), q.data<float>(), k.data<float>(),
                              v.data<float>(), out.data<float>(), lse.data<float>(),
                              dq.data<float>(), dk.data<float>(), dv.data<float>());
      return;
    }
    const std::vector<float> rdout = rounded(dout), rq = rounded(q), rk = rounded(k),
                             rv = rounded(v);
    cpu::attention_backward(s, rdout.data(), rq.data(), rk.data(), rv.data(), out.data<float>(),
                            lse.data<float>(), dq.data<float>(), dk.data<float>(),
                            dv.data<float>());
    round_in_place(dq);
    round_in_place(dk);
    round_in_place(dv);
  }
  void swiglu_forward(const Tensor& gate_up, Tensor& out) override {
    cpu::swiglu_forward(gate_up.data<float>(), out.data<float>(), out.rows(), out.cols());
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate_up, Tensor& dgate_up) override {
    cpu::swiglu_backward(dout.data<float>(), gate_up.data<float>(), dgate_up.data<float>(),
                         dout.rows(), dout.cols());
  }
  void sigmoid_gate(const Tensor& x, const Tensor& gate, Tensor& y) override {
    cpu::sigmoid_gate_forward(x.data<float>(), gate.data<float>(), y.data<float>(), x.rows(),
                              x.cols(), gate.cols());
  }
  void sigmoid_gate_backward(const Tensor& dy, const Tensor& x, const Tensor& gate, Tensor& dx,
                             Tensor& dgate) override {
    cpu::sigmoid_gate_backward(dy.data<float>(), x.data<float>(), gate.data<float>(),
                               dx.data<float>(), dgate.data<float>(), x.rows(), x.cols(),
                               gate.cols());
  }
  static cpu::GatedDeltaShape delta_shape(const Tensor& q, const Tensor& v) {
    if (q.ndim() == 3)  // decoding: one sequence of n positions
      return {1, q.dim(0), q.dim(1), v.dim(1), q.dim(2), v.dim(2), ops::kGatedDeltaChunk};
    return {q.dim(0), q.dim(1), q.dim(2), v.dim(2), q.dim(3), v.dim(3), ops::kGatedDeltaChunk};
  }
  void gated_delta_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                           const Tensor& beta, Tensor& out, Tensor& states) override {
    cpu::gated_delta_forward(delta_shape(q, v), q.data<float>(), k.data<float>(), v.data<float>(),
                             g.data<float>(), beta.data<float>(), out.data<float>(),
                             states.data<float>());
  }
  void gated_delta_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& g, const Tensor& beta, const Tensor& states, Tensor& dq,
                            Tensor& dk, Tensor& dv, Tensor& dg, Tensor& dbeta) override {
    cpu::gated_delta_backward(delta_shape(q, v), dout.data<float>(), q.data<float>(),
                              k.data<float>(), v.data<float>(), g.data<float>(), beta.data<float>(),
                              states.data<float>(), dq.data<float>(), dk.data<float>(),
                              dv.data<float>(), dg.data<float>(), dbeta.data<float>());
  }
  void gated_delta_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                        const Tensor& beta, Tensor& state, Tensor& out) override {
    cpu::gated_delta_step(delta_shape(q, v), q.data<float>(), k.data<float>(), v.data<float>(),
                          g.data<float>(), beta.data<float>(), state.data<float>(),
                          out.data<float>());
  }
  void conv_silu_forward(const Tensor& x, const Tensor& w, Tensor& pre, Tensor& y) override {
    cpu::conv_silu_forward(x.data<float>(), w.data<float>(), pre.data<float>(), y.data<float>(),
                           x.dim(0), x.dim(1), x.dim(2), w.dim(1));
  }
  void conv_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& pre,
                          Tensor& dx, Tensor& dw) override {
    cpu::conv_silu_backward(dy.data<float>(), x.data<float>(), w.data<float>(), pre.data<float>(),
                            dx.data<float>(), dw.data<float>(), x.dim(0), x.dim(1), x.dim(2),
                            w.dim(1));
  }
  void conv_silu_step(const Tensor& x, const Tensor& w, Tensor& state, Tensor& y) override {
    cpu::conv_silu_step(x.data<float>(), w.data<float>(), state.data<float>(), y.data<float>(),
                        x.dim(0), x.dim(1), w.dim(1));
  }
  void l2norm_forward(const Tensor& x, float eps, float scale, Tensor& y, Tensor& rnorm) override {
    cpu::l2norm_forward(x.data<float>(), eps, scale, y.data<float>(), rnorm.data<float>(), x.rows(),
                        x.cols());
  }
  void l2norm_backward(const Tensor& dy, const Tensor& x, const Tensor& rnorm, float scale,
                       Tensor& dx) override {
    cpu::l2norm_backward(dy.data<float>(), x.data<float>(), rnorm.data<float>(), scale,
                         dx.data<float>(), x.rows(), x.cols());
  }
  void gdn_gates_forward(const Tensor& a, const Tensor& b, const Tensor& a_log,
                         const Tensor& dt_bias, Tensor& g, Tensor& beta) override {
    cpu::gdn_gates_forward(a.data<float>(), b.data<float>(), a_log.data<float>(),
                           dt_bias.data<float>(), g.data<float>(), beta.data<float>(), a.rows(),
                           a.cols());
  }
  void gdn_gates_backward(const Tensor& dg, const Tensor& dbeta, const Tensor& a,
                          const Tensor& a_log, const Tensor& dt_bias, const Tensor& beta,
                          Tensor& da, Tensor& db, Tensor& da_log, Tensor& ddt_bias) override {
    cpu::gdn_gates_backward(dg.data<float>(), dbeta.data<float>(), a.data<float>(),
                            a_log.data<float>(), dt_bias.data<float>(), beta.data<float>(),
                            da.data<float>(), db.data<float>(), da_log.data<float>(),
                            ddt_bias.data<float>(), a.rows(), a.cols());
  }
  void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, float eps,
                             Tensor& y, Tensor& rstd) override {
    cpu::gated_rmsnorm_forward(x.data<float>(), z.data<float>(), w.data<float>(), eps,
                               y.data<float>(), rstd.data<float>(), x.rows(), x.cols());
  }
  void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                              const Tensor& rstd, Tensor& dx, Tensor& dz, Tensor& dw) override {
    cpu::gated_rmsnorm_backward(dy.data<float>(), x.data<float>(), z.data<float>(), w.data<float>(),
                                rstd.data<float>(), dx.data<float>(), dz.data<float>(),
                                dw.data<float>(), x.rows(), x.cols());
  }
  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out,
                         const ops::VocabShard& s, Tensor* outside) override {
    check_ids(ids, s.vocab, "token", outside);
    cpu::embedding_forward(ids.data<int32_t>(), ids.numel(), table.data<float>(), s.first, s.valid,
                           table.cols(), out.data<float>());
  }
  void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dtable,
                          const ops::VocabShard& s) override {
    // The forward's ids, checked or counted there; ids outside this block add nothing.
    cpu::embedding_backward(ids.data<int32_t>(), ids.numel(), dout.data<float>(), dout.cols(),
                            dtable.data<float>(), s.first, s.valid);
  }
  int64_t ce_workspace_size(int64_t rows, int64_t vocab) override {
    return cpu::ce_chunk_rows(rows, vocab) * vocab;
  }
  void ce_shard_stats(const Tensor& logits, const Tensor& targets, const ops::VocabShard& s,
                      Tensor& stats, Tensor* outside) override {
    check_ids(targets, s.vocab, "target", outside);
    cpu::ce_shard_stats(logits.data<float>(), targets.data<int32_t>(), logits.rows(), logits.cols(),
                        s.first, s.valid, stats.data<float>());
  }
  void ce_combine_stats(const Tensor& all_stats, Tensor& lse, Tensor& loss_sum) override {
    const int64_t rows = lse.numel();
    loss_sum.data<double>()[0] += cpu::ce_combine_stats(
        all_stats.data<float>(), all_stats.numel() / (rows * 3), rows, lse.data<float>());
  }
  void ce_shard_backward(Tensor& logits, const Tensor& targets, const ops::VocabShard& s,
                         const Tensor& lse, float grad_scale) override {
    cpu::ce_shard_backward(logits.data<float>(), targets.data<int32_t>(), logits.rows(),
                           logits.cols(), s.first, s.valid, lse.data<float>(), grad_scale);
  }
  void head_cross_entropy(const Tensor& h, const Tensor& w, const Tensor& targets, float grad_scale,
                          Tensor* dh, Tensor* dw, Tensor& workspace, Tensor& loss_sum,
                          Tensor* outside) override {
    check_ids(targets, w.rows(), "target", outside);
    loss_sum.data<double>()[0] +=
        cpu::head_cross_entropy(h.data<float>(), w.data<float>(), targets.data<int32_t>(), h.rows(),
                                h.cols(), w.rows(), grad_scale, dh ? dh->data<float>() : nullptr,
                                dw ? dw->data<float>() : nullptr, workspace.data<float>());
  }
  void adamw(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const ops::AdamWStep& s) override {
    cpu::adamw(p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), p.numel(), s.lr,
               s.beta1, s.beta2, s.eps, s.weight_decay, s.step);
  }
  void router_forward(const Tensor& logits, const Tensor& bias, const ops::RouterConfig& cfg,
                      Tensor& scores, Tensor& topk_idx, Tensor& gates) override {
    cpu::router_forward(router_of(logits, cfg), logits.data<float>(), bias.data<float>(),
                        scores.data<float>(), topk_idx.data<int32_t>(), gates.data<float>());
  }
  void router_backward(const Tensor& dgates, const Tensor& scores, const Tensor& topk_idx,
                       const ops::RouterConfig& cfg, Tensor& dscores, Tensor& dlogits) override {
    cpu::router_backward(router_of(scores, cfg), dgates.data<float>(), scores.data<float>(),
                         topk_idx.data<int32_t>(), dscores.data<float>(), dlogits.data<float>());
  }
  void balance_losses(const Tensor& logits, const Tensor& scores, const Tensor& counts,
                      const ops::RouterConfig& rc, const ops::BalanceConfig& bc, float grad_scale,
                      Tensor* dscores, Tensor* dlogits, Tensor* sums) override {
    double out[ops::kBalanceSums];  // the kernel's order is BalanceSum's
    cpu::balance_losses(router_of(logits, rc),
                        {bc.seq_alpha, bc.aux_coeff, bc.z_coeff, bc.batch, bc.seq},
                        logits.data<float>(), scores.data<float>(), counts.data<int64_t>(),
                        grad_scale, dscores ? dscores->data<float>() : nullptr,
                        dlogits ? dlogits->data<float>() : nullptr, out);
    if (sums)
      for (int64_t i = 0; i < ops::kBalanceSums; ++i) sums->data<double>()[i] += out[i];
  }
  void plan_dispatch(const Tensor& topk_idx, const Tensor& scores, int64_t capacity,
                     ops::DispatchPlan& plan, ops::PlanSlice* slice) override {
    const int64_t experts = scores.cols();
    for (int32_t e : topk_idx.span<int32_t>())
      MOETRON_CHECK(e >= 0 && e < experts, "plan_dispatch: expert ", e, " of ", experts);
    cpu::plan_dispatch(topk_idx.data<int32_t>(), scores.data<float>(), topk_idx.rows(),
                       topk_idx.cols(), experts, capacity, plan.counts.data<int64_t>(),
                       plan.offsets.data<int64_t>(), plan.row_token.data<int32_t>(),
                       plan.slot_row.data<int32_t>(), &plan.rows, &plan.dropped);
    if (plan.host_offsets.defined()) {
      std::ranges::copy(plan.counts.span<int64_t>(), plan.host_counts.data<int64_t>());
      std::ranges::copy(plan.offsets.span<int64_t>(), plan.host_offsets.data<int64_t>());
    }
    if (slice) {
      std::vector<int64_t> scratch(static_cast<size_t>(2 * experts + 1));
      int64_t* counts = slice->host_counts.data<int64_t>();
      kernels::host::plan_slice(plan.row_token.data<int32_t>(), plan.slot_row.data<int32_t>(),
                                plan.offsets.data<int64_t>(), topk_idx.numel(), topk_idx.cols(),
                                experts, slice->begin, slice->end, counts,
                                slice->row_token.data<int32_t>(), slice->slot_row.data<int32_t>(),
                                scratch.data());
    }
  }
  void gather_rows(const Tensor& src, const Tensor& row_token, Tensor& dst) override {
    cpu::gather_rows(src.data<float>(), row_token.data<int32_t>(), row_token.numel(), src.cols(),
                     dst.data<float>());
  }
  void combine_rows(const Tensor& src, const Tensor& slot_row, const Tensor& weights, int64_t k,
                    Tensor& dst, bool accumulate) override {
    cpu::combine_rows(src.data<float>(), slot_row.data<int32_t>(),
                      weights.defined() ? weights.data<float>() : nullptr, dst.rows(), k,
                      dst.cols(), dst.data<float>(), accumulate);
  }
  void combine_rows_backward(const Tensor& dy, const Tensor& src, const Tensor& slot_row,
                             const Tensor& weights, int64_t k, Tensor& dsrc,
                             Tensor& dweights) override {
    cpu::combine_rows_backward(dy.data<float>(), src.data<float>(), slot_row.data<int32_t>(),
                               weights.data<float>(), dy.rows(), k, dy.cols(), dsrc.data<float>(),
                               dweights.data<float>());
  }
  void balance_bias_update(Tensor& bias, const Tensor& counts, float speed) override {
    cpu::balance_bias_update(bias.data<float>(), counts.data<int64_t>(), bias.numel(), speed);
  }
  void attention_decode(const Tensor& q, const Tensor& keys_t, const Tensor& values, int64_t start,
                        Tensor& out) override {
    cpu::attention_decode({q.dim(0), start, q.dim(1), values.dim(1), q.dim(2), values.dim(0)},
                          q.data<float>(), keys_t.data<float>(), values.data<float>(),
                          out.data<float>());
  }
  void attention_decode_latent(const Tensor& q, const Tensor& cache, int64_t start, float scale,
                               Tensor& out) override {
    cpu::attention_decode_latent({q.dim(0), q.dim(1), start, q.dim(2), out.dim(2), scale},
                                 q.data<float>(), cache.data<float>(), out.data<float>());
  }
  void store_keys(const Tensor& k, int64_t start, Tensor& keys_t) override {
    cpu::store_keys(k.data<float>(), k.dim(0), k.dim(1), k.dim(2), start, keys_t.dim(2),
                    keys_t.data<float>());
  }
  void linear_rows(const Tensor& x, const Tensor& wt, Tensor& y) override {
    cpu::linear_rows(x.data<float>(), x.rows(), x.cols(), wt.data<float>(), wt.cols(),
                     y.data<float>());
  }
  void transpose(const Tensor& src, Tensor& dst) override {
    cpu::transpose(src.data<float>(), src.rows(), src.cols(), dst.data<float>());
  }

 private:
  MemoryCounter memory_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace moetron
