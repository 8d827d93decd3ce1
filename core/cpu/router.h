// CPU kernels of MoE routing and token permutation (docs/moe.md), behind core/ops.h.
#pragma once

#include <cstdint>

namespace moetron::cpu {

struct Router {
  int64_t tokens, experts, k, n_group, topk_group;
  bool softmax, norm_topk_prob;
  float scaling;
};

void router_forward(const Router& r, const float* logits, const float* bias, float* scores,
                    int32_t* topk_idx, float* gates);
void router_backward(const Router& r, const float* dgates, const float* scores,
                     const int32_t* topk_idx, float* dscores, float* dlogits);

struct Balance {
  float seq_alpha, aux_coeff, z_coeff;
  int64_t batch, seq;
};
// Returns {seq_aux, aux, z, entropy}; with dscores/dlogits non-null overwrites them with
// grad_scale * gradients.
void balance_losses(const Router& r, const Balance& b, const float* logits, const float* scores,
                    const int64_t* counts, float grad_scale, float* dscores, float* dlogits,
                    double out[4]);

// Assignments sorted by expert, stable in token order; with capacity > 0 each expert keeps its
// highest-score assignments (ties to the lower token). Fills counts [E], offsets [E + 1],
// row_token [N * k] (the first `rows` meant) and slot_row [N * k] (-1: dropped).
void plan_dispatch(const int32_t* topk_idx, const float* scores, int64_t tokens, int64_t k,
                   int64_t experts, int64_t capacity, int64_t* counts, int64_t* offsets,
                   int32_t* row_token, int32_t* slot_row, int64_t* rows, int64_t* dropped);
// bias[e] += speed * sign(mean(counts) - counts[e]).
void balance_bias_update(float* bias, const int64_t* counts, int64_t experts, float speed);

void gather_rows(const float* src, const int32_t* row_token, int64_t rows, int64_t dim, float* dst);
void combine_rows(const float* src, const int32_t* slot_row, const float* weights, int64_t tokens,
                  int64_t k, int64_t dim, float* dst, bool accumulate);
void combine_rows_backward(const float* dy, const float* src, const int32_t* slot_row,
                           const float* weights, int64_t tokens, int64_t k, int64_t dim,
                           float* dsrc, float* dweights);

}  // namespace moetron::cpu
