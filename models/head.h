// The output head fused with cross-entropy: logits never exist beyond one chunk of rows. The
// weight is lm_head.weight, or the embedding table when tied. Under tensor parallelism each
// rank holds a block of the vocabulary and only the per-row statistics cross ranks (Megatron's
// vocabulary-parallel cross-entropy): no rank materialises the full logits.
#pragma once

#include "core/ops.h"
#include "models/dims.h"
#include "models/params.h"

namespace moetron {

class OutputHead {
 public:
  OutputHead(ParamRef weight, const ops::VocabShard& shard, const ModelDims& dims,
             const Runtime& rt);
  // Adds the CE summed over the rows of h [rows, hidden] (targets [rows] i32) into loss_sum
  // ([1] f64 on the device; the same on every tensor-parallel rank). With dh non-null, dh =
  // grad_weight * dmean/dh for the mean over the rows (the full gradient on every rank) and the
  // weight's gradient accumulates grad_weight * dmean/dW. Targets outside the vocabulary:
  // counted into `outside` ([1] f64) when set, else an Error (ops::embedding_forward).
  void loss(const Tensor& h, const Tensor& targets, float grad_weight, Tensor* dh, Tensor& loss_sum,
            Tensor* outside = nullptr);

 private:
  void sharded_loss(const Tensor& h, const Tensor& targets, float grad_scale, Tensor* dh,
                    Tensor& loss_sum, Tensor* outside);

  ParamRef weight_;
  ops::VocabShard shard_;
  Communicator* tp_comm_;
  int64_t chunk_rows_;
  Tensor workspace_;                // logits of one chunk
  Tensor stats_, all_stats_, lse_;  // tensor parallel: per-row statistics of one chunk
};

}  // namespace moetron
