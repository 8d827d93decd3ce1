// The gradient reduction itself, on 2 ranks (mpirun -np 2): every element of a reduced range is
// the sum over its group, and under ZeRO-1 the ranks own disjoint parts that cover everything
// and the gather hands every rank the owners' values. Run with a tiny per-call limit as well,
// so that the splitting of long ranges into several MPI calls (each takes an int count) is
// exercised at a size a test can afford.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "configs/config.h"
#include "models/model.h"
#include "parallel/grad_sync.h"
#include "parallel/process_groups.h"
#include "tests/parallel/mpi_test.h"

namespace moetron {
namespace {

using test::world;

config::RunConfig moe_config() {
  return parse_config_text(R"(
    model { vocab_size: 64 hidden_size: 32 num_hidden_layers: 2 num_attention_heads: 4
            num_key_value_heads: 2 intermediate_size: 48 num_nextn_predict_layers: 1
            moe { n_routed_experts: 4 num_experts_per_tok: 2 moe_intermediate_size: 8
                  n_shared_experts: 1 } }
    data { seq_len: 8 micro_batch_size: 1 }
  )",
                           "grad_sync");
}

// An exactly representable gradient that differs between ranks and elements.
float grad_of(int rank, int64_t i) {
  return static_cast<float>(rank + 1) * 0.5f + static_cast<float>(i % 7);
}

void expect_reduced(bool zero1, int ep, int64_t max_per_call) {
  SCOPED_TRACE(::testing::Message() << "zero1 " << zero1 << ", ep " << ep << ", at most "
                                    << max_per_call << " elements per call");
  Layout layout;
  layout.world = 2;
  layout.dp = 2;
  layout.ep = ep;
  layout.zero1 = zero1;
  const ProcessGroups groups(layout);
  const config::RunConfig cfg = moe_config();
  Model model(cfg.model(), 1, 8, groups.runtime());
  ParamTable& params = model.params();
  GradSync sync(params, groups, max_per_call);
  const int rank = world().rank();
  const int64_t n = params.numel(), dense = params.dense_numel();
  float* g = params.flat_grads().data<float>();
  for (int64_t i = 0; i < n; ++i) g[i] = grad_of(rank, i);
  sync.begin();
  for (int u = 0; u < static_cast<int>(params.units().size()); ++u) sync.unit_ready(u);
  sync.finish();

  // Dense gradients are summed over dp; expert ones over expert-dp (2 ranks at ep 1, this rank
  // alone at ep 2). Only what this rank owns is reduced under ZeRO-1.
  int64_t owned = 0, wrong = 0;
  for (const auto& [b, e] : sync.owned()) {
    owned += e - b;
    for (int64_t i = b; i < e; ++i) {
      const bool summed = i < dense || ep == 1;
      const float want = summed ? grad_of(0, i) + grad_of(1, i) : grad_of(rank, i);
      wrong += g[i] != want;
    }
  }
  EXPECT_EQ(wrong, 0);
  // Owned parts: everything without ZeRO-1; with it, disjoint over the ranks and covering
  // every element of each reduction group.
  Tensor total = Tensor::zeros({1}, DType::i64);
  total.data<int64_t>()[0] = owned;
  world().all_reduce(total, ReduceOp::sum);
  const int64_t expert = n - dense;
  const int64_t expected = !zero1 ? 2 * n : ep == 1 ? n : dense + 2 * expert;
  EXPECT_EQ(total.data<int64_t>()[0], expected);

  // ZeRO-1's gather: every rank ends with each element's owner's value.
  float* v = params.flat_values().data<float>();
  for (int64_t i = 0; i < n; ++i) v[i] = -1.0f;
  for (const auto& [b, e] : sync.owned())
    for (int64_t i = b; i < e; ++i) v[i] = static_cast<float>(i % 1000);
  sync.gather_parameters();
  int64_t missing = 0;
  for (int64_t i = 0; i < n; ++i) missing += v[i] != static_cast<float>(i % 1000);
  EXPECT_EQ(missing, 0);
}

class World2GradSync : public test::MpiTest {};

TEST_F(World2GradSync, SumsOverTheRightGroupsAndZeroOnePartsCoverEverything) {
  MOETRON_REQUIRE_WORLD(2);
  for (bool zero1 : {false, true})
    for (int ep : {1, 2})
      for (int64_t most : {GradSync::kMaxElementsPerCall, int64_t{37}})
        expect_reduced(zero1, ep, most);
}

}  // namespace
}  // namespace moetron
