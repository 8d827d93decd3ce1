// Every parallel layout against the single-process run (run under mpirun: tests/CMakeLists.txt).
//
// The model: a DeepSeek-V3-shaped MoE + MTP model (dense first layer, 8 routed experts top-2,
// one shared expert, sigmoid routing with the sequence-wise balance loss, z-loss and
// aux-loss-free bias updates, D = 2 MTP modules, GQA, a vocabulary that tp = 4 must pad). The
// reference is the same model on one rank with gradient accumulation over dp x accum
// micro-batches: the loader numbers samples over the global batch, so it sees exactly the
// windows the dp ranks see, micro-batch for micro-batch. Five AdamW steps on each; compared:
// the losses, gradient norms and router biases of every step, and the final weights (each
// rank's blocks against the reference's tensors). Router biases must also be bitwise identical
// on every rank after every step. The MLA variants run the same model with MLA blocks (with a q
// LoRA, or with q_proj), whose replicated latent weights tensor parallelism reduces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "configs/config.h"
#include "core/ops.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "models/model.h"
#include "parallel/comm_volume.h"
#include "parallel/layout.h"
#include "parallel/process_groups.h"
#include "tests/adam_check.h"
#include "tests/data/test_util.h"
#include "tests/host_kernels.h"
#include "tests/parallel/mpi_test.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using test::world;

constexpr int kSteps = 5;

// A byte-level dataset prepared once by rank 0 in a directory every rank can read.
const std::filesystem::path& dataset_dir() {
  static data::testing::TempDir dir;  // every rank owns one; rank 0's holds the data
  static const std::filesystem::path path = [] {
    std::string p;
    if (world().rank() == 0) {
      data::PrepareOptions o;
      o.inputs = {data::testing::write_generated_corpus(dir / "corpus", 16, 200, 1)};
      o.output = dir / "prepared";
      o.val_fraction = 0.2;
      data::prepare_dataset(o);
      p = (dir / "prepared").string();
    }
    Tensor n = Tensor::zeros({1}, DType::i64);
    n.data<int64_t>()[0] = static_cast<int64_t>(p.size());
    world().broadcast(n, 0);
    Tensor text = Tensor::zeros({n.data<int64_t>()[0]}, DType::u8);
    std::copy(p.begin(), p.end(), text.data<uint8_t>());
    world().broadcast(text, 0);
    return std::filesystem::path(
        std::string(text.data<uint8_t>(), text.data<uint8_t>() + text.numel()));
  }();
  return path;
}

// mla: 0 GQA; 1 MLA with a q LoRA; 2 MLA with q_proj. muon: optimizer.kind MUON.
// qk_clip: Muon's QK-clip threshold (0 = off).
// ns_steps: Muon's Newton-Schulz iterations (0 = the default 5).
// hybrid: Qwen3-Next's mixers (layer 0 Gated DeltaNet, layer 1 and the MTP blocks gated
// attention with q/k norms and partial RoPE), zero-centred norms, a gated shared expert.
config::RunConfig test_config(float capacity_factor = 0, int mla = 0, bool muon = false,
                              float qk_clip = 0, int ns_steps = 0, bool hybrid = false) {
  config::RunConfig cfg = parse_config_text(R"(
    model { vocab_size: 258 hidden_size: 64 num_hidden_layers: 2 num_attention_heads: 8
            num_key_value_heads: 4 intermediate_size: 96 num_nextn_predict_layers: 2
            init_std: 0.05
            moe { n_routed_experts: 8 num_experts_per_tok: 2 moe_intermediate_size: 16
                  n_shared_experts: 1 first_k_dense_replace: 1 bias_update_speed: 0.01
                  seq_aux_loss_alpha: 0.01 z_loss_coeff: 0.001 } }
    data { seq_len: 16 micro_batch_size: 4 }
    optimizer { lr: 3e-3 grad_clip: 1.0 }
    seed: 7
  )",
                                            "equivalence");
  cfg.mutable_model()->mutable_moe()->set_capacity_factor(capacity_factor);
  if (mla > 0) {
    config::ModelConfig* m = cfg.mutable_model();
    m->add_layer_types(config::ModelConfig::MLA);
    m->set_num_key_value_heads(0);
    config::MlaConfig* a = m->mutable_mla();
    a->set_q_lora_rank(mla == 1 ? 32 : 0);
    a->set_kv_lora_rank(16);
    a->set_qk_nope_head_dim(8);
    a->set_qk_rope_head_dim(4);
    a->set_v_head_dim(12);
  }
  if (hybrid) {
    config::ModelConfig* m = cfg.mutable_model();
    m->add_layer_types(config::ModelConfig::GATED_DELTANET);
    m->add_layer_types(config::ModelConfig::ATTENTION);
    m->set_partial_rotary_factor(0.5f);
    m->set_attention_output_gate(true);
    m->set_qk_norm(true);
    m->set_zero_centered_norms(true);
    config::GatedDeltaNetConfig* g = m->mutable_linear_attention();
    g->set_linear_num_key_heads(4);
    g->set_linear_key_head_dim(8);
    g->set_linear_num_value_heads(8);
    g->set_linear_value_head_dim(6);
    g->set_linear_conv_kernel_dim(4);
    m->mutable_moe()->set_shared_expert_gate(true);
  }
  if (muon) cfg.mutable_optimizer()->set_kind(config::OptimizerConfig::MUON);
  cfg.mutable_optimizer()->mutable_muon()->set_qk_clip_tau(qk_clip);
  if (ns_steps > 0) cfg.mutable_optimizer()->mutable_muon()->set_ns_steps(ns_steps);
  return cfg;
}

struct Variant {
  int dp = 1, tp = 1, ep = 1;
  bool zero1 = false;
  int accum = 1;
  bool one_expert = false;    // every token to experts 0 and 1 (the other ranks get none)
  float capacity_factor = 0;  // > 0: experts drop their lowest-score overflow
  int mla = 0;                // test_config's
  bool muon = false;          // optimizer.kind MUON
  float qk_clip = 0;          // its QK-clip threshold
  int ns_steps = 0;           // its Newton-Schulz iterations (0: the default)
  bool hybrid = false;        // test_config's
  bool bf16 = false;          // precision BF16
  Device device = {};         // cpu:1: the device backend and communicator (vs the CPU's rank)
  // Muon's amplified rounding needs the wider bounds (Reference below); with one iteration the
  // layouts meet AdamW's.
  bool wide_bounds() const { return muon && ns_steps != 1; }
  std::string name() const {
    return "(dp " + std::to_string(dp) + ", tp " + std::to_string(tp) + ", ep " +
           std::to_string(ep) + ", ZeRO-1 " + (zero1 ? "on" : "off") + ", accum " +
           std::to_string(accum) + (one_expert ? ", one expert" : "") +
           (capacity_factor > 0 ? ", capacity " + std::to_string(capacity_factor) : "") +
           (mla > 0 ? mla == 1 ? ", MLA q LoRA" : ", MLA q_proj" : "") + (muon ? ", Muon" : "") +
           (qk_clip > 0 ? ", QK-clip " + std::to_string(qk_clip) : "") +
           (ns_steps > 0 ? ", NS steps " + std::to_string(ns_steps) : "") +
           (hybrid ? ", Gated DeltaNet hybrid" : "") + (bf16 ? ", bf16" : "") +
           (device != Device{} ? ", on " + device_name(device) : "") + ")";
  }
};

struct Record {
  std::vector<double> losses, main, norms;
  std::vector<std::vector<float>> biases;  // all router biases, after each step
};

std::vector<float> router_biases(const ParamTable& params) {
  std::vector<float> out;
  for (const ParamInfo& p : params.infos())
    if (p.kind == ParamKind::buffer) {
      const std::vector<float> v = ops::to_host<float>(params.value(params.find(p.name)));
      out.insert(out.end(), v.begin(), v.end());
    }
  return out;
}

// Trains kSteps steps of `v` on the given groups; the model stays for the weight comparison.
// With `gradients`, each step's gradients (before clipping) are handed to it: the reference's,
// where rounding decides AdamW's updates (tests/adam_check.h).
Record train(const Variant& v, const ProcessGroups& groups, std::unique_ptr<Model>& model,
             int accum, test::AdamCheck* gradients = nullptr) {
  const config::RunConfig cfg =
      test_config(v.capacity_factor, v.mla, v.muon, v.qk_clip, v.ns_steps, v.hybrid);
  const data::Dataset ds(dataset_dir(), data::Split::train);
  model = std::make_unique<Model>(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len(),
                                  groups.runtime(v.bf16 ? DType::bf16 : DType::f32));
  model->params().init(cfg.seed(), cfg.model().init_std());
  if (v.one_expert)
    for (const ParamInfo& p : model->params().infos())
      if (p.kind == ParamKind::buffer) {
        float* b = model->params().value(model->params().find(p.name)).data<float>();
        b[0] = b[1] = 10.0f;  // far above any score: experts 0 and 1 take every token
      }
  TrainStep step(*model, cfg.optimizer(), groups, accum);
  if (Muon* muon = step.optimizer().muon(); muon && v.dp > 1) {
    // The Muon matrices have owners: this rank keeps and computes some of them, not all.
    int64_t mine = 0, all = 0;
    for (const auto& [b, e] : muon->slot().ranges) mine += e - b;
    for (const ParamInfo& p : model->params().infos())
      if (p.kind != ParamKind::buffer && is_hidden_matrix(p.name, p.kind)) all += p.numel();
    EXPECT_GT(mine, 0);
    EXPECT_LT(mine, all) << "this data-parallel rank owns every Muon matrix";
  }
  data::Loader loader(ds, static_cast<int>(model->dims().window()), cfg.data().micro_batch_size(),
                      cfg.seed(), groups.dp_rank(), groups.layout().dp);
  Record r;
  for (int s = 0; s < kSteps; ++s) {
    const int64_t reads = backend(v.device).host_reads();
    const StepResult out = step.run(
        s, cfg.optimizer().lr(), 0.3f, [&](std::span<int32_t> t) { loader.next(t); },
        [&](const StepResult&) {
          if (!gradients) return;
          const ParamTable& params = model->params();
          for (const ParamInfo& p : params.infos())
            if (p.kind != ParamKind::buffer)
              gradients->add_gradient(p.name, s, params.grad(params.find(p.name)).span<float>());
        });
    EXPECT_TRUE(out.finite) << "step " << s;
    // A device step reads back once per MoE layer (its plan, the tp slice's counts included)
    // and once for its sums, whatever the layout (docs/gpu.md, "Host copies a step makes"); the
    // gradient hook's own copies to the host would count too.
    if (v.device != Device{} && gradients == nullptr) {
      EXPECT_EQ(backend(v.device).host_reads() - reads, static_cast<int64_t>(out.moe.size()) + 1)
          << "step " << s;
    }
    if (v.qk_clip > 0) {
      EXPECT_GT(out.clipped_heads, 0) << "QK-clip clipped nothing at step " << s;
    }
    if (v.capacity_factor > 0) {
      int64_t dropped = 0;
      for (const MoeStepStats& m : out.moe) dropped += m.dropped;
      EXPECT_GT(dropped, 0) << "the capacity dropped nothing at step " << s;
    }
    r.losses.push_back(out.losses.total);
    r.main.push_back(out.losses.main);
    r.norms.push_back(out.grad_norm);
    r.biases.push_back(router_biases(model->params()));
  }
  return r;
}

// The weights after kSteps steps: each element within 1e-5 + 1e-4 relative of one rank's (seen:
// at most 1.3e-6 apart), and more only where rounding decides AdamW's updates (tests/adam_check.h).
// With Muon the weights get an absolute 5% of one step's largest Muon update (lr * rms_scale *
// sqrt(96), the widest matrix), the losses 1e-5 and the norms 1e-4: Newton-Schulz
// raises a gradient's small singular values towards 1, so the rounding of the other layouts'
// summation orders, in the directions an almost rank-deficient gradient barely has (an MTP
// expert that received a few tokens), moves that matrix's update by up to a few percent. Seen
// at dp 2 x tp 2 x ep 2 (MLA, with or without ZeRO-1): one expert's weights up to 1.4e-4 apart
// (3% of a step's update), the losses 1.1e-6; the same layout with ns_steps 1 agrees within the
// AdamW bounds (1e-4), so the difference is the iteration's amplification, not the distributed
// path.
// The Gated DeltaNet hybrid: a rounding-decided AdamW update in one layer moves the weights of
// others through the activations it changes (seen: 0.0014 lr after 5 steps in a routed expert
// that had no such update of its own, tp 2 on AVX-512); 0.002 lr per step after the model's
// first such update (tests/adam_check.h).
constexpr double kHybridModelRate = 0.002;
constexpr double kMuonWeightAtol = 0.05 * 3e-3 * 0.2 * 9.8;  // lr, rms_scale, sqrt(96)

struct Reference {
  Record record;
  std::unique_ptr<Model> model;
  test::AdamCheck weights;
};

// The single-process run of `parallel`'s model for `accum` micro-batches per step (computed once
// per program and setting).
const Reference& reference(const Variant& parallel, int accum) {
  static std::map<std::tuple<int, bool, float, int, bool, float, int, bool, bool>, Reference> cache;
  auto [it, fresh] = cache.try_emplace(
      {accum, parallel.one_expert, parallel.capacity_factor, parallel.mla, parallel.muon,
       parallel.qk_clip, parallel.ns_steps, parallel.hybrid, parallel.bf16},
      Reference{{},
                nullptr,
                test::AdamCheck(kSteps, parallel.wide_bounds() ? kMuonWeightAtol : 1e-5, 1e-4,
                                1e-5f, parallel.hybrid ? kHybridModelRate : 0.0)});
  Reference& ref = it->second;
  if (fresh) {
    const ProcessGroups alone;
    Variant v;
    v.one_expert = parallel.one_expert;
    v.capacity_factor = parallel.capacity_factor;
    v.mla = parallel.mla;
    v.muon = parallel.muon;
    v.qk_clip = parallel.qk_clip;
    v.ns_steps = parallel.ns_steps;
    v.hybrid = parallel.hybrid;
    v.bf16 = parallel.bf16;
    ref.record = train(v, alone, ref.model, accum, &ref.weights);
  }
  return ref;
}

// This rank's block of the reference's tensor `p.name`, in the layout of `p`, and where each
// element lies in the logical tensor (-1: vocabulary padding, which stays zero).
struct Block {
  std::vector<float> values;
  std::vector<int64_t> index;
};
Block reference_block(const ParamInfo& p, const Model& ref) {
  const int id = ref.params().find(p.name);
  EXPECT_GE(id, 0) << p.name;
  const Tensor full = ref.params().value(id);
  const float* f = full.data<float>();
  Block out;
  if (p.shard.group != ShardGroup::tensor) {
    out.values.assign(f, f + full.numel());
    return out;  // index empty: the whole tensor in order
  }
  out.values.assign(static_cast<size_t>(p.numel()), 0.0f);
  out.index.assign(static_cast<size_t>(p.numel()), -1);
  // A vector (Gated DeltaNet's A_log, dt_bias) is a column: its block is rows.
  const bool vector = p.shape.size() == 1;
  const int64_t rows = p.shape[0], cols = vector ? 1 : p.shape[1];
  const int64_t full_rows = vector ? full.numel() : full.rows(),
                full_cols = vector ? 1 : full.cols();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t gr = p.shard.dim == 0 ? p.shard.begin + r : r;
      const int64_t gc = p.shard.dim == 1 ? p.shard.begin + c : c;
      if (gr >= full_rows) continue;
      out.values[static_cast<size_t>(r * cols + c)] = f[gr * full_cols + gc];
      out.index[static_cast<size_t>(r * cols + c)] = gr * full_cols + gc;
    }
  return out;
}

void expect_matches_reference(const Variant& v) {
  SCOPED_TRACE(v.name());
  Layout layout;
  layout.world = world().size();
  layout.dp = v.dp;
  layout.tp = v.tp;
  layout.ep = v.ep;
  layout.zero1 = v.zero1;
  ASSERT_EQ(v.dp * v.tp, world().size());
  const ProcessGroups groups(layout, MPI_COMM_WORLD, v.device);
  std::unique_ptr<Model> model;
  const Record got = train(v, groups, model, v.accum);
  const Reference& ref = reference(v, v.dp * v.accum);
  const double lr = test_config().optimizer().lr();
  // The same fp32 arithmetic summed in another order (partial sums over tp, all-reduces over dp,
  // other row sets in the grouped GEMMs): seen within 5e-9 relative after 5 steps; the bounds
  // leave two orders of magnitude.
  // bf16 rounds each GEMM operand and the attention's operands and results to 2^-9: a summation
  // order's fp32 noise moves a value by a whole bf16 step wherever it lies near a rounding
  // boundary (most often the attention's dq, dk, dv: sums with cancellation), which multiplies
  // the layouts' differences by about 100 (seen at step 0: 5e-6 on the gradient norm, against
  // 5e-8 in fp32), and lets later steps route a near-tie differently (tp 2: losses 1.3e-4 apart
  // by step 4). bf16 layouts are held to their losses and norms (a stale or misplaced weight copy
  // is off by far more); the weights and biases not.
  const double loss_rtol = v.bf16 ? 1e-3 : v.wide_bounds() ? 1e-5 : 1e-6;
  // The first step's gradients come before any update: every layout within 1e-6 (seen: 5e-8).
  // Later, AdamW's first update, lr * sign(g) for an element whose gradient is rounding noise,
  // goes either way (the weights' check allows for it: tests/adam_check.h), and the hybrid has
  // such elements whose flips move later gradient norms by up to 2.4e-5 (its losses stay
  // within 2e-7, as the others'): 1e-4 there.
  const double norm_rtol = v.bf16 ? 1e-2 : v.wide_bounds() || v.hybrid ? 1e-4 : 1e-5;
  const double first_norm_rtol = v.bf16 ? 1e-4 : 1e-6;
  const double first_loss_rtol = v.bf16 ? 1e-5 : loss_rtol;  // before any update
  for (int s = 0; s < kSteps; ++s) {
    const double l_rtol = s == 0 ? first_loss_rtol : loss_rtol;
    EXPECT_NEAR(got.losses[s], ref.record.losses[s], l_rtol * ref.record.losses[s]) << "step " << s;
    EXPECT_NEAR(got.main[s], ref.record.main[s], l_rtol * ref.record.main[s]) << "step " << s;
    EXPECT_NEAR(got.norms[s], ref.record.norms[s],
                (s == 0 ? first_norm_rtol : norm_rtol) * ref.record.norms[s])
        << "step " << s;
    // Loads are integers: the same routing gives exactly the same biases.
    if (!v.bf16) {
      EXPECT_EQ(got.biases[s], ref.record.biases[s]) << "router biases after step " << s;
    }
    // And every rank holds the same ones.
    const auto n = static_cast<int64_t>(got.biases[s].size());
    Tensor mine = Tensor::empty({n});
    std::copy(got.biases[s].begin(), got.biases[s].end(), mine.data<float>());
    Tensor all = Tensor::empty({world().size(), n});
    world().all_gather(mine, all);
    for (int r = 0; r < world().size(); ++r)
      EXPECT_TRUE(std::equal(mine.data<float>(), mine.data<float>() + n, all.data<float>() + r * n))
          << "rank " << r << " holds other router biases after step " << s;
  }
  if (v.bf16) return;
  for (const ParamInfo& p : model->params().infos()) {
    const Block want = reference_block(p, *ref.model);
    const std::vector<float> got =
        ops::to_host<float>(model->params().value(model->params().find(p.name)));
    ref.weights.expect_close(got, want.values, p.name, lr, want.index);
  }
}

class World2 : public test::MpiTest {};
class World4 : public test::MpiTest {};
class World8 : public test::MpiTest {};

TEST_F(World2, EveryLayoutMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (bool zero1 : {false, true})
    for (auto [dp, tp, ep] : {std::tuple{2, 1, 1}, {1, 2, 1}, {2, 1, 2}, {1, 2, 2}})
      expect_matches_reference({dp, tp, ep, zero1});
}

TEST_F(World2, MlaLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (const int mla : {1, 2})
    for (bool zero1 : {false, true})
      for (auto [dp, tp, ep] : {std::tuple{2, 1, 1}, {1, 2, 1}, {1, 2, 2}})
        expect_matches_reference({dp, tp, ep, zero1, 1, false, 0, mla});
}

// Gated DeltaNet split by heads (conv channels, A_log and dt_bias with their value heads, the
// norm's gradient summed), gated attention's q/k norms summed likewise, the shared-expert gate.
Variant hybrid(int dp, int tp, int ep, bool zero1) {
  Variant v{dp, tp, ep, zero1};
  v.hybrid = true;
  return v;
}

TEST_F(World2, HybridLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (bool zero1 : {false, true})
    for (auto [dp, tp, ep] : {std::tuple{2, 1, 1}, {1, 2, 1}, {1, 2, 2}})
      expect_matches_reference(hybrid(dp, tp, ep, zero1));
}

// Muon: tensor-parallel shards gathered for Newton-Schulz, experts on their EP rank, each
// matrix updated by its data-parallel owner and broadcast (under ZeRO-1 from the gathered
// gradients).
TEST_F(World2, MuonLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (const int mla : {0, 1})
    for (auto [dp, tp, ep, zero1] : {std::tuple{2, 1, 1, false},
                                     {1, 2, 1, false},
                                     {2, 1, 2, false},
                                     {1, 2, 2, false},
                                     {2, 1, 1, true},
                                     {2, 1, 2, true}}) {
      Variant v{dp, tp, ep, zero1};
      v.mla = mla;
      v.muon = true;
      expect_matches_reference(v);
    }
  // QK-clip at a threshold every head exceeds: the largest logits reduced over dp, each TP
  // rank clipping its own heads.
  for (auto [dp, tp, ep, mla] : {std::tuple{2, 1, 2, 0}, {1, 2, 1, 1}, {2, 1, 1, 2}}) {
    Variant v{dp, tp, ep};
    v.mla = mla;
    v.muon = true;
    v.qk_clip = 1e-3f;
    expect_matches_reference(v);
  }
}

// bf16 over DP with ZeRO-1 (the copies made after the all-gather), TP (each rank's copies of its
// shards) and EP: the losses within 1e-4 and the norms within 1e-3 of one bf16 rank (seen: 1.1e-5
// and 6e-5; expect_matches_reference says why not fp32's bounds).
TEST_F(World2, Bf16LayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (auto [dp, tp, ep, zero1] : {std::tuple{2, 1, 2, true}, {1, 2, 2, false}, {1, 2, 1, false}}) {
    Variant v{dp, tp, ep, zero1};
    v.bf16 = true;
    expect_matches_reference(v);
  }
}

// A run on a device (cpu:1, the CUDA backend's code on the host) with its device communicator
// (parallel/device_communicator.h: device tensors over the device's collectives, MPI standing in
// for NCCL) against the CPU's single rank, with the CPU layouts' bounds.
TEST_F(World2, DeviceLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (auto [dp, tp, ep, zero1] : {std::tuple{2, 1, 2, true}, {1, 2, 2, false}, {2, 1, 1, false}}) {
    Variant v{dp, tp, ep, zero1};
    v.device = test::host_kernels_device();
    expect_matches_reference(v);
  }
}

TEST_F(World2, GradientAccumulationMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  expect_matches_reference({2, 1, 2, true, /*accum=*/2});
  expect_matches_reference({1, 2, 2, false, /*accum=*/2});
}

// Capacity dropping keeps its single-process meaning: each micro-batch's experts keep their
// highest-score assignments, whichever ranks the tokens were dispatched from.
// On cpu:1 too, where the tp slice of a plan that drops slots is the device's.
TEST_F(World2, CapacityDroppingMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(2);
  for (auto [dp, tp, ep] : {std::tuple{2, 1, 2}, {1, 2, 2}, {1, 2, 1}})
    expect_matches_reference({dp, tp, ep, false, 1, false, /*capacity_factor=*/1.0f});
  for (auto [dp, tp, ep] : {std::tuple{1, 2, 2}, {1, 2, 1}}) {
    Variant v{dp, tp, ep, false, 1, false, /*capacity_factor=*/1.0f};
    v.device = test::host_kernels_device();
    expect_matches_reference(v);
  }
}

// Every (dp, tp, ep) of `world` ranks that the model allows (tp dividing the heads and KV
// heads, ep the experts), with ZeRO-1 off and on.
std::vector<Variant> every_layout(int world) {
  std::vector<Variant> out;
  for (int tp = 1; tp <= world; tp *= 2)
    for (int ep = 1; ep <= world; ep *= 2) {
      config::RunConfig cfg = test_config();
      cfg.mutable_parallel()->set_tp(tp);
      cfg.mutable_parallel()->set_ep(ep);
      try {
        validate_config(cfg);
        resolve_layout(cfg, world);
      } catch (const Error&) {
        continue;
      }
      for (bool zero1 : {false, true}) out.push_back({world / tp, tp, ep, zero1});
    }
  return out;
}

TEST_F(World4, EveryLayoutMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(4);
  const std::vector<Variant> layouts = every_layout(4);
  EXPECT_EQ(layouts.size(), 18u);  // tp 1, 2, 4 x ep 1, 2, 4 x ZeRO-1 off, on
  for (const Variant& v : layouts) expect_matches_reference(v);
}

TEST_F(World4, MlaLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(4);
  for (const int mla : {1, 2})
    for (auto [dp, tp, ep, zero1] : {std::tuple{4, 1, 4, true},
                                     {2, 2, 2, false},
                                     {2, 2, 1, true},
                                     {1, 4, 4, true},
                                     {1, 4, 2, false}})
      expect_matches_reference({dp, tp, ep, zero1, 1, false, 0, mla});
}

TEST_F(World4, HybridLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(4);
  for (auto [dp, tp, ep, zero1] :
       {std::tuple{4, 1, 4, true}, {2, 2, 2, false}, {1, 4, 4, true}, {1, 4, 1, false}})
    expect_matches_reference(hybrid(dp, tp, ep, zero1));
}

TEST_F(World4, MuonLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(4);
  for (auto [dp, tp, ep, mla, zero1] : {std::tuple{4, 1, 4, 0, false},
                                        {2, 2, 2, 0, false},
                                        {1, 4, 4, 0, false},
                                        {2, 2, 1, 1, false},
                                        {1, 4, 2, 2, false},
                                        {4, 1, 4, 0, true},
                                        {2, 2, 2, 1, true}}) {
    Variant v{dp, tp, ep, zero1};
    v.mla = mla;
    v.muon = true;
    expect_matches_reference(v);
  }
  // The layout whose weights needed the wide bounds, with one Newton-Schulz iteration: AdamW's
  // bounds hold, so the distributed path itself adds nothing beyond fp32 rounding.
  for (const bool zero1 : {false, true}) {
    Variant v{2, 2, 2, zero1};
    v.mla = 1;
    v.muon = true;
    v.ns_steps = 1;
    expect_matches_reference(v);
  }
  for (auto [dp, tp, ep, mla, zero1] : {std::tuple{2, 2, 2, 1, true}, {4, 1, 2, 0, false}}) {
    Variant v{dp, tp, ep, zero1};
    v.mla = mla;
    v.muon = true;
    v.qk_clip = 1e-3f;
    expect_matches_reference(v);
  }
}

TEST_F(World4, DeviceLayoutsMatchOneRank) {
  MOETRON_REQUIRE_WORLD(4);
  Variant v{2, 2, 2, true};
  v.device = test::host_kernels_device();
  expect_matches_reference(v);
}

TEST_F(World4, CapacityDroppingMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(4);
  for (auto [dp, tp, ep] : {std::tuple{4, 1, 4}, {2, 2, 2}, {1, 4, 4}})
    expect_matches_reference({dp, tp, ep, false, 1, false, /*capacity_factor=*/1.0f});
}

// Megatron-Core crashed on a rank that received no tokens (its issue #1877).
TEST_F(World4, RanksAndExpertsWithoutTokensWork) {
  MOETRON_REQUIRE_WORLD(4);
  expect_matches_reference({4, 1, 4, false, 1, /*one_expert=*/true});
  expect_matches_reference({1, 4, 4, true, 1, /*one_expert=*/true});
}

TEST_F(World4, TheSameLayoutTwiceGivesBitwiseTheSameRun) {
  MOETRON_REQUIRE_WORLD(4);
  Layout layout;
  layout.world = 4;
  layout.dp = 2;
  layout.tp = 2;
  layout.ep = 2;
  layout.zero1 = true;
  Variant v{2, 2, 2, true};
  std::vector<Record> runs;
  std::vector<std::vector<float>> weights;
  for (int i = 0; i < 2; ++i) {
    const ProcessGroups groups(layout);
    std::unique_ptr<Model> model;
    runs.push_back(train(v, groups, model, 1));
    const auto w = model->params().flat_values().span<float>();
    weights.emplace_back(w.begin(), w.end());
  }
  EXPECT_EQ(runs[0].losses, runs[1].losses);
  EXPECT_EQ(runs[0].norms, runs[1].norms);
  EXPECT_EQ(runs[0].biases, runs[1].biases);
  EXPECT_TRUE(weights[0] == weights[1]) << "the final weights differ";
}

// The bytes the communicators count are the formulas of docs/parallelism.md
// (parallel/comm_volume.h), exactly, with the expert-parallel rows at the routing that happened.
TEST_F(World4, CommunicationVolumeIsTheDocumentedFormula) {
  MOETRON_REQUIRE_WORLD(4);
  // GQA; MLA with a q LoRA and without (their replicated gradients); the Gated DeltaNet hybrid.
  for (const auto& [zero1, mla, hybrid] : {std::tuple{false, 0, false},
                                           {true, 0, false},
                                           {false, 1, false},
                                           {false, 2, false},
                                           {true, 0, true}}) {
    Layout layout;
    layout.world = 4;
    layout.dp = 2;
    layout.tp = 2;
    layout.ep = 2;
    layout.zero1 = zero1;
    const ProcessGroups groups(layout);
    const config::RunConfig cfg = test_config(0, mla, false, 0, 0, hybrid);
    const data::Dataset ds(dataset_dir(), data::Split::train);
    Model model(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len(), groups.runtime());
    model.params().init(cfg.seed(), cfg.model().init_std());
    TrainStep step(model, cfg.optimizer(), groups, 2);
    data::Loader loader(ds, static_cast<int>(model.dims().window()), cfg.data().micro_batch_size(),
                        cfg.seed(), groups.dp_rank(), 2);
    const StepResult r = step.run(0, 1e-3, 0.3f, [&](std::span<int32_t> t) { loader.next(t); });
    int64_t sent = 0, off_rank = 0, received = 0;
    for (const MoeStepStats& m : r.moe) {
      sent += m.rows_sent;
      off_rank += m.rows_off_rank;
      received += m.rows_received_off_rank;
    }
    const auto expected = expected_comm_bytes(model.dims(), model.params(), layout, 2,
                                              static_cast<double>(off_rank) / sent);
    for (Communicator* c : groups.all()) {
      SCOPED_TRACE(c->name() + (zero1 ? ", ZeRO-1" : "") + (mla > 0 ? ", MLA" : "") +
                   (hybrid ? ", hybrid" : ""));
      if (c->name() == "ep") {  // this rank's rows, as the routing sent them
        EXPECT_GT(off_rank, 0);
        EXPECT_EQ(static_cast<double>(c->stats().bytes),
                  expected_ep_bytes(model.dims(), layout, 2, off_rank, received));
        continue;
      }
      EXPECT_EQ(static_cast<double>(c->stats().bytes), expected.at(c->name()));
    }
  }
}

TEST_F(World8, EveryLayoutMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(8);
  const std::vector<Variant> layouts = every_layout(8);
  EXPECT_EQ(layouts.size(), 24u);  // tp 1, 2, 4 (8 exceeds the KV heads) x ep 1..8 x ZeRO-1
  for (const Variant& v : layouts) expect_matches_reference(v);
}

TEST_F(World8, CapacityDroppingMatchesOneRank) {
  MOETRON_REQUIRE_WORLD(8);
  for (auto [dp, tp, ep] : {std::tuple{8, 1, 8}, {2, 4, 8}})
    expect_matches_reference({dp, tp, ep, true, 1, false, /*capacity_factor=*/1.0f});
}

}  // namespace
}  // namespace moetron
