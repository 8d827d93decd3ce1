// The whole network: embedding, L blocks, final norm, head, and D MTP modules (docs/model.md).
// Parameters live in one ParamTable; activations are allocated once for the micro-batch shape.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/block.h"
#include "models/dims.h"
#include "models/embedding.h"
#include "models/head.h"
#include "models/mtp.h"

namespace moetron {
namespace config {
class ModelConfig;
}

struct Losses {
  double total = 0.0;       // main + lambda / D * sum(mtp) + aux
  double main = 0.0;        // mean CE of the main head
  std::vector<double> mtp;  // mean CE of each MTP module, unweighted
  double aux = 0.0;         // MoE balance losses of every MoE layer, weighted
};

// One MoE layer over one optimizer step (all its micro-batches).
struct MoeStepStats {
  std::string name;             // e.g. "model.layers.3.mlp.gate"
  std::vector<int64_t> counts;  // assignments per expert, summed over micro-batches
  int64_t dropped = 0;
  double entropy = 0, seq_aux = 0, aux = 0, z = 0;  // sums over micro-batches (from the sums)
  int64_t micro_batches = 0;
  // This rank's dispatch (not reduced over ranks): rows sent, those that left the rank, the
  // rows its experts received from other ranks, and every row its experts computed.
  int64_t rows_sent = 0, rows_off_rank = 0, rows_received_off_rank = 0, rows_received = 0;
  // (max load - mean load) / mean load.
  double max_violation() const;
};

class Model {
 public:
  // dims: the model's sizes at its micro-batch shape; rt: the device and this rank's place in a
  // parallel job (the default: the CPU, one rank alone).
  explicit Model(const ModelDims& dims, const Runtime& rt = {});
  // The model of a config at this micro-batch shape: Model(model_dims(cfg, batch, seq), rt),
  // defined in models/model_config.cc (library moetron_models; the CUDA-only build, which has
  // no Protobuf, builds the layers alone: moetron_layers).
  Model(const config::ModelConfig& cfg, int64_t batch, int64_t seq, const Runtime& rt = {});
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelDims& dims() const { return dims_; }
  const Runtime& runtime() const { return rt_; }
  ParamTable& params() { return params_; }
  const ParamTable& params() const { return params_; }

  // The scalars of forward passes stay on the device, in a sums tensor (new_sums(): [sums_size()]
  // f64), until the caller reads them, once per step: each head's cross-entropy summed over
  // the rows (main head, then MTP modules 1..D), then each MoE layer's balance losses and
  // routing entropy (ops::BalanceSum order), then how many token and target ids the passes
  // found outside the vocabulary (counted on the device, so checking them costs no read of its
  // own; losses() raises on any). Every pass adds to them.
  Tensor new_sums() const;
  int64_t sums_size() const;
  // The mean losses of `passes` passes from their sums (read to the host), lambda = mtp_weight;
  // an Error if the passes met ids outside the vocabulary.
  Losses losses(std::span<const double> sums, int64_t passes, float mtp_weight) const;

  // windows: [batch, window()] token ids. Adds grad_scale * d(total)/d(param) into the gradient
  // buffer (zero it between optimizer steps) and the pass's scalars into sums; mtp_weight is
  // lambda. With a hook set, it is called with each gradient-ready unit (ParamTable::units()) as
  // soon as backward has finished that unit's gradients, in unit order 0, 1, ... (data
  // parallelism starts reducing them then).
  using GradReadyHook = std::function<void(int unit)>;
  void forward_backward(std::span<const int32_t> windows, float mtp_weight, float grad_scale,
                        Tensor& sums, const GradReadyHook& on_ready = {});
  void evaluate(std::span<const int32_t> windows, Tensor& sums);
  // One pass with its losses read back (tests).
  Losses forward_backward(std::span<const int32_t> windows, float mtp_weight, float grad_scale);
  Losses evaluate(std::span<const int32_t> windows, float mtp_weight);
  // The main head's next-token logits for `tokens` ([batch, seq] ids, no targets): [rows, vocab]
  // of this rank's vocabulary block (the whole vocabulary at tp = 1).
  Tensor logits(std::span<const int32_t> tokens);

  // The layers, which the decoder (models/decoder.h) runs position by position.
  const Embedding& embedding() const { return embed_; }
  Block& block(int64_t layer) { return *blocks_.at(static_cast<size_t>(layer)); }
  RMSNorm& final_norm() { return final_norm_; }
  MtpModule& mtp(int64_t k) { return *mtp_.at(static_cast<size_t>(k - 1)); }  // k = 1..D
  const ParamRef& head_weight() const { return head_weight_; }
  // Every block's token mixer: the main blocks, then the MTP blocks (QK-clip).
  std::vector<TokenMixer*> mixers();

  // Matmul FLOPs of one forward + backward per token (3x forward), for MFU; MoE layers count
  // only the experts a token is routed to.
  double train_flops_per_token() const;

  // Per optimizer step: begin_step() makes the bf16 copies of the weights (bf16 precision; also
  // made by evaluate and logits), clears the mixers' largest logits and the MoE statistics
  // that each forward_backward adds to; moe_step_stats() returns them with the balance sums of the
  // step's `sums` (read to the host); update_router_biases() applies the aux-loss-free rule with
  // the step's loads (this rank's, or as the trainer reduced them over the data-parallel group).
  // `step` is the 0-based index of the step just taken.
  void begin_step();
  std::vector<MoeStepStats> moe_step_stats(std::span<const double> sums) const;
  void update_router_biases(int64_t step, const std::vector<MoeStepStats>& loads);

 private:
  void run(std::span<const int32_t> windows, float mtp_weight, bool backward, float grad_scale,
           Tensor& sums, const GradReadyHook& on_ready);
  // Where MoE layer i's balance sums start in a sums tensor.
  int64_t moe_sums(size_t i) const {
    return 1 + dims_.mtp_depth + ops::kBalanceSums * static_cast<int64_t>(i);
  }
  // Where the count of ids outside the vocabulary is, after the MoE layers' sums.
  int64_t outside_sum() const { return moe_sums(moe_layers_.size()); }
  // Gradient-ready units, in the order backward finishes them: the MTP modules (last first),
  // the final norm with the head, the blocks (last first), the embedding.
  int unit_of(const ParamInfo& p) const;
  int head_unit() const { return static_cast<int>(dims_.mtp_depth); }
  int block_unit(int64_t layer) const {
    return head_unit() + 1 + static_cast<int>(dims_.layers - 1 - layer);
  }
  int embedding_unit() const { return head_unit() + 1 + static_cast<int>(dims_.layers); }
  void gather_tokens(std::span<const int32_t> windows);

  Runtime rt_;
  ModelDims dims_;
  ParamTable params_;
  RopeTables rope_;
  Embedding embed_;
  std::vector<std::unique_ptr<Block>> blocks_;
  RMSNorm final_norm_;
  ParamRef head_weight_;
  std::vector<std::unique_ptr<MtpModule>> mtp_;
  OutputHead head_;
  std::vector<MoE*> moe_layers_;  // every MoE FFN: main blocks, then MTP blocks
  std::vector<MoeStepStats> moe_step_;

  // ids_[k] / targets_[k]: inputs and targets of depth k (0 = main), [rows] i32 each, gathered
  // from the windows on the host (staged_) and copied once per micro-batch.
  std::vector<int32_t> staged_;
  std::vector<Tensor> ids_, targets_;
  std::vector<Tensor> x_;  // block inputs/outputs, L + 1 of [rows, hidden]
  Tensor h0_, dh0_, dx_a_, dx_b_;
  std::vector<Tensor> emb_, d_head_in_, d_emb_, d_prev_;  // per MTP module
};

}  // namespace moetron
