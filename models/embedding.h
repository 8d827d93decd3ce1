// Token embedding table [vocab, hidden] (model.embed_tokens.weight). Under tensor parallelism
// each rank holds a block of the (padded) vocabulary and the rows are summed over the group.
#pragma once

#include "models/dims.h"
#include "models/params.h"

namespace moetron {

class Embedding {
 public:
  Embedding(ParamTable& params, const ModelDims& dims, const Runtime& rt);
  // ids [rows] i32. Ids outside the vocabulary: counted into `outside` ([1] f64) when set, else
  // an Error (ops::embedding_forward).
  void forward(const Tensor& ids, Tensor& out, Tensor* outside = nullptr) const;
  // The table's gradient accumulates (dout is the full gradient on every rank).
  void backward(const Tensor& ids, const Tensor& dout) const;
  const ParamRef& table() const { return table_; }
  const ops::VocabShard& shard() const { return shard_; }

 private:
  ParamRef table_;
  ops::VocabShard shard_;
  Communicator* tp_comm_;
};

}  // namespace moetron
