#include "parallel/comm_volume.h"

#include <cmath>

namespace moetron {

std::map<std::string, double> expected_comm_bytes(const ModelDims& d, const ParamTable& params,
                                                  const Layout& l, int accum,
                                                  double routed_off_rank) {
  constexpr double f32 = 4, i64 = 8, f64 = 8;
  const double n = static_cast<double>(d.rows());  // tokens of a micro-batch
  const double h = static_cast<double>(d.hidden);
  const double depth = static_cast<double>(d.mtp_depth);
  const double blocks = static_cast<double>(d.layers + d.mtp_depth);
  double moe_layers = 0;
  for (int64_t i = 0; i < d.layers + d.mtp_depth; ++i) moe_layers += d.is_moe_layer(i) ? 1 : 0;
  const double experts = static_cast<double>(d.moe.experts), k = static_cast<double>(d.moe.k);
  std::map<std::string, double> bytes;

  // world: the squared gradient norm (one f64). (The trainer adds, for its metrics, each MoE
  // layer's rows per expert-parallel rank: M ep i64 with ep > 1.)
  bytes["world"] = l.world > 1 ? f64 : 0;

  // dp: the dense gradients (all-reduce, or with ZeRO-1 this rank's part reduce-scattered and
  // gathered back), the model's sums (one cross-entropy per head, four balance sums per MoE
  // layer and the count of ids outside the vocabulary, f64; Model::new_sums) and each MoE
  // layer's loads (experts + dropped + micro-batches as i64).
  const double dense = static_cast<double>(params.dense_numel());
  const double expert = static_cast<double>(params.numel() - params.dense_numel());
  if (l.dp > 1)
    bytes["dp"] = (l.zero1 ? 2.0 * dense / l.dp : dense) * f32 + (2 + depth) * f64 +
                  moe_layers * ((experts + 2) * i64 + 4 * f64);
  // edp: the expert gradients, likewise.
  if (l.edp() > 1) bytes["edp"] = (l.zero1 ? 2.0 * expert / l.edp() : expert) * f32;

  // tp, per micro-batch: forward, the embedding rows (main + each MTP depth) and each block's
  // attention and FFN outputs are summed (all-reduce of n x h); the head gathers 3 statistics per
  // row and depth. Backward: each block's two input gradients and the head's dh per depth are
  // summed; each MoE layer gathers its gates' gradients (n / tp x k).
  // Besides, in backward, the mixers sum their replicated weights' gradients: MLA its
  // down-projections and latent norms (without a q LoRA q_proj's rows are split, not
  // replicated), gated attention its q/k norms, Gated DeltaNet its gated norm; and each MoE
  // layer with a gated shared expert the gate's logit gradients (n).
  if (l.tp > 1) {
    const double act = n * h * f32;
    const double forward = (1 + depth) * act + 2 * blocks * act + (1 + depth) * n * 3 * f32;
    double backward = 2 * blocks * act + (1 + depth) * act + moe_layers * n / l.tp * k * f32;
    const auto f = [](int64_t v) { return static_cast<double>(v); };
    for (int64_t i = 0; i < d.layers + d.mtp_depth; ++i) {
      switch (d.mixer(i)) {
        case MixerKind::mla: {
          const MlaDims& a = d.mla;
          const double latent = f(a.kv_lora + a.rope) * h + f(a.kv_lora);
          backward += (a.q_lora > 0 ? latent + f(a.q_lora) * h + f(a.q_lora) : latent) * f32;
          break;
        }
        case MixerKind::attention:
          if (d.qk_norm) backward += 2 * f(d.head_dim) * f32;
          break;
        case MixerKind::gated_deltanet:
          backward += f(d.gdn.v_dim) * f32;
          break;
      }
      if (d.is_moe_layer(i) && d.moe.shared_gate) backward += n * f32;
    }
    bytes["tp"] = accum * (forward + backward);
  }

  // ep: the routed rows of this rank's token slice that leave it, and as many coming in when
  // routing is balanced (expected_ep_bytes).
  if (l.ep > 1) {
    const double rows = accum * moe_layers * n / l.tp * k * routed_off_rank;
    bytes["ep"] = expected_ep_bytes(d, l, accum, static_cast<int64_t>(std::llround(rows)),
                                    static_cast<int64_t>(std::llround(rows)));
  }
  return bytes;
}

double expected_ep_bytes(const ModelDims& d, const Layout& l, int accum, int64_t sent_off,
                         int64_t received_off) {
  if (l.ep <= 1) return 0;
  constexpr double f32 = 4, i64 = 8;
  double moe_layers = 0;
  for (int64_t i = 0; i < d.layers + d.mtp_depth; ++i) moe_layers += d.is_moe_layer(i) ? 1 : 0;
  // The counts: blocks of experts / ep i64 to each other rank, per micro-batch and MoE layer.
  const double counts = (l.ep - 1) * static_cast<double>(d.moe.experts) / l.ep * i64;
  return accum * moe_layers * counts +
         2 * static_cast<double>(sent_off + received_off) * static_cast<double>(d.hidden) * f32;
}

}  // namespace moetron
