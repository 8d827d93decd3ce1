// The whole network: embedding, L blocks, final norm, head, and D MTP modules (docs/model.md).
// Parameters live in one ParamTable; activations are allocated once for the micro-batch shape.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "configs/moetron.pb.h"
#include "models/block.h"
#include "models/dims.h"
#include "models/embedding.h"
#include "models/head.h"
#include "models/mtp.h"

namespace moetron {

struct Losses {
  double total = 0.0;       // main + lambda / D * sum(mtp)
  double main = 0.0;        // mean CE of the main head
  std::vector<double> mtp;  // mean CE of each MTP module, unweighted
};

class Model {
 public:
  Model(const config::ModelConfig& cfg, int64_t batch, int64_t seq);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelDims& dims() const { return dims_; }
  ParamTable& params() { return params_; }
  const ParamTable& params() const { return params_; }

  // windows: [batch, window()] token ids. Adds grad_scale * d(total)/d(param) into the gradient
  // buffer (zero it between optimizer steps); mtp_weight is lambda.
  Losses forward_backward(std::span<const int32_t> windows, float mtp_weight, float grad_scale);
  Losses evaluate(std::span<const int32_t> windows, float mtp_weight);

  // Matmul FLOPs of one forward + backward per token (3x forward), for MFU.
  double train_flops_per_token() const;

 private:
  Losses run(std::span<const int32_t> windows, float mtp_weight, bool backward, float grad_scale);
  void gather_tokens(std::span<const int32_t> windows);

  ModelDims dims_;
  ParamTable params_;
  RopeTables rope_;
  Embedding embed_;
  std::vector<std::unique_ptr<Block>> blocks_;
  RMSNorm final_norm_;
  ParamRef head_weight_;
  std::vector<std::unique_ptr<MtpModule>> mtp_;
  OutputHead head_;

  // ids_[k] / targets_[k]: inputs and targets of depth k (0 = main), [rows] each.
  std::vector<std::vector<int32_t>> ids_, targets_;
  std::vector<Tensor> x_;  // block inputs/outputs, L + 1 of [rows, hidden]
  Tensor h0_, dh0_, dx_a_, dx_b_;
  std::vector<Tensor> emb_, d_head_in_, d_emb_, d_prev_;  // per MTP module
};

}  // namespace moetron
