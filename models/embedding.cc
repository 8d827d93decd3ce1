#include "models/embedding.h"

#include <algorithm>

#include "core/ops.h"

namespace moetron {

Embedding::Embedding(ParamTable& params, const ModelDims& d, const ParallelContext& ctx)
    : table_(params.add("model.embed_tokens.weight", {d.local_vocab(), d.hidden},
                        ParamKind::embedding, d.tp_shard(0, d.local_vocab(), d.vocab))),
      tp_comm_(d.tp > 1 ? ctx.tp_comm : nullptr) {
  const int64_t first = d.local_vocab() * d.tp_rank;
  shard_ = {first, std::clamp<int64_t>(d.vocab - first, 0, d.local_vocab()), d.vocab};
}

void Embedding::forward(const Tensor& ids, Tensor& out) const {
  ops::embedding_forward(ids, table_.value(), out, shard_);
  if (tp_comm_) tp_comm_->all_reduce(out);  // each id's row comes from exactly one rank
}

void Embedding::backward(const Tensor& ids, const Tensor& dout) const {
  Tensor g = table_.grad();
  ops::embedding_backward(ids, dout, g, shard_);
}

}  // namespace moetron
