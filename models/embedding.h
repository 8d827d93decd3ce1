// Token embedding table [vocab, hidden] (model.embed_tokens.weight).
#pragma once

#include <span>

#include "models/params.h"

namespace moetron {

class Embedding {
 public:
  Embedding(ParamTable& params, int64_t vocab, int64_t hidden);
  void forward(std::span<const int32_t> ids, Tensor& out) const;
  // The table's gradient accumulates.
  void backward(std::span<const int32_t> ids, const Tensor& dout) const;
  const ParamRef& table() const { return table_; }

 private:
  ParamRef table_;
};

}  // namespace moetron
