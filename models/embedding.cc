#include "models/embedding.h"

#include <algorithm>

#include "core/ops.h"

namespace moetron {

Embedding::Embedding(ParamTable& params, const ModelDims& d, const Runtime& rt)
    : table_(params.add("model.embed_tokens.weight", {rt.tp.padded_share(d.vocab), d.hidden},
                        ParamKind::embedding,
                        rt.tp.shard(0, rt.tp.padded_share(d.vocab), d.vocab))),
      tp_comm_(rt.tp.comm) {
  const int64_t local = rt.tp.padded_share(d.vocab), first = local * rt.tp.rank;
  shard_ = {first, std::clamp<int64_t>(d.vocab - first, 0, local), d.vocab};
}

void Embedding::forward(const Tensor& ids, Tensor& out, Tensor* outside) const {
  ops::embedding_forward(ids, table_.value(), out, shard_, outside);
  if (tp_comm_) tp_comm_->all_reduce(out);  // each id's row comes from exactly one rank
}

void Embedding::backward(const Tensor& ids, const Tensor& dout) const {
  Tensor g = table_.grad();
  ops::embedding_backward(ids, dout, g, shard_);
}

}  // namespace moetron
