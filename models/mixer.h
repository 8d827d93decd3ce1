// The token-mixing slot of a block (attention: GQA and MLA; linear attention: Gated DeltaNet;
// sparse attention later), beside the FFN slot (models/feed_forward.h). A mixer owns its parameters
// and their names, its forward and backward for training, and its decoding path with the state it
// keeps per sequence (a KV cache, a latent cache, a recurrent state), whose shapes it declares. The
// block's mixer comes from the config's per-layer pattern (model.layer_types, ModelDims::mixers);
// docs/architecture.md says how to add one.
//
// Under tensor parallelism forward returns this rank's partial sum of the output and backward
// its partial sum of dx; the block sums them over the group.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/decode_step.h"
#include "models/dims.h"
#include "models/params.h"
#include "models/rope.h"
#include "models/runtime.h"

namespace moetron {

class TokenMixer {
 public:
  virtual ~TokenMixer() = default;
  // Training: x, y [batch * seq, hidden], causal within each sequence of the micro-batch;
  // forward saves what backward needs.
  void forward(const Tensor& x, Tensor& y) { run(x, y, nullptr); }
  // Decoding (models/decode_step.h, one rank): x, y [n, hidden] at positions [step.start, + n),
  // step.state this layer's decoding state.
  void forward(const Tensor& x, Tensor& y, const DecodeStep& step) { run(x, y, &step); }
  // dx is overwritten; parameter gradients accumulate.
  virtual void backward(const Tensor& dy, const Tensor& x, Tensor& dx) = 0;
  // The shapes of the tensors of one sequence's decoding state for up to max_len positions
  // (DecodeStep::state, in this order), f32 on the model's device.
  virtual std::vector<Shape> decode_state(int64_t max_len) const = 0;
  // Whether that state is a running summary of every position so far (a recurrent state)
  // rather than one entry per position (a KV cache): the decoder cannot forget positions of a
  // recurrent state by truncation and recomputes instead (models/decoder.h).
  virtual bool recurrent() const { return false; }

  // QK-clip (MuonClip, docs/optimizers.md). The largest pre-softmax logit (scaled q.k) of each
  // of this rank's heads over the training forwards since reset_max_logits(): [heads] f32.
  virtual Tensor& max_logits() = 0;
  virtual void reset_max_logits() = 0;
  // Rescales head h's query and key weights so that its logits scale by gamma[h] (in (0, 1]; 1
  // leaves the head untouched).
  virtual void qk_clip(std::span<const float> gamma) = 0;

 protected:
  virtual void run(const Tensor& x, Tensor& y, const DecodeStep* step) = 0;
};

// The mixer `kind` with its parameters registered under prefix (e.g. "model.layers.3.self_attn.").
std::unique_ptr<TokenMixer> make_mixer(MixerKind kind, ParamTable& params,
                                       const std::string& prefix, const ModelDims& dims,
                                       const RopeTables& rope, const Runtime& rt);

}  // namespace moetron
