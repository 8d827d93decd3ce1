#include "models/head.h"

#include <algorithm>

namespace moetron {

OutputHead::OutputHead(ParamRef weight, const ops::VocabShard& shard, const ModelDims& d,
                       const Runtime& rt)
    : weight_(weight), shard_(shard), tp_comm_(rt.tp.comm) {
  const int64_t rows = d.rows(), cols = rt.tp.padded_share(d.vocab);
  if (!tp_comm_) {
    chunk_rows_ = rows;
    workspace_ = rt.empty({ops::ce_workspace_size(rows, cols, rt.device)});
    return;
  }
  // About 8 MiB of logits per chunk, as the fused single-rank kernel.
  chunk_rows_ = std::clamp<int64_t>((int64_t{1} << 21) / cols, 1, rows);
  workspace_ = rt.empty({chunk_rows_, cols});
  stats_ = rt.empty({chunk_rows_, 3});
  all_stats_ = rt.empty({static_cast<int64_t>(rt.tp.size), chunk_rows_, 3});
  lse_ = rt.empty({chunk_rows_});
}

void OutputHead::loss(const Tensor& h, const Tensor& targets, float grad_weight, Tensor* dh,
                      Tensor& loss_sum, Tensor* outside) {
  const float grad_scale = grad_weight / static_cast<float>(h.rows());
  if (tp_comm_) {
    sharded_loss(h, targets, grad_scale, dh, loss_sum, outside);
    return;
  }
  Tensor dw = weight_.grad();
  ops::head_cross_entropy(h, weight_.value(), targets, grad_scale, dh, dh ? &dw : nullptr,
                          workspace_, loss_sum, outside);
}

void OutputHead::sharded_loss(const Tensor& h, const Tensor& targets, float grad_scale, Tensor* dh,
                              Tensor& loss_sum, Tensor* outside) {
  const Tensor w = weight_.value();
  Tensor dw = weight_.grad();
  for (int64_t r0 = 0; r0 < h.rows(); r0 += chunk_rows_) {
    const int64_t n = std::min(chunk_rows_, h.rows() - r0);
    const Tensor hc = h.slice(r0, r0 + n);
    const Tensor tc = targets.slice(r0, r0 + n);
    Tensor logits = workspace_.slice(0, n), stats = stats_.slice(0, n), lse = lse_.slice(0, n);
    ops::matmul(hc, false, w, true, logits);
    ops::ce_shard_stats(logits, tc, shard_, stats, outside);
    Tensor all = all_stats_.view(0, {all_stats_.dim(0), n, 3});
    tp_comm_->all_gather(stats, all);
    ops::ce_combine_stats(all, lse, loss_sum);
    if (!dh) continue;
    ops::ce_shard_backward(logits, tc, shard_, lse, grad_scale);
    Tensor dhc = dh->slice(r0, r0 + n);
    ops::matmul(logits, false, w, false, dhc);
    ops::matmul(logits, true, hc, false, dw, 1.0f, 1.0f);
  }
  if (dh) tp_comm_->all_reduce(*dh);  // each rank's vocabulary block adds its part
}

}  // namespace moetron
