// The GATED_DELTANET mixer: Gated DeltaNet linear attention (arXiv 2412.06464), as Qwen3-Next
// and Qwen3.5 use it (docs/model.md has the equations):
//   [q | k | v], z, b, a = x [W_q; W_k; W_v; W_z; W_b; W_a]^T   (one fused GEMM)
//   [q | k | v] = silu(causal depthwise conv([q | k | v]))      (conv1d_q, _k, _v: one conv)
//   q = l2norm(q) / sqrt(dk), k = l2norm(k), beta = sigmoid(b), g = -exp(A_log) softplus(a +
//   dt_bias) o = the gated delta rule (core/ops_linear_attention.h) over q, k, v, g, beta y =
//   out_proj(rmsnorm(o) * norm.weight * silu(z))            (per value head)
// Value heads are a multiple of key heads; value head h reads key head h / (Hv / Hk).
// Parameters keep moetron's split names (in_proj_q, in_proj_k, ...; conv1d_q, ...): the Qwen3.5
// export concatenates them into in_proj_qkv and conv1d (docs/export.md).
//
// Tensor parallelism splits by heads, as Megatron-Core's: each rank holds Hk/tp key heads and
// their Hv/tp value heads, with their projection rows, conv channels, A_log and dt_bias;
// out_proj is row-parallel; norm.weight is replicated and its gradient summed over the group.
//
// Decoding state: the conv window [K - 1, conv channels] and the recurrent state [Hv, dk, dv],
// both independent of the sequence length; the decoder rolls them back by recomputation
// (models/decoder.h).
#pragma once

#include <string>

#include "models/mixer.h"
#include "models/row_buffer.h"

namespace moetron {

class GatedDeltaNet final : public TokenMixer {
 public:
  GatedDeltaNet(ParamTable& params, const std::string& prefix, const ModelDims& dims,
                const Runtime& rt);
  void backward(const Tensor& dy, const Tensor& x, Tensor& dx) override;
  // [K - 1, conv channels] (the last inputs of the conv) and [Hv, dk, dv] (the state).
  std::vector<Shape> decode_state(int64_t max_len) const override;
  bool recurrent() const override { return true; }
  // No softmax logits: nothing to measure or clip.
  Tensor& max_logits() override { return max_logits_; }
  void reset_max_logits() override {}
  void qk_clip(std::span<const float> /*gamma*/) override {}

 private:
  void run(const Tensor& x, Tensor& y, const DecodeStep* step) override;
  // The projection's parts, the conv, the norms and the gates of n rows (training: the saved
  // activations; decoding: step buffers).
  struct Parts {
    Tensor proj, qkv_pre, z, b, a, conv_pre, conv, q_raw, k_raw, v, q, k, qr, kr, g, beta;
  };
  void project(const Tensor& x, Parts& p, const DecodeStep* step);
  void normalize(Parts& p);

  const ParamTable& params_;
  GatedDeltaNetDims dims_;  // this rank's heads
  int64_t batch_, seq_, rows_;
  float eps_, q_scale_;
  Communicator* tp_comm_;
  ParamRef in_q_, in_a_;  // in_proj_q .. in_proj_a, adjacent: one fused matrix
  ParamRef conv_q_, conv_v_;
  ParamRef a_log_, dt_bias_, norm_, out_proj_;
  Parts t_;  // training activations, saved for backward
  Tensor core_, states_, normed_, nrstd_;
  Tensor max_logits_;  // empty: no softmax
  // Gradient scratch.
  Tensor dnormed_, dcore_, dz_, dq_, dk_, dv_, dg_, dbeta_, dq_raw_, dk_raw_, dconv_, dqkv_pre_,
      da_, db_, dproj_, dnorm_w_;
  // Decoding.
  RowBuffer d_proj_, d_qkv_pre_, d_z_, d_b_, d_a_, d_conv_, d_q_raw_, d_k_raw_, d_v_, d_q_, d_k_,
      d_qr_, d_kr_, d_g_, d_beta_, d_core_, d_normed_, d_nrstd_;
};

}  // namespace moetron
