// Muon (Moonlight arXiv 2502.16982, Kimi K2 arXiv 2507.20534; docs/optimizers.md) over a set of
// matrices of the parameter table, each separately (every routed expert's too):
//   M = mu M + G;  U = G + mu M (Nesterov) or M;  O = Newton-Schulz(U)
//   W = W (1 - lr wd) - lr rms_scale sqrt(max(rows, cols)) O
// Newton-Schulz needs the whole matrix: a tensor-parallel shard is all-gathered over the TP
// group, every rank of it orthogonalizes the same whole matrix (Megatron's "duplicated" mode)
// and keeps its own block, so the ranks stay identical. Experts are whole on their EP rank.
// Every data-parallel rank computes every update (under ZeRO-1 from the gradients the train step
// gathers first), so the replicas stay identical too.
// The momentum of a shard is the rank's own (elementwise), saved like the values.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "configs/moetron.pb.h"
#include "core/communicator.h"
#include "models/params.h"
#include "models/row_buffer.h"
#include "parallel/grad_sync.h"

namespace moetron {

// Newton-Schulz orthogonalization in place: x [m, n] becomes approximately U S' V^T of its
// polar factor (S' in about [0.5, 1.5]) after `steps` quintic iterations, in fp32.
void newton_schulz(Tensor& x, int steps);

class Muon {
 public:
  // tp: the tensor-parallel group (size 1 and no communicator alone).
  Muon(ParamTable& params, const config::OptimizerConfig& cfg, ParamFilter holds,
       Communicator* tp_comm, int tp_size, int tp_rank);
  // Clips its gradients to cfg.grad_clip given the global norm, then one Muon step.
  void step(double lr, double grad_norm);
  // Its momentum, for checkpoints (/muon_momentum/NAME).
  checkpoint::StateSlot slot() const;

 private:
  struct Matrix {
    int id;
    int64_t at;  // where its momentum starts
  };
  // The whole matrix of `local` (param p's block): itself, or gathered over the TP group.
  Tensor whole(const ParamInfo& p, const Tensor& local);
  // This rank's block of the whole matrix `w` of p, into `local`.
  void own_block(const ParamInfo& p, const Tensor& w, Tensor& local);

  ParamTable& params_;
  config::OptimizerConfig cfg_;
  ParamFilter holds_;
  Communicator* tp_comm_;
  int tp_size_, tp_rank_;
  std::vector<Matrix> matrices_;
  std::vector<ElementRange> ranges_;
  Tensor momentum_;
  RowBuffer update_, gathered_, whole_;
};

}  // namespace moetron
