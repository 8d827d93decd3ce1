#include "models/embedding.h"

#include "core/ops.h"

namespace moetron {

Embedding::Embedding(ParamTable& params, int64_t vocab, int64_t hidden)
    : table_(params.add("model.embed_tokens.weight", {vocab, hidden}, ParamKind::embedding,
                        {ShardGroup::tensor, 0})) {}

void Embedding::forward(std::span<const int32_t> ids, Tensor& out) const {
  ops::embedding_forward(ids, table_.value(), out);
}

void Embedding::backward(std::span<const int32_t> ids, const Tensor& dout) const {
  Tensor g = table_.grad();
  ops::embedding_backward(ids, dout, g);
}

}  // namespace moetron
