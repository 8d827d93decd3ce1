// Host C++ (g++): the cuDNN frontend is a header-only C++ library over cuDNN's backend API.
#include "core/cuda/attention_graph.h"

#include <cudnn_frontend.h>

#include <algorithm>
#include <exception>
#include <iostream>
#include <unordered_map>

#include "core/check.h"

namespace moetron::cuda {
namespace {

namespace fe = cudnn_frontend;
using fe::graph::Graph;
using TensorRef = std::shared_ptr<fe::graph::Tensor_attributes>;

// moetron's rows [B, T, n, d] as cuDNN's [B, n, T, d], by strides (no copy).
fe::graph::Tensor_attributes rows(const char* name, int64_t b, int64_t t, int64_t n, int64_t d) {
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_dim({b, n, t, d})
      .set_stride({t * n * d, d, n * d, 1});
}

// A value per (batch, head, query) [B, H, T], fp32.
fe::graph::Tensor_attributes per_query(const char* name, int64_t b, int64_t t, int64_t h) {
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_dim({b, h, t, 1})
      .set_stride({h * t, t, 1, 1})
      .set_data_type(fe::DataType_t::FLOAT);
}

void set_rows(const TensorRef& x, int64_t b, int64_t t, int64_t n, int64_t d) {
  x->set_output(true).set_dim({b, n, t, d}).set_stride({t * n * d, d, n * d, 1});
}

// bf16 in and out, fp32 inside; sm > 0 sets the target architecture (no GPU needed to validate).
std::shared_ptr<Graph> new_graph(int sm) {
  auto g = std::make_shared<Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  if (sm > 0) g->set_sm_version(sm);
  return g;
}

struct ForwardGraph {
  std::shared_ptr<Graph> graph;
  TensorRef q, k, v, out, lse, row_max;
};

ForwardGraph forward_graph(const AttentionShape& s, int sm) {
  const int64_t b = s.batch, t = s.seq;
  ForwardGraph f{new_graph(sm), {}, {}, {}, {}, {}, {}};
  f.q = f.graph->tensor(rows("q", b, t, s.heads, s.head_dim));
  f.k = f.graph->tensor(rows("k", b, t, s.kv_heads, s.head_dim));
  f.v = f.graph->tensor(rows("v", b, t, s.kv_heads, s.value_dim));
  auto attrs = fe::graph::SDPA_attributes()
                   .set_name("attention")
                   .set_generate_stats(true)
                   .set_causal_mask(true)
                   .set_attn_scale(s.scale);
  if (s.row_max) {
    f.row_max = f.graph->tensor(per_query("row_max", b, t, s.heads));
    f.row_max->set_output(true);
    attrs.set_logit_max(f.row_max);
  }
  auto [out, stats] = f.graph->sdpa(f.q, f.k, f.v, attrs);
  set_rows(out, b, t, s.heads, s.value_dim);
  stats->set_output(true)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim({b, s.heads, t, 1})
      .set_stride({s.heads * t, t, 1, 1});
  f.out = out;
  f.lse = stats;
  return f;
}

struct BackwardGraph {
  std::shared_ptr<Graph> graph;
  TensorRef q, k, v, out, dout, lse, dq, dk, dv;
};

BackwardGraph backward_graph(const AttentionShape& s, int sm) {
  const int64_t b = s.batch, t = s.seq;
  BackwardGraph g{new_graph(sm), {}, {}, {}, {}, {}, {}, {}, {}, {}};
  g.q = g.graph->tensor(rows("q", b, t, s.heads, s.head_dim));
  g.k = g.graph->tensor(rows("k", b, t, s.kv_heads, s.head_dim));
  g.v = g.graph->tensor(rows("v", b, t, s.kv_heads, s.value_dim));
  g.out = g.graph->tensor(rows("out", b, t, s.heads, s.value_dim));
  g.dout = g.graph->tensor(rows("dout", b, t, s.heads, s.value_dim));
  g.lse = g.graph->tensor(per_query("lse", b, t, s.heads));
  const auto attrs = fe::graph::SDPA_backward_attributes()
                         .set_name("attention_backward")
                         .set_causal_mask(true)
                         .set_attn_scale(s.scale);
  auto [dq, dk, dv] = g.graph->sdpa_backward(g.q, g.k, g.v, g.out, g.dout, g.lse, attrs);
  set_rows(dq, b, t, s.heads, s.head_dim);
  set_rows(dk, b, t, s.kv_heads, s.head_dim);
  set_rows(dv, b, t, s.kv_heads, s.value_dim);
  g.dq = dq;
  g.dk = dk;
  g.dv = dv;
  return g;
}

cudnnHandle_t raw(const CudnnHandle& h) {
  return static_cast<cudnnHandle_t>(h.get());
}

void ok(fe::error_t e, const AttentionShape& s, const char* step) {  // get_message is not const
  if (!e.is_good())
    throw Error(
        detail::concat("cuDNN attention (", describe(s), "): ", step, ": ", e.get_message()));
}

void build(Graph& g, cudnnHandle_t h, const AttentionShape& s, const char* which) {
  const std::string what = which;
  ok(g.validate(), s, (what + " validate").c_str());
  ok(g.build_operation_graph(h), s, (what + " build_operation_graph").c_str());
  ok(g.create_execution_plans({fe::HeurMode_t::A}), s, (what + " create_execution_plans").c_str());
  ok(g.check_support(h), s, (what + " check_support").c_str());
  ok(g.build_plans(), s, (what + " build_plans").c_str());
}

int64_t workspace_of(const Graph& g, const AttentionShape& s) {
  int64_t bytes = 0;
  ok(g.get_workspace_size(bytes), s, "get_workspace_size");
  return bytes;
}

void run(const Graph& g, cudnnHandle_t h, std::unordered_map<TensorRef, void*>& pack,
         void* workspace, const AttentionShape& s, const char* which) {
  ok(g.execute(h, pack, workspace), s, which);
}

}  // namespace

size_t cudnn_version() {
  return cudnnGetVersion();
}

std::string describe(const AttentionShape& s) {
  return detail::concat("heads ", s.heads, ", kv_heads ", s.kv_heads, ", head_dim ", s.head_dim,
                        ", value_dim ", s.value_dim, ", seq ", s.seq, ", batch ", s.batch);
}

std::string attention_graph_problem(const AttentionShape& s, int sm) {
  if (fe::error_t e = forward_graph(s, sm).graph->validate(); !e.is_good())
    return "forward: " + e.get_message();
  if (fe::error_t e = backward_graph(s, sm).graph->validate(); !e.is_good())
    return "backward: " + e.get_message();
  return "";
}

CudnnHandle::CudnnHandle() {
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t status = cudnnCreate(&h);
  if (status != CUDNN_STATUS_SUCCESS)
    throw Error(std::string("cudnnCreate: ") + cudnnGetErrorString(status) +
                " (cuDNN needs a visible GPU)");
  handle_ = h;
}

CudnnHandle::~CudnnHandle() {
  cudnnDestroy(static_cast<cudnnHandle_t>(handle_));
}

struct AttentionGraphs::Impl {
  cudnnHandle_t handle;
  AttentionShape shape;
  ForwardGraph fwd;
  BackwardGraph bwd;
  size_t workspace = 0;
};

AttentionGraphs::AttentionGraphs(const CudnnHandle& handle, const AttentionShape& shape)
    : impl_(new Impl{raw(handle), shape, forward_graph(shape, 0), backward_graph(shape, 0), 0}) {
  build(*impl_->fwd.graph, impl_->handle, shape, "forward");
  build(*impl_->bwd.graph, impl_->handle, shape, "backward");
  impl_->workspace = static_cast<size_t>(
      std::max(workspace_of(*impl_->fwd.graph, shape), workspace_of(*impl_->bwd.graph, shape)));
}

AttentionGraphs::~AttentionGraphs() = default;

const AttentionShape& AttentionGraphs::shape() const {
  return impl_->shape;
}

size_t AttentionGraphs::workspace_bytes() const {
  return impl_->workspace;
}

// The frontend's variant pack takes void*; inputs are only read.
void AttentionGraphs::forward(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                              uint16_t* out, float* lse, float* row_max, void* workspace) const {
  const ForwardGraph& f = impl_->fwd;
  MOETRON_CHECK((row_max != nullptr) == impl_->shape.row_max, "row_max as the shape says");
  std::unordered_map<TensorRef, void*> pack{{f.q, const_cast<uint16_t*>(q)},
                                            {f.k, const_cast<uint16_t*>(k)},
                                            {f.v, const_cast<uint16_t*>(v)},
                                            {f.out, out},
                                            {f.lse, lse}};
  if (row_max != nullptr) pack.emplace(f.row_max, row_max);
  run(*f.graph, impl_->handle, pack, workspace, impl_->shape, "forward execute");
}

void AttentionGraphs::backward(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                               const uint16_t* out, const uint16_t* dout, const float* lse,
                               uint16_t* dq, uint16_t* dk, uint16_t* dv, void* workspace) const {
  const BackwardGraph& g = impl_->bwd;
  std::unordered_map<TensorRef, void*> pack{{g.q, const_cast<uint16_t*>(q)},
                                            {g.k, const_cast<uint16_t*>(k)},
                                            {g.v, const_cast<uint16_t*>(v)},
                                            {g.out, const_cast<uint16_t*>(out)},
                                            {g.dout, const_cast<uint16_t*>(dout)},
                                            {g.lse, const_cast<float*>(lse)},
                                            {g.dq, dq},
                                            {g.dk, dk},
                                            {g.dv, dv}};
  run(*g.graph, impl_->handle, pack, workspace, impl_->shape, "backward execute");
}

AttentionGraphCache::AttentionGraphCache() = default;
AttentionGraphCache::~AttentionGraphCache() = default;

const AttentionGraphs* AttentionGraphCache::forward(const AttentionShape& shape) {
  return find_or_build(shape, false);
}

const AttentionGraphs* AttentionGraphCache::backward(const AttentionShape& shape) {
  return find_or_build(shape, true);
}

const AttentionGraphs* AttentionGraphCache::find_or_build(const AttentionShape& shape,
                                                          bool any_row_max) {
  for (const Entry& e : entries_) {
    AttentionShape have = e.shape;
    if (any_row_max) have.row_max = shape.row_max;
    if (have == shape) return e.graphs.get();
  }
  Entry e{shape, nullptr};
  if (no_cudnn_) {
    entries_.push_back(std::move(e));
    return nullptr;
  }
  // Any failure, cuDNN's, the frontend's (which throws its own exceptions) or the handle's (a
  // sub-library that does not load), leaves the shape to moetron's kernel rather than the run.
  try {
    if (!handle_) handle_ = std::make_unique<CudnnHandle>();
    e.graphs = std::make_unique<AttentionGraphs>(*handle_, shape);
  } catch (const std::exception& err) {
    no_cudnn_ = !handle_;
    std::cerr << "moetron: cuDNN's fused attention cannot run " << describe(shape) << " ("
              << err.what() << "): " << (no_cudnn_ ? "every shape's" : "this shape's")
              << " bf16 attention runs moetron's own kernel\n";
  }
  entries_.push_back(std::move(e));
  return entries_.back().graphs.get();
}

}  // namespace moetron::cuda
