// cuDNN's fused attention without a GPU: every attention shape the shipped configs ask for
// validates for Hopper (the cuDNN frontend checks a graph against an SM version's rules with no
// device), shapes Hopper cannot run are refused in cuDNN's words, and the GPU check's double
// reference agrees with the CPU backend's attention. Running the graphs needs a GPU: that is
// the GPU check's attention step (tests/gpu/attention_checks.cc) and Cuda.CudnnAttention*.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/cuda/attention_graph.h"
#include "core/ops.h"
#include "models/dims.h"
#include "models/model_config.h"
#include "tests/compare.h"
#include "tests/gpu/attention_reference.h"
#include "tests/random_values.h"

namespace moetron {
namespace {

using cuda::AttentionShape;

constexpr int kHopper = 90;

// The attention calls of a model at tensor parallelism tp: each rank holds heads / tp query
// heads and kv_heads / tp key/value heads (MLA expands its latent to every query head).
std::vector<AttentionShape> attention_shapes(const ModelDims& d, int64_t tp) {
  std::vector<AttentionShape> out;
  for (const MixerKind m : d.mixers) {
    if (m == MixerKind::attention)
      out.push_back({d.batch, d.seq, d.heads / tp, d.kv_heads / tp, d.head_dim, d.head_dim,
                     1.0f / std::sqrt(static_cast<float>(d.head_dim)), true});
    else if (m == MixerKind::mla)
      out.push_back({d.batch, d.seq, d.heads / tp, d.heads / tp, d.mla.qk(), d.mla.v,
                     1.0f / std::sqrt(static_cast<float>(d.mla.qk())), true});
  }
  return out;
}

TEST(CudnnAttention, EveryShippedConfigsAttentionValidatesForHopper) {
  int configs = 0;
  std::set<std::string> checked;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(MOETRON_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".pbtxt") continue;
    const config::RunConfig cfg = load_config(entry.path().string(), {});
    ++configs;
    const ModelDims d =
        model_dims(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len());
    for (const int64_t tp : {int64_t{1}, int64_t{2}, int64_t{4}}) {
      if (d.heads % tp != 0 || d.kv_heads % tp != 0) continue;
      for (const AttentionShape& s : attention_shapes(d, tp)) {
        if (!checked.insert(cuda::describe(s)).second) continue;
        std::cout << "  " << entry.path().filename().string() << " at tp " << tp << ": "
                  << cuda::describe(s) << "\n";
        EXPECT_EQ(cuda::attention_graph_problem(s, kHopper), "")
            << entry.path().filename() << " at tp " << tp << ": " << cuda::describe(s);
      }
    }
  }
  EXPECT_GE(configs, 5);
  std::cout << configs << " configs, " << checked.size()
            << " attention shapes validated for sm_90\n";
}

TEST(CudnnAttention, RefusesWhatHopperCannotRunInCudnnsWords) {
  const AttentionShape mla{2, 64, 8, 2, 192, 128, 0.07f, true};
  EXPECT_EQ(cuda::attention_graph_problem(mla, kHopper), "");  // MLA's widths, GQA 8 / 2

  AttentionShape odd = mla;
  odd.head_dim = 196;
  const std::string odd_problem = cuda::attention_graph_problem(odd, kHopper);
  EXPECT_NE(odd_problem.find("forward"), std::string::npos) << odd_problem;
  EXPECT_NE(odd_problem.find("multiple of 8"), std::string::npos) << odd_problem;

  AttentionShape wide = mla;
  wide.head_dim = wide.value_dim = 320;  // the forward runs, the backward allows 256 at most
  const std::string wide_problem = cuda::attention_graph_problem(wide, kHopper);
  EXPECT_NE(wide_problem.find("backward"), std::string::npos) << wide_problem;
  EXPECT_NE(wide_problem.find("256"), std::string::npos) << wide_problem;

  AttentionShape groups = mla;
  groups.kv_heads = 3;
  EXPECT_NE(cuda::attention_graph_problem(groups, kHopper).find("group-query"), std::string::npos);
}

// The oracle of the GPU check, against the CPU backend (fp32, blocked online softmax).
TEST(CudnnAttention, TheGpuChecksReferenceMatchesTheCpuBackend) {
  for (const AttentionShape& s : {AttentionShape{2, 37, 4, 2, 24, 16, 0.2f, true},
                                  AttentionShape{1, 70, 3, 3, 40, 40, 0.15f, true}}) {
    const std::vector<float> q = test::random_values(s.batch * s.seq * s.heads * s.head_dim, 1);
    const std::vector<float> k = test::random_values(s.batch * s.seq * s.kv_heads * s.head_dim, 2);
    const std::vector<float> v = test::random_values(s.batch * s.seq * s.kv_heads * s.value_dim, 3);
    const std::vector<float> dout = test::random_values(s.batch * s.seq * s.heads * s.value_dim, 4);
    const gpu::AttentionResult want = gpu::attention_reference(s, q, k, v);
    const gpu::AttentionGrads grads = gpu::attention_reference_backward(s, q, k, v, dout);

    const auto tensor = [](const std::vector<float>& values, Shape shape) {
      Tensor t = Tensor::empty(std::move(shape));
      std::copy(values.begin(), values.end(), t.data<float>());
      return t;
    };
    const Tensor tq = tensor(q, {s.batch, s.seq, s.heads, s.head_dim});
    const Tensor tk = tensor(k, {s.batch, s.seq, s.kv_heads, s.head_dim});
    const Tensor tv = tensor(v, {s.batch, s.seq, s.kv_heads, s.value_dim});
    const Tensor tdout = tensor(dout, {s.batch, s.seq, s.heads, s.value_dim});
    Tensor out = Tensor::empty({s.batch, s.seq, s.heads, s.value_dim});
    Tensor lse = Tensor::empty({s.batch, s.heads, s.seq}), row_max = Tensor::empty(lse.shape());
    ops::attention_forward(tq, tk, tv, s.scale, out, lse, &row_max);
    Tensor dq = Tensor::empty(tq.shape()), dk = Tensor::empty(tk.shape()),
           dv = Tensor::empty(tv.shape());
    ops::attention_backward(tdout, tq, tk, tv, s.scale, out, lse, dq, dk, dv);

    const auto expect_near = [](const Tensor& got, const std::vector<double>& want,
                                const char* what) {
      EXPECT_LE(test::relative_to_largest(got.span<float>(), want), 2e-6) << what;
    };
    expect_near(out, want.out, "out");
    expect_near(lse, want.lse, "lse");
    expect_near(row_max, want.row_max, "row_max");
    expect_near(dq, grads.dq, "dq");
    expect_near(dk, grads.dk, "dk");
    expect_near(dv, grads.dv, "dv");
  }
}

}  // namespace
}  // namespace moetron
