// Where a model runs, handed to the model and each of its layers: the device its tensors live
// on and this rank's place in the tensor-parallel group (attention heads, FFN columns, the
// vocabulary, the tokens a MoE layer dispatches) and the expert-parallel group (routed experts),
// with their communicators. The default is the CPU and one rank alone: every group of size 1
// with no communicator, and every layer takes its single-process path. parallel/process_groups.h
// builds the real one; models/ never sees MPI or NCCL, only core/communicator.h. Layers take
// their share of an extent from here, so ModelDims holds the model's sizes alone.
#pragma once

#include <cstdint>

#include "core/communicator.h"
#include "core/tensor.h"
#include "models/params.h"

namespace moetron {

// One parallel group as a layer sees it.
struct Group {
  int size = 1, rank = 0;
  Communicator* comm = nullptr;  // null when size == 1

  // This rank's share of an extent that `size` divides, and of one padded up to a multiple of
  // `size` (the vocabulary).
  int64_t share(int64_t extent) const { return extent / size; }
  int64_t padded_share(int64_t extent) const { return (extent + size - 1) / size; }
  // This rank's block [local * rank, + local) of a tensor-parallel extent along `dim`.
  ShardSpec shard(int dim, int64_t local, int64_t global) const {
    return ShardSpec::tensor(dim, local * rank, global);
  }
};

struct Runtime {
  Device device;
  Group tp, ep;
  // The dtype of the projections' GEMM operands and of the attention's matrices: f32, or bf16
  // with fp32 master weights (config precision; docs/precision.md).
  DType compute = DType::f32;

  bool alone() const { return tp.size == 1 && ep.size == 1; }
  Tensor empty(Shape shape, DType dtype = DType::f32) const {
    return Tensor::empty(std::move(shape), dtype, device);
  }
};

}  // namespace moetron
