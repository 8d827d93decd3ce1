// Muon (Moonlight arXiv 2502.16982, Kimi K2 arXiv 2507.20534; docs/optimizers.md) over a set of
// matrices of the parameter table, each separately (every routed expert's too):
//   M = mu M + G;  U = G + mu M (Nesterov) or M;  O = Newton-Schulz(U)
//   W = W (1 - lr wd) - lr rms_scale sqrt(max(rows, cols)) O
// Newton-Schulz needs the whole matrix: a tensor-parallel shard is all-gathered over the TP
// group, every rank of it orthogonalizes the same whole matrix (Megatron's "duplicated" mode)
// and keeps its own block, so the ranks stay identical. Experts are whole on their EP rank.
// Each matrix has one owner among the ranks that hold it (the data-parallel group; for routed
// experts the expert-data-parallel group), chosen by size so that the ranks share the work:
// the owner (with its tensor-parallel peers) keeps the matrix's momentum and computes its
// update from the reduced gradient (under ZeRO-1 the train step gathers the reduced parts
// first), then broadcasts the updated matrix to the group.
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

// Newton-Schulz's working memory, kept across calls so that a step allocates nothing.
struct NewtonSchulzScratch {
  explicit NewtonSchulzScratch(Device device = {})
      : gram(DType::f32, device), poly(DType::f32, device), next(DType::f32, device) {}
  RowBuffer gram, poly, next;
};

// Newton-Schulz orthogonalization in place: x [m, n] becomes approximately U S' V^T of its
// polar factor (S' in about [0.5, 1.5]) after `steps` quintic iterations, in fp32.
void newton_schulz(Tensor& x, int steps, NewtonSchulzScratch& scratch);

class Muon {
 public:
  // The groups it works over (null: this rank alone): tp gathers shards for Newton-Schulz; dp
  // and edp are the data-parallel groups of dense and expert matrices, among whose ranks each
  // matrix has its owner.
  struct Groups {
    Communicator* tp = nullptr;
    int tp_size = 1, tp_rank = 0;
    Communicator* dp = nullptr;
    Communicator* edp = nullptr;
  };
  Muon(ParamTable& params, const config::OptimizerConfig& cfg, ParamFilter holds, Groups groups);
  // Clips its gradients to cfg.grad_clip given the global norm, then one Muon step.
  void step(double lr, double grad_norm);
  // Its momentum, for checkpoints (/muon_momentum/NAME): of the matrices this rank owns.
  checkpoint::StateSlot slot() const;

 private:
  struct Matrix {
    int id;
    int owner;        // rank in its group (dp, or edp for experts)
    int64_t at = -1;  // where its momentum starts, when this rank owns it
  };
  Communicator* group_of(const ParamInfo& p) const { return p.is_expert() ? g_.edp : g_.dp; }
  bool owns_matrix(const Matrix& m) const;
  // The whole matrix of `local` (param p's block): itself, or gathered over the TP group.
  Tensor whole(const ParamInfo& p, const Tensor& local);
  // This rank's block of the whole matrix `w` of p, into `local`.
  void own_block(const ParamInfo& p, const Tensor& w, Tensor& local);

  ParamTable& params_;
  config::OptimizerConfig cfg_;
  ParamFilter holds_;
  Groups g_;
  std::vector<Matrix> matrices_;
  std::vector<ElementRange> ranges_;
  Tensor momentum_;
  RowBuffer update_, gathered_, whole_;
  NewtonSchulzScratch ns_;
};

}  // namespace moetron
