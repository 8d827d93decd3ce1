#include "models/decode_step.h"

#include "core/ops.h"
#include "core/ops_decode.h"
#include "models/linear.h"

namespace moetron {

const Tensor& TransposedWeights::of(const Tensor& w) {
  auto [it, added] = copies_.try_emplace(key(w));
  if (added) {
    it->second = Tensor::empty({w.cols(), w.rows()}, DType::f32, w.device());
    ops::transpose(w, it->second);
  }
  return it->second;
}

std::span<const Tensor> TransposedWeights::of(std::span<const Tensor> ws) {
  if (ws.empty()) return {};
  auto [it, added] = groups_.try_emplace({key(ws.front()), ws.size()});
  if (added)
    for (const Tensor& w : ws) it->second.push_back(of(w));
  return it->second;
}

void linear_forward(const Tensor& x, const Tensor& w, Tensor& y, const DecodeStep* step) {
  if (step && step->fixed_order)
    ops::linear_rows(x, step->weights.of(w), y);
  else
    linear_forward(x, w, y);
}

void grouped_forward(const Tensor& x, std::span<const Tensor> ws, const Tensor& offsets, Tensor& y,
                     const DecodeStep* step) {
  if (!step || !step->fixed_order) {
    ops::grouped_matmul(x, ws, offsets, y);
    return;
  }
  ops::grouped_linear_rows(x, step->weights.of(ws), offsets, y);
}

}  // namespace moetron
