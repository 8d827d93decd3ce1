#include "trainer/muon.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "core/ops_decode.h"

namespace moetron {
namespace {

// The quintic Newton-Schulz coefficients of Keller Jordan's Muon, as Moonlight and Kimi K2 use
// them.
constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f;

}  // namespace

void newton_schulz(Tensor& x, int steps, NewtonSchulzScratch& scratch) {
  const int64_t m = x.rows(), n = x.cols(), k = std::min(m, n);
  const Device device = x.device();
  // X / (||X||_F + 1e-7); the norm is read once per matrix.
  Tensor sum = Tensor::zeros({1}, DType::f64, device);
  ops::sum_squares(x, sum);
  ops::scale(x, static_cast<float>(1.0 / (std::sqrt(ops::to_host<double>(sum)[0]) + 1e-7)));
  // Wide (m <= n): A = X X^T, X = a X + B X. Tall: the same on X^T, written without the
  // transpose as A = X^T X, X = a X + X B (B is symmetric).
  const bool wide = m <= n;
  Tensor a = scratch.gram.rows(k, k), b = scratch.poly.rows(k, k);
  Tensor cur = x, next = scratch.next.rows(m, n);
  for (int s = 0; s < steps; ++s) {
    if (wide)
      ops::matmul(cur, false, cur, true, a);
    else
      ops::matmul(cur, true, cur, false, a);
    ops::copy(a, b);
    ops::matmul(a, false, a, false, b, kC, kB);  // B = c A^2 + b A
    ops::copy(cur, next);
    if (wide)
      ops::matmul(b, false, cur, false, next, 1.0f, kA);  // a X + B X
    else
      ops::matmul(cur, false, b, false, next, 1.0f, kA);  // a X + X B
    std::swap(cur, next);
  }
  if (cur.data<float>() != x.data<float>()) ops::copy(cur, x);  // the result in x's storage
}

Muon::Muon(ParamTable& params, const config::OptimizerConfig& cfg, ParamFilter holds, Groups groups)
    : params_(params), cfg_(cfg), holds_(std::move(holds)), g_(groups) {
  std::vector<int> ids;
  for (int id = 0; id < static_cast<int>(params.infos().size()); ++id) {
    const ParamInfo& p = params.info(id);
    if (p.kind != ParamKind::buffer && p.shape.size() == 2 && holds_(p.name, p.kind))
      ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end(),
            [&](int a, int b) { return params.info(a).offset < params.info(b).offset; });
  // Owners: in table order, each matrix to the rank of its group with the fewest elements so
  // far (lowest rank on ties). Every rank of a group holds the same matrices, so every rank
  // makes the same choice; tensor-parallel peers share a data-parallel rank and so an owner.
  std::vector<int64_t> dense_load(static_cast<size_t>(g_.dp ? g_.dp->size() : 1), 0);
  std::vector<int64_t> expert_load(static_cast<size_t>(g_.edp ? g_.edp->size() : 1), 0);
  int64_t n = 0;
  for (int id : ids) {
    const ParamInfo& p = params.info(id);
    std::vector<int64_t>& load = p.is_expert() ? expert_load : dense_load;
    const auto owner = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    load[static_cast<size_t>(owner)] += p.numel();
    Matrix m{id, owner};
    if (owns_matrix(m)) {
      m.at = n;
      n += p.numel();
      if (!ranges_.empty() && ranges_.back().second == p.offset)
        ranges_.back().second += p.numel();
      else
        ranges_.emplace_back(p.offset, p.offset + p.numel());
    }
    matrices_.push_back(m);
  }
  const Device device = params.flat_values().device();
  momentum_ = Tensor::zeros({std::max<int64_t>(n, 1)}, DType::f32, device);
  for (RowBuffer* b : {&update_, &gathered_, &whole_}) *b = RowBuffer(DType::f32, device);
  ns_ = NewtonSchulzScratch(device);
}

bool Muon::owns_matrix(const Matrix& m) const {
  const Communicator* group = group_of(params_.info(m.id));
  return (group ? group->rank() : 0) == m.owner;
}

checkpoint::StateSlot Muon::slot() const {
  return {"muon_momentum", holds_, ranges_, momentum_, checkpoint::StateSlot::Split::by_owner};
}

Tensor Muon::whole(const ParamInfo& p, const Tensor& local) {
  if (p.shard.group != ShardGroup::tensor || g_.tp_size == 1) return local;
  const int64_t rows = p.shape[0], cols = p.shape[1];
  const int tp = g_.tp_size;
  Tensor all = gathered_.rows(tp * rows, cols);
  g_.tp->all_gather(local, all);
  if (p.shard.dim == 0) return all;  // the row blocks in rank order: the whole matrix
  // Column blocks: [tp, rows, cols] -> [rows, tp, cols] = [rows, tp * cols].
  Tensor w = whole_.rows(rows, tp * cols);
  Tensor w3 = w.reshape({rows, tp, cols});
  ops::transpose01(all.reshape({tp, rows, cols}), w3);
  return w;
}

void Muon::own_block(const ParamInfo& p, const Tensor& w, Tensor& local) {
  if (p.shard.group != ShardGroup::tensor || g_.tp_size == 1) {
    if (w.data<float>() != local.data<float>()) ops::copy(w, local);
    return;
  }
  const int64_t rows = p.shape[0], cols = p.shape[1];
  const int tp = g_.tp_size, r = g_.tp_rank;
  if (p.shard.dim == 0) {
    ops::copy(w.slice(r * rows, (r + 1) * rows), local);
    return;
  }
  Tensor blocks = gathered_.rows(tp * rows, cols);
  Tensor b3 = blocks.reshape({tp, rows, cols});
  ops::transpose01(w.reshape({rows, tp, cols}), b3);
  ops::copy(blocks.slice(r * rows, (r + 1) * rows), local);
}

void Muon::step(double lr, double grad_norm) {
  Tensor& grads = params_.flat_grads();
  if (cfg_.grad_clip() > 0.0f) {
    // As AdamW clips (torch.nn.utils.clip_grad_norm_ over the global norm).
    const double coef = cfg_.grad_clip() / (grad_norm + 1e-6);
    if (coef < 1.0)
      for (const auto& [b, e] : ranges_) {
        Tensor g = grads.view(b, {e - b});
        ops::scale(g, static_cast<float>(coef));
      }
  }
  const config::MuonConfig& c = cfg_.muon();
  const float mu = c.momentum();
  for (const Matrix& mat : matrices_) {
    if (!owns_matrix(mat)) continue;
    const ParamInfo& p = params_.info(mat.id);
    const int64_t rows = p.shape[0], cols = p.shape[1];
    const Tensor g = params_.grad(mat.id).reshape({rows, cols});
    Tensor m = momentum_.view(mat.at, {rows, cols});
    ops::scale(m, mu);  // M = mu M + G
    ops::axpy(1.0f, g, m);
    Tensor u = update_.rows(rows, cols);
    if (c.nesterov()) {  // U = G + mu M
      ops::copy(g, u);
      ops::axpy(mu, m, u);
    } else {
      ops::copy(m, u);
    }
    Tensor w = whole(p, u);
    newton_schulz(w, c.ns_steps(), ns_);
    own_block(p, w, u);
    const double global_max = static_cast<double>(std::max(p.global_shape[0], p.global_shape[1]));
    const auto scale = static_cast<float>(lr * c.rms_scale() * std::sqrt(global_max));
    Tensor value = params_.value(mat.id).reshape({rows, cols});
    ops::scale(value, static_cast<float>(1.0 - lr * c.weight_decay()));
    ops::axpy(-scale, u, value);
  }
  // Every rank of a group gets its owners' updated matrices.
  for (const Matrix& mat : matrices_)
    if (Communicator* group = group_of(params_.info(mat.id))) {
      Tensor value = params_.value(mat.id);
      group->broadcast(value, mat.owner);
    }
}

}  // namespace moetron
