// Checkpoints across layouts (run under mpirun -np 4): a run saved at one (dp, tp, ep, ZeRO-1)
// layout continues at any other, optimizer state included, with the losses of the run that was
// never interrupted. The chain: (2,1,2) on 2 ranks -> (1,2,1) on 2 ranks -> one rank alone ->
// (4,1,4) with ZeRO-1 on 4, two steps each, against one rank training all eight steps. The
// global batch stays 8 windows of 2 sequences x 16 tokens: grad_accum_steps x dp = 4.
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "configs/config.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tests/data/test_util.h"
#include "tests/parallel/mpi_test.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using test::world;

// A path every rank can use: rank 0's, broadcast.
std::string shared_path(const std::string& mine) {
  Tensor n = Tensor::zeros({1}, DType::i64);
  n.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
  world().broadcast(n, 0);
  Tensor text = Tensor::zeros({std::max<int64_t>(n.data<int64_t>()[0], 1)}, DType::u8);
  if (world().rank() == 0) std::copy(mine.begin(), mine.end(), text.data<uint8_t>());
  world().broadcast(text, 0);
  return {reinterpret_cast<const char*>(text.data<uint8_t>()),
          static_cast<size_t>(n.data<int64_t>()[0])};
}

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
    root_ = shared_path(dir_.path().string());
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
    return c;
  }

  // Trains steps [first, last) at `layout` on `groups`, loading `from` first (unless empty) and
  // saving to `to`; returns the total loss of each step.
  std::vector<double> phase(const Layout& layout, const ProcessGroups& groups, int first, int last,
                            const std::string& from, const std::string& to,
                            std::vector<float>* final_weights = nullptr) {
    const config::RunConfig c = cfg();
    const data::Dataset ds(c.data().dataset_dir(), data::Split::train);
    Model model(c.model(), c.data().micro_batch_size(), c.data().seq_len(), groups.model_context());
    model.params().init(c.seed(), c.model().init_std());
    const int accum = 4 / layout.dp;
    TrainStep step(model, c.optimizer(), groups, accum);
    AdamW& adam = step.optimizer();
    checkpoint::OptimizerState opt{adam.owned(), adam.exp_avg(), adam.exp_avg_sq(), adam.steps()};
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
    std::vector<double> losses;
    for (int s = first; s < last; ++s) {
      const StepResult r =
          step.run(s, c.optimizer().lr(), 0.3f, [&](std::span<int32_t> t) { loader.next(t); });
      losses.push_back(r.losses.total);
      state.step = s + 1;
      state.samples_consumed += 4 * c.data().micro_batch_size();  // accum x dp = 4
      state.tokens_seen += 4 * c.data().micro_batch_size() * c.data().seq_len();
    }
    if (!to.empty()) {
      opt.step = adam.steps();
      checkpoint::save(to, model.params(), opt, state, config_to_text(c), groups);
    }
    if (final_weights) {
      for (const ParamInfo& p : model.params().infos()) {
        if (p.shard.group != ShardGroup::replicated || p.is_expert()) continue;
        const auto v = model.params().value(model.params().find(p.name)).span<float>();
        final_weights->insert(final_weights->end(), v.begin(), v.end());
      }
    }
    return losses;
  }

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
};

TEST_F(World4Reshard, EveryLayoutContinuesTheRunThatWasNeverInterrupted) {
  const bool first_two = world().rank() < 2;
  MPI_Comm pair = MPI_COMM_NULL;
  MPI_Comm_split(world().comm(), first_two ? 0 : MPI_UNDEFINED, world().rank(), &pair);
  const std::string a = root_ + "/a.h5", b = root_ + "/b.h5", c = root_ + "/c.h5";
  std::vector<double> got;
  auto append = [&](const std::vector<double>& l) { got.insert(got.end(), l.begin(), l.end()); };
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
  std::vector<float> weights, reference_weights;
  {
    const ProcessGroups g(layout(4, 1, 4, true));
    append(phase(layout(4, 1, 4, true), g, 6, 8, c, "", &weights));
  }
  // One rank, eight steps, never interrupted (computed on every rank).
  const ProcessGroups alone;
  const std::vector<double> reference =
      phase(layout(1, 1, 1, false), alone, 0, 8, "", "", &reference_weights);
  // Ranks 2 and 3 took part in the last phase only; rank 1 in all but the third.
  const std::vector<int> steps = world().rank() == 0   ? std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}
                                 : world().rank() == 1 ? std::vector<int>{0, 1, 2, 3, 6, 7}
                                                       : std::vector<int>{6, 7};
  ASSERT_EQ(got.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i)
    EXPECT_NEAR(got[i], reference[static_cast<size_t>(steps[i])], 1e-6 * reference[steps[i]])
        << "step " << steps[i] + 1;
  // The dense replicated weights (norms, router) after the chain: one rank's run within fp32
  // rounding (AdamW's eps rule aside, see test_equivalence.cc).
  ASSERT_EQ(weights.size(), reference_weights.size());
  size_t loose = 0;
  for (size_t i = 0; i < weights.size(); ++i)
    if (std::abs(weights[i] - reference_weights[i]) > 1e-5 + 1e-4 * std::abs(reference_weights[i]))
      ++loose;
  EXPECT_LE(loose, weights.size() / 100 + 1);
}

// The same layout: a resumed run is bitwise the run that never stopped (losses, router biases
// and every weight), here with dp 2 x tp 2 x ep 2, ZeRO-1 and gradient accumulation.
TEST_F(World4Reshard, TheSameLayoutResumesBitwise) {
  const Layout l = layout(2, 2, 2, true);
  const std::string mid = root_ + "/mid.h5";
  std::vector<float> straight_w, resumed_w;
  std::vector<double> straight, resumed;
  {
    const ProcessGroups g(l);
    straight = phase(l, g, 0, 4, "", "", &straight_w);
  }
  {
    const ProcessGroups g(l);
    resumed = phase(l, g, 0, 2, "", mid);
  }
  {
    const ProcessGroups g(l);
    const std::vector<double> rest = phase(l, g, 2, 4, mid, "", &resumed_w);
    resumed.insert(resumed.end(), rest.begin(), rest.end());
  }
  EXPECT_EQ(resumed, straight);
  EXPECT_TRUE(resumed_w == straight_w) << "the weights after the resumed run differ";
}

}  // namespace
}  // namespace moetron
