// How a layer's forward pass runs when the decoder (models/decoder.h) drives it instead of
// training: its rows are consecutive positions [start, start + n) of one sequence, a mixer
// writes what later positions need into its decoding state (attention: a KV cache; MLA: the
// latent cache) and reads every earlier position from it, and nothing is kept for a backward
// pass. The layers are the training layers (one implementation
// each); a layer given a DecodeStep takes its decoding path.
//
// Chunks of up to kFixedOrderRows positions (every decoding step and speculative verification)
// run their projections through the fixed-order kernels of core/ops_decode.h, so that a position
// gets the same bits fed alone or in a chunk and greedy speculative decoding reproduces plain
// greedy decoding exactly. Longer chunks (long prompts) take the GEMM; their positions agree
// with the fixed-order ones to fp32 rounding.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "models/rope.h"

namespace moetron {

inline constexpr int64_t kFixedOrderRows = 64;

// The transposed copies w^T of the matrices a decoder multiplies by, which the fixed-order
// kernels read: made on first use and kept, so they are valid only while the weights do not
// change (a decoder is made over a model that is not training).
class TransposedWeights {
 public:
  const Tensor& of(const Tensor& w);
  // The copies of a group of matrices (a layer's experts), found by one lookup.
  std::span<const Tensor> of(std::span<const Tensor> ws);

 private:
  // A matrix is its first element's address and its shape (fused views such as q|k|v start
  // where their first part does, with more rows); a group is its first matrix and its size.
  using Key = std::tuple<const float*, int64_t, int64_t>;
  static Key key(const Tensor& w) { return {w.data<float>(), w.rows(), w.cols()}; }
  std::map<Key, Tensor> copies_;
  std::map<std::pair<Key, size_t>, std::vector<Tensor>> groups_;
};

struct DecodeStep {
  TransposedWeights& weights;
  bool fixed_order;               // at most kFixedOrderRows positions: the fixed-order kernels
  int64_t start;                  // position of the first row
  const RopeTables& rope;         // rows covering every position the cache holds
  std::span<const Tensor> state;  // this layer's decoding state (TokenMixer::decode_state)

  // The same step for the layer whose state is `layer_state`.
  DecodeStep with_state(std::span<const Tensor> layer_state) const {
    return {weights, fixed_order, start, rope, layer_state};
  }
};

// y = x w^T (w [out, in], as linear layers store it): the training GEMM, or, decoding a chunk of
// at most kFixedOrderRows positions, the fixed-order kernel.
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, const DecodeStep* step);
// The experts' projections (grouped_matmul's contract) by the same rule.
void grouped_forward(const Tensor& x, std::span<const Tensor> ws, const Tensor& offsets, Tensor& y,
                     const DecodeStep* step);

}  // namespace moetron
