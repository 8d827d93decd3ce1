// Checkpoints across layouts (run under mpirun -np 4): a run saved at one (dp, tp, ep, ZeRO-1)
// layout continues at any other, optimizer state included, with the losses of the run that was
// never interrupted. The chain: (2,1,2) on 2 ranks -> (1,2,1) on 2 ranks -> one rank alone ->
// (4,1,4) with ZeRO-1 on 4, two steps each, against one rank training all eight steps. The
// global batch stays 8 windows of 2 sequences x 16 tokens: grad_accum_steps x dp = 4. The Muon
// variants carry Muon's momentum (and AdamW's moments of the other parameters) the same way.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "checkpoint/checkpoint.h"
#include "configs/config.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tests/adam_check.h"
#include "tests/data/test_util.h"
#include "tests/parallel/mpi_test.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using test::world;

class World4Reshard : public test::MpiTest {
 protected:
  void SetUp() override {
    if (world().size() != 4) GTEST_SKIP() << "needs 4 ranks (mpirun -np 4)";
    if (world().rank() == 0) {
      data::PrepareOptions o;
      o.inputs = {data::testing::write_generated_corpus(dir_ / "corpus", 8, 200, 3)};
      o.output = dir_ / "prepared";
      data::prepare_dataset(o);
    }
    root_ = test::shared_path(dir_.path().string());
  }

  config::RunConfig cfg() const {
    config::RunConfig c = parse_config_text(R"(
      model { vocab_size: 258 hidden_size: 64 num_hidden_layers: 2 num_attention_heads: 4
              num_key_value_heads: 2 intermediate_size: 96 num_nextn_predict_layers: 1
              moe { n_routed_experts: 4 num_experts_per_tok: 2 moe_intermediate_size: 16
                    n_shared_experts: 1 bias_update_speed: 0.01 seq_aux_loss_alpha: 0.01 } }
      data { seq_len: 16 micro_batch_size: 2 }
      optimizer { lr: 3e-3 }
      seed: 5
    )",
                                            "reshard");
    c.mutable_data()->set_dataset_dir(root_ + "/prepared");
    if (muon_) c.mutable_optimizer()->set_kind(config::OptimizerConfig::MUON);
    if (hybrid_) {  // Gated DeltaNet then gated attention, as the equivalence suite's hybrid
      config::ModelConfig* m = c.mutable_model();
      m->add_layer_types(config::ModelConfig::GATED_DELTANET);
      m->add_layer_types(config::ModelConfig::ATTENTION);
      m->set_partial_rotary_factor(0.5f);
      m->set_attention_output_gate(true);
      m->set_qk_norm(true);
      m->set_zero_centered_norms(true);
      config::GatedDeltaNetConfig* g = m->mutable_linear_attention();
      g->set_linear_num_key_heads(2);
      g->set_linear_key_head_dim(8);
      g->set_linear_num_value_heads(4);
      g->set_linear_value_head_dim(8);
      m->mutable_moe()->set_shared_expert_gate(true);
    }
    return c;
  }

  // What a phase leaves: each step's total loss and gradient norm, and every tensor this rank
  // holds at the end (its block of the weights, AdamW's moments of the elements it owns).
  struct Phase {
    std::vector<double> losses, norms;
    std::map<std::string, std::vector<float>> weights;
    std::vector<float> exp_avg, exp_avg_sq, muon_momentum;
  };

  // Trains steps [first, last) at `layout` on `groups`, loading `from` first (unless empty) and
  // saving to `to`. With `gradients`, each step's gradients go to it (the reference's, for the
  // weight check: tests/adam_check.h).
  Phase phase(const Layout& layout, const ProcessGroups& groups, int first, int last,
              const std::string& from, const std::string& to,
              test::AdamCheck* gradients = nullptr) {
    const config::RunConfig c = cfg();
    const data::Dataset ds(c.data().dataset_dir(), data::Split::train);
    Model model(c.model(), c.data().micro_batch_size(), c.data().seq_len(), groups.runtime());
    model.params().init(c.seed(), c.model().init_std());
    const int accum = 4 / layout.dp;
    TrainStep step(model, c.optimizer(), groups, accum);
    AdamW& adam = step.optimizer().adamw();
    checkpoint::OptimizerState opt = step.optimizer().state();
    checkpoint::TrainState state;
    if (!from.empty()) {
      state = checkpoint::load(from, model.params(), &opt, c, groups);
      adam.set_steps(opt.step);
    }
    EXPECT_EQ(state.step, first);
    data::Loader loader(ds, static_cast<int>(model.dims().window()), c.data().micro_batch_size(),
                        c.seed(), groups.dp_rank(), layout.dp);
    loader.seek({static_cast<uint64_t>(state.samples_consumed /
                                       (c.data().micro_batch_size() * layout.dp))});
    Phase out;
    for (int s = first; s < last; ++s) {
      const StepResult r = step.run(
          s, c.optimizer().lr(), 0.3f, [&](std::span<int32_t> t) { loader.next(t); },
          [&](const StepResult&) {
            if (!gradients) return;
            for (const ParamInfo& p : model.params().infos())
              if (p.kind != ParamKind::buffer)
                gradients->add_gradient(
                    p.name, s, model.params().grad(model.params().find(p.name)).span<float>());
          });
      out.losses.push_back(r.losses.total);
      out.norms.push_back(r.grad_norm);
      state.step = s + 1;
      state.samples_consumed += 4 * c.data().micro_batch_size();  // accum x dp = 4
      state.tokens_seen += 4 * c.data().micro_batch_size() * c.data().seq_len();
    }
    if (!to.empty()) {
      opt.step = adam.steps();
      checkpoint::save(to, model.params(), opt, state, config_to_text(c), groups);
    }
    for (const ParamInfo& p : model.params().infos()) {
      const auto v = model.params().value(model.params().find(p.name)).span<float>();
      out.weights[p.name].assign(v.begin(), v.end());
    }
    out.exp_avg.assign(adam.exp_avg().span<float>().begin(), adam.exp_avg().span<float>().end());
    out.exp_avg_sq.assign(adam.exp_avg_sq().span<float>().begin(),
                          adam.exp_avg_sq().span<float>().end());
    if (Muon* muon = step.optimizer().muon()) {
      const Tensor m = muon->slot().values;
      out.muon_momentum.assign(m.span<float>().begin(), m.span<float>().end());
    }
    return out;
  }

  // The chain of the file comment, ending at `final_layout`, against one rank.
  void chain(const Layout& final_layout);
  // A run resumed in layout l is bitwise the run that never stopped.
  void same_layout_resumes(const Layout& l);

  static Layout layout(int dp, int tp, int ep, bool zero1) {
    Layout l;
    l.world = dp * tp;
    l.dp = dp;
    l.tp = tp;
    l.ep = ep;
    l.zero1 = zero1;
    return l;
  }

  data::testing::TempDir dir_;
  std::string root_;
  bool muon_ = false;    // optimizer.kind MUON
  bool hybrid_ = false;  // a Gated DeltaNet hybrid (its A_log and dt_bias: split vectors)
};

TEST_F(World4Reshard, EveryLayoutContinuesTheRunThatWasNeverInterrupted) {
  chain(layout(4, 1, 4, true));
}

// Muon's momentum, held by each matrix's owner, reshards like AdamW's moments (the last layout
// with ZeRO-1).
TEST_F(World4Reshard, MuonStateContinuesInEveryLayout) {
  muon_ = true;
  chain(layout(4, 1, 4, true));
}

TEST_F(World4Reshard, HybridContinuesInEveryLayout) {
  hybrid_ = true;
  chain(layout(4, 1, 4, true));
}

void World4Reshard::chain(const Layout& final_layout) {
  const bool first_two = world().rank() < 2;
  MPI_Comm pair = MPI_COMM_NULL;
  MPI_Comm_split(world().comm(), first_two ? 0 : MPI_UNDEFINED, world().rank(), &pair);
  const std::string a = root_ + "/a.h5", b = root_ + "/b.h5", c = root_ + "/c.h5";
  std::vector<double> got;
  auto append = [&](const Phase& p) { got.insert(got.end(), p.losses.begin(), p.losses.end()); };
  if (first_two) {
    const ProcessGroups g(layout(2, 1, 2, false), pair);
    append(phase(layout(2, 1, 2, false), g, 0, 2, "", a));
  }
  world().barrier();
  if (first_two) {
    const ProcessGroups g(layout(1, 2, 1, false), pair);
    append(phase(layout(1, 2, 1, false), g, 2, 4, a, b));
    MPI_Comm_free(&pair);
  }
  world().barrier();
  if (world().rank() == 0) {
    const ProcessGroups alone;
    append(phase(layout(1, 1, 1, false), alone, 4, 6, b, c));
  }
  world().barrier();
  Phase last;
  {
    const ProcessGroups g(final_layout);
    last = phase(final_layout, g, 6, 8, c, "");
    append(last);
  }
  // One rank, eight steps, never interrupted (computed on every rank).
  const ProcessGroups alone;
  test::AdamCheck weights(8, 1e-5, 1e-4);
  const Phase reference = phase(layout(1, 1, 1, false), alone, 0, 8, "", "", &weights);
  // Ranks 2 and 3 took part in the last phase only; rank 1 in all but the third.
  const std::vector<int> steps = world().rank() == 0   ? std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}
                                 : world().rank() == 1 ? std::vector<int>{0, 1, 2, 3, 6, 7}
                                                       : std::vector<int>{6, 7};
  ASSERT_EQ(got.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i)
    EXPECT_NEAR(got[i], reference.losses[static_cast<size_t>(steps[i])],
                1e-6 * reference.losses[steps[i]])
        << "step " << steps[i] + 1;
  // Every tensor this rank holds after the chain (at ep 4: its routed expert, and every dense
  // tensor), element by element, against the uninterrupted run: 1e-5 + 1e-4 relative, more only
  // where rounding decides AdamW's updates (tests/adam_check.h).
  for (const auto& [name, values] : last.weights)
    weights.expect_close(values, reference.weights.at(name), name, cfg().optimizer().lr());
}

// The same layout: a resumed run is bitwise the run that never stopped, here with dp 2 x tp 2 x
// ep 2, ZeRO-1 and gradient accumulation: every step's loss and gradient norm, and at the end
// every tensor every rank holds (its blocks of the weights, its routed experts, the router
// biases) and AdamW's moments of the elements it owns.
TEST_F(World4Reshard, TheSameLayoutResumesBitwise) {
  same_layout_resumes(layout(2, 2, 2, true));
}

TEST_F(World4Reshard, TheSameLayoutResumesBitwiseWithMuon) {
  muon_ = true;
  same_layout_resumes(layout(2, 2, 2, true));
}

TEST_F(World4Reshard, TheSameLayoutResumesBitwiseHybrid) {
  hybrid_ = true;
  same_layout_resumes(layout(2, 2, 2, true));
}

void World4Reshard::same_layout_resumes(const Layout& l) {
  const std::string mid = root_ + "/mid.h5";
  Phase straight, first, rest;
  {
    const ProcessGroups g(l);
    straight = phase(l, g, 0, 4, "", "");
  }
  {
    const ProcessGroups g(l);
    first = phase(l, g, 0, 2, "", mid);
  }
  {
    const ProcessGroups g(l);
    rest = phase(l, g, 2, 4, mid, "");
  }
  std::vector<double> losses = first.losses, norms = first.norms;
  losses.insert(losses.end(), rest.losses.begin(), rest.losses.end());
  norms.insert(norms.end(), rest.norms.begin(), rest.norms.end());
  EXPECT_EQ(losses, straight.losses);
  EXPECT_EQ(norms, straight.norms);
  ASSERT_EQ(rest.weights.size(), straight.weights.size());
  for (const auto& [name, values] : straight.weights)
    EXPECT_TRUE(rest.weights.at(name) == values) << name << " differs after the resumed run";
  EXPECT_TRUE(rest.exp_avg == straight.exp_avg) << "AdamW's first moments differ";
  EXPECT_TRUE(rest.exp_avg_sq == straight.exp_avg_sq) << "AdamW's second moments differ";
  EXPECT_TRUE(rest.muon_momentum == straight.muon_momentum) << "Muon's momentum differs";
}

}  // namespace
}  // namespace moetron
