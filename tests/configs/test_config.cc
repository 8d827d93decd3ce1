// The run-config layer: parsing, overrides, validation, loading and printing. Every error
// must name the culprit (FILE:LINE:COL or the field path) and the bad value.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/check.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\n"                         \
      << "missing: " << (needle)

// The message of the moetron::Error that `fn` throws ("" plus a test failure if none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a moetron::Error";
  return "";
}

// A small valid dense model; tests break one thing at a time with overrides.
constexpr const char* kBase = R"(
model {
  vocab_size: 256
  hidden_size: 128
  num_hidden_layers: 4
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 384
  num_nextn_predict_layers: 1
}
schedule {
  total_steps: 100
  warmup_steps: 10
}
)";

config::RunConfig with(std::initializer_list<std::string> sets) {
  config::RunConfig cfg = parse_config_text(kBase, "base.pbtxt");
  for (const auto& s : sets) apply_override(cfg, s);
  return cfg;
}

// The validation error of kBase after `sets`.
std::string invalid(std::initializer_list<std::string> sets) {
  const config::RunConfig cfg = with(sets);
  return error_of([&] { validate_config(cfg); });
}

void expect_valid(std::initializer_list<std::string> sets) {
  const config::RunConfig cfg = with(sets);
  EXPECT_NO_THROW(validate_config(cfg));
}

std::string parse_error(const std::string& text) {
  return error_of([&] { parse_config_text(text, "f.pbtxt"); });
}

// A file under the temp dir that is removed when the test ends.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& text)
      : path_(fs::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { fs::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

// MoE base: 8 routed experts, top-2.
const std::initializer_list<std::string> kMoe = {"model.moe.n_routed_experts=8",
                                                 "model.moe.num_experts_per_tok=2"};

std::string invalid_moe(std::initializer_list<std::string> more) {
  config::RunConfig cfg = with(kMoe);
  for (const auto& s : more) apply_override(cfg, s);
  return error_of([&] { validate_config(cfg); });
}

// ---------------------------------------------------------------------------------------
// Parsing

TEST(Parse, EmptyTextIsAllDefaultsAndValid) {
  const auto cfg = parse_config_text("", "empty.pbtxt");
  EXPECT_EQ(cfg.model().hidden_size(), 256);
  EXPECT_EQ(cfg.seed(), 1234u);
  EXPECT_NO_THROW(validate_config(cfg));
}

TEST(Parse, ReadsFieldsAndComments) {
  const auto cfg = parse_config_text(kBase, "base.pbtxt");
  EXPECT_EQ(cfg.model().num_key_value_heads(), 2);
  EXPECT_EQ(cfg.schedule().total_steps(), 100);
  EXPECT_NO_THROW(validate_config(cfg));
}

TEST(Parse, SyntaxErrorHasOneBasedLineAndColumn) {
  const std::string msg = parse_error("model {\n  hidden_size: 12\n  num_hidden_layers: : 3\n}\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:3:22: ");
  EXPECT_CONTAINS(msg, "Expected integer");
}

TEST(Parse, MissingCloseBraceReportsEnd) {
  const std::string msg = parse_error("model {\n  hidden_size: 12\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:3:1: ");
}

TEST(Parse, UnknownFieldSuggestsClosestAndListsValid) {
  const std::string msg = parse_error("model {\n  hidden_size: 12\n  hiden_size: 5\n}\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:3:3: ");
  EXPECT_CONTAINS(msg, "\"hiden_size\"");
  EXPECT_CONTAINS(msg, "did you mean 'hidden_size'?");
  EXPECT_CONTAINS(msg, "valid: vocab_size, hidden_size, num_hidden_layers");
}

TEST(Parse, UnknownTopLevelField) {
  const std::string msg = parse_error("# comment\nmodle {\n}\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:2:1: ");
  EXPECT_CONTAINS(msg, "\"modle\"");
  EXPECT_CONTAINS(msg, "did you mean 'model'?");
}

TEST(Parse, UnknownFieldWithoutCloseMatchListsValid) {
  const std::string msg = parse_error("optimizer { momentum: 0.9 }");
  EXPECT_CONTAINS(msg, "f.pbtxt:1:13: ");
  EXPECT_CONTAINS(msg, "\"momentum\"");
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
  EXPECT_CONTAINS(msg, "valid: lr, beta1, beta2");
}

TEST(Parse, WrongTypeStringForInt) {
  const std::string msg = parse_error("model {\n  hidden_size: \"abc\"\n}\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:2:16: ");
  EXPECT_CONTAINS(msg, "Expected integer");
  EXPECT_CONTAINS(msg, "abc");
}

TEST(Parse, WrongTypeFloatForInt) {
  const std::string msg = parse_error("data { seq_len: 1.5 }");
  EXPECT_CONTAINS(msg, "f.pbtxt:1:17: ");
  EXPECT_CONTAINS(msg, "1.5");
}

TEST(Parse, BadEnumListsValues) {
  const std::string msg = parse_error("model {\n  moe {\n    scoring_func: SIGMOD\n  }\n}\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:3:19: ");
  EXPECT_CONTAINS(msg, "SIGMOD");
  EXPECT_CONTAINS(msg, "valid: SIGMOID, SOFTMAX");
}

TEST(Parse, BadBool) {
  const std::string msg = parse_error("model { tie_word_embeddings: yes }");
  EXPECT_CONTAINS(msg, "f.pbtxt:1:30: ");
  EXPECT_CONTAINS(msg, "yes");
  EXPECT_CONTAINS(msg, "valid: true, false");
}

TEST(Parse, RepeatedSingularField) {
  const std::string msg = parse_error("seed: 1\nseed: 2\n");
  EXPECT_CONTAINS(msg, "f.pbtxt:2:1: ");
  EXPECT_CONTAINS(msg, "\"seed\"");
}

// ---------------------------------------------------------------------------------------
// Validation: plain ranges

TEST(Validate, SizesMustBePositive) {
  for (const char* path : {"model.vocab_size", "model.hidden_size", "model.num_hidden_layers",
                           "model.num_attention_heads", "model.intermediate_size", "data.seq_len",
                           "data.micro_batch_size", "data.grad_accum_steps", "schedule.total_steps",
                           "logging.log_interval"}) {
    SCOPED_TRACE(path);
    for (const char* value : {"0", "-3"}) {
      const std::string msg = invalid({std::string(path) + "=" + value});
      EXPECT_CONTAINS(msg, std::string(path) + " = " + value + ": must be > 0");
    }
  }
}

TEST(Validate, PositiveFloats) {
  for (const char* path : {"model.rope_theta", "model.rms_norm_eps", "model.init_std",
                           "optimizer.lr", "optimizer.eps"}) {
    SCOPED_TRACE(path);
    const std::string msg = invalid({std::string(path) + "=0"});
    EXPECT_CONTAINS(msg, std::string(path) + " = 0: must be > 0");
  }
}

TEST(Validate, NonNegative) {
  for (const char* path :
       {"model.num_nextn_predict_layers", "model.num_key_value_heads", "optimizer.weight_decay",
        "optimizer.grad_clip", "schedule.warmup_steps", "schedule.mtp_loss_weight",
        "logging.val_interval", "logging.val_batches", "model.moe.n_routed_experts"}) {
    SCOPED_TRACE(path);
    const std::string msg = invalid({std::string(path) + "=-1"});
    EXPECT_CONTAINS(msg, std::string(path) + " = -1: must be >= 0");
  }
}

TEST(Validate, ThreadsHaveAnUpperBound) {
  EXPECT_CONTAINS(invalid({"threads=-1"}), "threads = -1: must be in [0, 1024]");
  EXPECT_CONTAINS(invalid({"threads=100000"}), "threads = 100000: must be in [0, 1024]");
  expect_valid({"threads=1024"});
}

TEST(Validate, ZeroIsFineWhereAllowed) {
  expect_valid({"optimizer.weight_decay=0", "optimizer.grad_clip=0", "schedule.warmup_steps=0",
                "schedule.mtp_loss_weight=0", "logging.val_interval=0", "logging.val_batches=0",
                "model.num_nextn_predict_layers=0", "model.num_key_value_heads=0", "threads=0",
                "optimizer.beta1=0", "schedule.min_lr_ratio=0"});
}

TEST(Validate, CheckpointSettings) {
  expect_valid({"checkpoint.interval=100", "checkpoint.dir=ckpt", "checkpoint.keep_last=0"});
  EXPECT_CONTAINS(invalid({"checkpoint.interval=-1"}), "checkpoint.interval = -1: must be >= 0");
  EXPECT_CONTAINS(invalid({"checkpoint.keep_last=-2"}), "checkpoint.keep_last = -2: must be >= 0");
}

TEST(Validate, Betas) {
  EXPECT_CONTAINS(invalid({"optimizer.beta1=1"}), "optimizer.beta1 = 1: must be in [0, 1)");
  EXPECT_CONTAINS(invalid({"optimizer.beta2=-0.5"}), "optimizer.beta2 = -0.5: must be in [0, 1)");
  expect_valid({"optimizer.beta2=0.999"});
}

TEST(Validate, WarmupNotBeyondTotal) {
  const std::string msg = invalid({"schedule.warmup_steps=101"});
  EXPECT_CONTAINS(msg, "schedule.warmup_steps = 101");
  EXPECT_CONTAINS(msg, "must be <= schedule.total_steps = 100");
  expect_valid({"schedule.warmup_steps=100"});
}

TEST(Validate, ScheduleFractions) {
  EXPECT_CONTAINS(invalid({"schedule.min_lr_ratio=1.5"}),
                  "schedule.min_lr_ratio = 1.5: must be in [0, 1]");
  EXPECT_CONTAINS(invalid({"schedule.min_lr_ratio=-0.1"}), "schedule.min_lr_ratio = -0.1");
  EXPECT_CONTAINS(invalid({"schedule.decay_fraction=0"}),
                  "schedule.decay_fraction = 0: must be in (0, 1]");
  EXPECT_CONTAINS(invalid({"schedule.decay_fraction=1.5"}), "schedule.decay_fraction = 1.5");
  expect_valid({"schedule.decay_fraction=1", "schedule.min_lr_ratio=1"});
}

TEST(Validate, MtpWeightChangesSortedAndNonNegative) {
  auto cfg = parse_config_text(R"(
schedule {
  mtp_loss_weight_changes { from_step: 0 weight: 0.3 }
  mtp_loss_weight_changes { from_step: 50 weight: 0.1 }
})",
                               "t");
  EXPECT_NO_THROW(validate_config(cfg));
  cfg.mutable_schedule()->mutable_mtp_loss_weight_changes(1)->set_from_step(0);
  std::string msg = error_of([&] { validate_config(cfg); });
  EXPECT_CONTAINS(msg, "schedule.mtp_loss_weight_changes[1].from_step = 0");
  EXPECT_CONTAINS(msg, "must be > the previous entry's from_step = 0");
  cfg.mutable_schedule()->mutable_mtp_loss_weight_changes(1)->set_from_step(60);
  cfg.mutable_schedule()->mutable_mtp_loss_weight_changes(1)->set_weight(-0.5f);
  msg = error_of([&] { validate_config(cfg); });
  EXPECT_CONTAINS(msg, "schedule.mtp_loss_weight_changes[1].weight = -0.5: must be >= 0");
  cfg.mutable_schedule()->mutable_mtp_loss_weight_changes(1)->set_weight(0.1f);
  cfg.mutable_schedule()->mutable_mtp_loss_weight_changes(0)->set_from_step(-1);
  msg = error_of([&] { validate_config(cfg); });
  EXPECT_CONTAINS(msg, "schedule.mtp_loss_weight_changes[0].from_step = -1: must be >= 0");
}

TEST(Validate, ParallelSizesMustDivideWhatTheySplit) {
  EXPECT_CONTAINS(invalid({"parallel.dp=-1"}), "parallel.dp = -1: must be >= 0");
  for (const char* path : {"parallel.tp", "parallel.ep"})
    EXPECT_CONTAINS(invalid({std::string(path) + "=0"}), std::string(path) + " = 0: must be > 0");
  expect_valid({"parallel.dp=4", "parallel.tp=2"});
  // kBase: 4 heads, 2 KV heads, FFN 384.
  std::string msg = invalid({"parallel.tp=4"});
  EXPECT_CONTAINS(msg, "parallel.tp = 4: must divide model.num_key_value_heads");
  EXPECT_CONTAINS(msg, "= 2 (valid: 1, 2)");
  msg = invalid({"parallel.tp=3"});
  EXPECT_CONTAINS(msg, "parallel.tp = 3: must divide model.num_attention_heads = 4");
  EXPECT_CONTAINS(invalid({"parallel.ep=2"}), "parallel.ep = 2: needs an MoE model");
  // MoE: 8 experts, and the tokens of a micro-batch are split over tp.
  EXPECT_CONTAINS(
      invalid_moe({"parallel.ep=3"}),
      "parallel.ep = 3: must divide model.moe.n_routed_experts = 8 (valid: 1, 2, 4, 8)");
  config::RunConfig odd = with(kMoe);
  apply_override(odd, "parallel.tp=2");
  apply_override(odd, "data.micro_batch_size=1");
  apply_override(odd, "data.seq_len=5");
  EXPECT_CONTAINS(error_of([&] { validate_config(odd); }),
                  "must divide data.micro_batch_size * data.seq_len");
  config::RunConfig shared = with(kMoe);
  apply_override(shared, "parallel.tp=2");
  apply_override(shared, "model.moe.n_shared_experts=1");
  apply_override(shared, "model.moe.moe_intermediate_size=7");
  EXPECT_CONTAINS(error_of([&] { validate_config(shared); }),
                  "must divide model.moe.n_shared_experts * moe_intermediate_size = 7");
}

TEST(Validate, EmptyDirectories) {
  EXPECT_CONTAINS(invalid({"data.dataset_dir="}), "data.dataset_dir = \"\"");
  EXPECT_CONTAINS(invalid({"logging.run_dir="}), "logging.run_dir = \"\"");
}

TEST(Validate, NanAndInfAreErrors) {
  std::string msg = invalid({"optimizer.lr=nan"});
  EXPECT_CONTAINS(msg, "optimizer.lr = nan: must be a finite number");
  msg = invalid({"model.moe.z_loss_coeff=inf"});
  EXPECT_CONTAINS(msg, "model.moe.z_loss_coeff = inf: must be a finite number");
  // From the text format too, and inside repeated messages.
  auto cfg =
      parse_config_text("schedule { mtp_loss_weight_changes { from_step: 3 weight: -inf } }", "t");
  msg = error_of([&] { validate_config(cfg); });
  EXPECT_CONTAINS(msg, "schedule.mtp_loss_weight_changes[0].weight = -inf");
}

// ---------------------------------------------------------------------------------------
// Validation: attention shape

TEST(Validate, HeadsMustDivideHidden) {
  const std::string msg = invalid({"model.num_attention_heads=3"});
  EXPECT_CONTAINS(msg, "model.num_attention_heads = 3");
  EXPECT_CONTAINS(msg, "must divide model.hidden_size = 128");
  EXPECT_CONTAINS(msg, "valid: 1, 2, 4, 8, 16, 32, 64, 128");
}

TEST(Validate, HeadDimMustBeEven) {
  const std::string msg = invalid({"model.hidden_size=96", "model.num_attention_heads=32"});
  EXPECT_CONTAINS(msg, "model.num_attention_heads = 32");
  EXPECT_CONTAINS(msg, "head_dim");
  EXPECT_CONTAINS(msg, "= 3,");
  EXPECT_CONTAINS(msg, "valid: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48)");
}

// Qwen3-Next's options: head_dim set apart from hidden / heads, partial RoPE of an even width,
// Gated DeltaNet's heads, the shared-expert gate, QK-clip not with q/k norms.
config::RunConfig hybrid(std::initializer_list<std::string> sets) {
  config::RunConfig cfg = with({});
  cfg.mutable_model()->add_layer_types(config::ModelConfig::GATED_DELTANET);
  cfg.mutable_model()->add_layer_types(config::ModelConfig::ATTENTION);
  for (const auto& s : sets) apply_override(cfg, s);
  return cfg;
}

TEST(Validate, TheQwenOptionsNameWhatWouldBeValid) {
  EXPECT_NO_THROW(validate_config(hybrid({"model.head_dim=24", "model.partial_rotary_factor=0.25",
                                          "model.attention_output_gate=true", "model.qk_norm=true",
                                          "model.zero_centered_norms=true"})));
  auto error = [](std::initializer_list<std::string> sets) {
    const config::RunConfig cfg = hybrid(sets);
    return error_of([&] { validate_config(cfg); });
  };
  std::string msg = error({"model.head_dim=20", "model.partial_rotary_factor=0.25"});
  EXPECT_CONTAINS(msg, "model.partial_rotary_factor = 0.25");
  EXPECT_CONTAINS(msg, "= 5, which must be an even whole number");
  msg = error({"model.partial_rotary_factor=1.5"});
  EXPECT_CONTAINS(msg, "must be in (0, 1]");
  msg = error({"model.linear_attention.linear_num_value_heads=3"});
  EXPECT_CONTAINS(msg, "model.linear_attention.linear_num_value_heads = 3");
  EXPECT_CONTAINS(msg, "multiple of linear_num_key_heads = 2");
  msg = error({"model.linear_attention.linear_conv_kernel_dim=0"});
  EXPECT_CONTAINS(msg, "model.linear_attention.linear_conv_kernel_dim");
  msg = error({"model.moe.n_routed_experts=4", "model.moe.n_shared_experts=0",
               "model.moe.shared_expert_gate=true"});
  EXPECT_CONTAINS(msg, "model.moe.shared_expert_gate");
  EXPECT_CONTAINS(msg, "n_shared_experts is 0");
  msg = error({"model.qk_norm=true", "optimizer.kind=MUON", "optimizer.muon.qk_clip_tau=100"});
  EXPECT_CONTAINS(msg, "optimizer.muon.qk_clip_tau = 100");
  EXPECT_CONTAINS(msg, "model.qk_norm");
  msg = error({"model.num_key_value_heads=4", "parallel.tp=4"});  // 2 linear key heads
  EXPECT_CONTAINS(msg, "parallel.tp = 4");
  EXPECT_CONTAINS(msg, "model.linear_attention.linear_num_key_heads = 2");
}

TEST(Validate, KvHeadsMustDivideHeads) {
  const std::string msg = invalid({"model.num_key_value_heads=3"});
  EXPECT_CONTAINS(msg, "model.num_key_value_heads = 3");
  EXPECT_CONTAINS(msg, "must divide model.num_attention_heads = 4");
  EXPECT_CONTAINS(msg, "valid: 0 = same as heads, 1, 2, 4");
  expect_valid({"model.num_key_value_heads=1"});
  expect_valid({"model.num_key_value_heads=4"});
}

TEST(Helpers, HeadDimAndKvHeads) {
  auto cfg = with({});
  EXPECT_EQ(head_dim(cfg.model()), 32);
  EXPECT_EQ(kv_heads(cfg.model()), 2);
  cfg.mutable_model()->set_num_key_value_heads(0);
  EXPECT_EQ(kv_heads(cfg.model()), 4);
}

// ---------------------------------------------------------------------------------------
// Validation: MoE

TEST(Moe, ValidConfigs) {
  expect_valid(kMoe);
  config::RunConfig cfg = with(kMoe);
  for (const char* s :
       {"model.moe.n_group=4", "model.moe.topk_group=2", "model.moe.n_shared_experts=1",
        "model.moe.capacity_factor=1.25", "model.moe.first_k_dense_replace=4",
        "model.moe.bias_update_speed=0.001", "model.moe.routed_scaling_factor=2.5"})
    apply_override(cfg, s);
  EXPECT_NO_THROW(validate_config(cfg));
}

TEST(Moe, DenseModelIgnoresMoeFields) {
  expect_valid(
      {"model.moe.num_experts_per_tok=0", "model.moe.n_group=0", "model.moe.capacity_factor=-1"});
}

TEST(Moe, ExpertsPerTokenInRange) {
  for (const char* k : {"0", "9"}) {
    const std::string msg = invalid_moe({std::string("model.moe.num_experts_per_tok=") + k});
    EXPECT_CONTAINS(msg, std::string("model.moe.num_experts_per_tok = ") + k);
    EXPECT_CONTAINS(msg, "must be in [1, model.moe.n_routed_experts = 8]");
  }
  expect_valid({"model.moe.n_routed_experts=8", "model.moe.num_experts_per_tok=8"});
}

TEST(Moe, SizesAndCoefficients) {
  EXPECT_CONTAINS(invalid_moe({"model.moe.moe_intermediate_size=0"}),
                  "model.moe.moe_intermediate_size = 0: must be > 0");
  EXPECT_CONTAINS(invalid_moe({"model.moe.n_shared_experts=-1"}),
                  "model.moe.n_shared_experts = -1: must be >= 0");
  EXPECT_CONTAINS(invalid_moe({"model.moe.routed_scaling_factor=0"}),
                  "model.moe.routed_scaling_factor = 0: must be > 0");
  for (const char* path :
       {"model.moe.bias_update_speed", "model.moe.bias_freeze_step", "model.moe.seq_aux_loss_alpha",
        "model.moe.aux_loss_coeff", "model.moe.z_loss_coeff"}) {
    SCOPED_TRACE(path);
    EXPECT_CONTAINS(invalid_moe({std::string(path) + "=-1"}),
                    std::string(path) + " = -1: must be >= 0");
  }
}

TEST(Moe, FirstKDenseWithinLayers) {
  std::string msg = invalid_moe({"model.moe.first_k_dense_replace=5"});
  EXPECT_CONTAINS(msg, "model.moe.first_k_dense_replace = 5");
  EXPECT_CONTAINS(msg, "must be in [0, model.num_hidden_layers = 4]");
  msg = invalid_moe({"model.moe.first_k_dense_replace=-1"});
  EXPECT_CONTAINS(msg, "model.moe.first_k_dense_replace = -1");
}

TEST(Moe, GroupsDivideExperts) {
  std::string msg = invalid_moe({"model.moe.n_group=0"});
  EXPECT_CONTAINS(msg, "model.moe.n_group = 0: must be >= 1");
  msg = invalid_moe({"model.moe.n_group=3"});
  EXPECT_CONTAINS(msg, "model.moe.n_group = 3");
  EXPECT_CONTAINS(msg, "must divide model.moe.n_routed_experts = 8 (valid: 1, 2, 4, 8)");
}

TEST(Moe, TopkGroupInRange) {
  std::string msg = invalid_moe({"model.moe.n_group=2", "model.moe.topk_group=3"});
  EXPECT_CONTAINS(msg, "model.moe.topk_group = 3: must be in [1, model.moe.n_group = 2]");
  msg = invalid_moe({"model.moe.n_group=2", "model.moe.topk_group=0"});
  EXPECT_CONTAINS(msg, "model.moe.topk_group = 0");
}

TEST(Moe, TopKReachableThroughGroups) {
  // 4 groups of 2 experts, only the best group eligible: at most 2 experts reachable.
  const std::string msg = invalid_moe(
      {"model.moe.n_group=4", "model.moe.topk_group=1", "model.moe.num_experts_per_tok=3"});
  EXPECT_CONTAINS(msg, "model.moe.num_experts_per_tok = 3");
  EXPECT_CONTAINS(msg, "topk_group (1) * experts per group (8 / 4 = 2) = 2");
}

TEST(Moe, SigmoidGroupsNeedTwoExperts) {
  const std::initializer_list<std::string> one_per_group = {
      "model.moe.n_group=8", "model.moe.topk_group=4", "model.moe.num_experts_per_tok=2"};
  const std::string msg = invalid_moe(one_per_group);
  EXPECT_CONTAINS(msg, "model.moe.n_group = 8");
  EXPECT_CONTAINS(msg, "top-2");
  EXPECT_CONTAINS(msg, "valid: 1, 2, 4)");
  // Softmax scoring ranks groups by their best expert: one per group is fine.
  config::RunConfig cfg = with(kMoe);
  for (const auto& s : one_per_group) apply_override(cfg, s);
  apply_override(cfg, "model.moe.scoring_func=SOFTMAX");
  EXPECT_NO_THROW(validate_config(cfg));
}

TEST(Moe, CapacityFactor) {
  const std::string msg = invalid_moe({"model.moe.capacity_factor=-1"});
  EXPECT_CONTAINS(msg, "model.moe.capacity_factor = -1");
  EXPECT_CONTAINS(msg, "capacity factor must be > 0, or 0 for dropless");
  config::RunConfig cfg = with(kMoe);
  apply_override(cfg, "model.moe.capacity_factor=0");
  EXPECT_NO_THROW(validate_config(cfg));
}

// ---------------------------------------------------------------------------------------
// Overrides

TEST(Override, EveryScalarKind) {
  config::RunConfig cfg = with({});
  EXPECT_FALSE(cfg.model().has_moe());
  apply_override(cfg, "model.hidden_size=512");                   // int32
  apply_override(cfg, "schedule.total_steps=+5000000000");        // int64
  apply_override(cfg, "seed=18446744073709551615");               // uint64
  apply_override(cfg, "optimizer.lr=3e-4");                       // float
  apply_override(cfg, "model.tie_word_embeddings=true");          // bool
  apply_override(cfg, "optimizer.decay_norms_and_embeddings=1");  // bool as 1
  apply_override(cfg, "data.dataset_dir=data/prepared/x=y");      // string, '=' inside
  apply_override(cfg, "model.rope_style=INTERLEAVED");            // enum
  apply_override(cfg, "model.moe.scoring_func=SOFTMAX");          // enum, nested created
  apply_override(cfg, "model.moe.routed_scaling_factor=2.5");     // nested float
  EXPECT_EQ(cfg.model().hidden_size(), 512);
  EXPECT_EQ(cfg.schedule().total_steps(), 5000000000LL);
  EXPECT_EQ(cfg.seed(), 18446744073709551615ULL);
  EXPECT_FLOAT_EQ(cfg.optimizer().lr(), 3e-4f);
  EXPECT_TRUE(cfg.model().tie_word_embeddings());
  EXPECT_TRUE(cfg.optimizer().decay_norms_and_embeddings());
  EXPECT_EQ(cfg.data().dataset_dir(), "data/prepared/x=y");
  EXPECT_EQ(cfg.model().rope_style(), config::ModelConfig::INTERLEAVED);
  EXPECT_TRUE(cfg.model().has_moe());
  EXPECT_EQ(cfg.model().moe().scoring_func(), config::MoeConfig::SOFTMAX);
  EXPECT_FLOAT_EQ(cfg.model().moe().routed_scaling_factor(), 2.5f);
  apply_override(cfg, "model.tie_word_embeddings=false");
  EXPECT_FALSE(cfg.model().tie_word_embeddings());
  apply_override(cfg, "model.hidden_size=-7");  // parses; validation judges the range
  EXPECT_EQ(cfg.model().hidden_size(), -7);
}

TEST(Override, BadValuePerKind) {
  config::RunConfig cfg = with({});
  struct Case {
    const char* assignment;
    const char* expected;
  };
  for (const Case& c : {
           Case{"model.hidden_size=abc", "--set model.hidden_size=abc: expected an int32"},
           Case{"model.hidden_size=1.5", "--set model.hidden_size=1.5: expected an int32"},
           Case{"model.hidden_size=", "--set model.hidden_size=: expected an int32"},
           Case{"model.hidden_size=3000000000", "=3000000000: expected an int32"},
           Case{"schedule.total_steps=1e3", "schedule.total_steps=1e3: expected an int64"},
           Case{"seed=-1", "--set seed=-1: expected a uint64"},
           Case{"optimizer.lr=fast", "--set optimizer.lr=fast: expected a float"},
           Case{"optimizer.lr=1e40", "--set optimizer.lr=1e40: expected a float"},
           Case{"model.tie_word_embeddings=yes",
                "model.tie_word_embeddings=yes: expected a bool (valid: true, false)"},
           Case{"model.rope_style=rotate_half",
                "model.rope_style=rotate_half: expected one of: ROTATE_HALF, INTERLEAVED"},
           Case{"schedule.kind=LINEAR", "expected one of: COSINE, WARMUP_STABLE_DECAY, CONSTANT"},
       }) {
    SCOPED_TRACE(c.assignment);
    EXPECT_CONTAINS(error_of([&] { apply_override(cfg, c.assignment); }), c.expected);
  }
  EXPECT_EQ(cfg.model().hidden_size(), 128) << "a failed override must not change the config";
}

TEST(Override, BadPaths) {
  config::RunConfig cfg = with({});
  std::string msg = error_of([&] { apply_override(cfg, "model.hiden_size=5"); });
  EXPECT_CONTAINS(msg, "--set model.hiden_size=5: unknown field 'hiden_size' in model");
  EXPECT_CONTAINS(msg, "did you mean 'hidden_size'?");
  EXPECT_CONTAINS(msg, "valid: vocab_size, hidden_size");

  msg = error_of([&] { apply_override(cfg, "optimiser.lr=1"); });
  EXPECT_CONTAINS(msg, "unknown field 'optimiser' in the run config");
  EXPECT_CONTAINS(msg, "did you mean 'optimizer'?");

  msg = error_of([&] { apply_override(cfg, "model.moe.k=2"); });
  EXPECT_CONTAINS(msg, "unknown field 'k' in model.moe");
  EXPECT_CONTAINS(msg, "n_routed_experts");

  msg = error_of([&] { apply_override(cfg, "model=5"); });
  EXPECT_CONTAINS(msg, "'model' is a message; set one of its fields (valid: vocab_size");

  msg = error_of([&] { apply_override(cfg, "model.hidden_size.x=5"); });
  EXPECT_CONTAINS(msg, "'model.hidden_size' is a int32, not a message");

  msg = error_of([&] { apply_override(cfg, "schedule.mtp_loss_weight_changes.weight=1"); });
  EXPECT_CONTAINS(msg, "'schedule.mtp_loss_weight_changes' is a repeated field");

  msg = error_of([&] { apply_override(cfg, "model..hidden_size=5"); });
  EXPECT_CONTAINS(msg, "empty field name in model");

  for (const char* bad : {"model.hidden_size", "=5", ""}) {
    msg = error_of([&] { apply_override(cfg, bad); });
    EXPECT_CONTAINS(msg, "expected FIELD.PATH=VALUE");
  }
}

// ---------------------------------------------------------------------------------------
// Loading files

TEST(Load, ShippedConfigsValidate) {
  for (const char* name : {"tiny.pbtxt", "bench-cpu.pbtxt"}) {
    SCOPED_TRACE(name);
    const std::string path = std::string(MOETRON_SOURCE_DIR) + "/configs/" + name;
    config::RunConfig cfg;
    EXPECT_NO_THROW(cfg = load_config(path, {}));
    EXPECT_EQ(cfg.model().num_nextn_predict_layers(), 1);
  }
  const auto tiny = load_config(std::string(MOETRON_SOURCE_DIR) + "/configs/tiny.pbtxt", {});
  EXPECT_EQ(tiny.model().vocab_size(), 256);
  EXPECT_EQ(kv_heads(tiny.model()), 2);
  EXPECT_EQ(tiny.schedule().total_steps(), 1500);
  EXPECT_EQ(tiny.logging().run_dir(), "runs/tiny");
  const auto bench = load_config(std::string(MOETRON_SOURCE_DIR) + "/configs/bench-cpu.pbtxt", {});
  EXPECT_EQ(bench.model().vocab_size(), 4096);
  EXPECT_EQ(bench.data().dataset_dir(), "data/prepared/fortunes-sp4096");
}

TEST(Load, MissingFileAndDirectory) {
  std::string msg = error_of([] { load_config("/nonexistent/run.pbtxt", {}); });
  EXPECT_CONTAINS(msg, "\"/nonexistent/run.pbtxt\" does not exist");
  const std::string dir = fs::temp_directory_path().string();
  msg = error_of([&] { load_config(dir, {}); });
  EXPECT_CONTAINS(msg, "'" + dir + "' is a directory");
}

TEST(Load, ParseErrorNamesFile) {
  const TempFile f("load_parse.pbtxt", "model {\n  hidden_size: x\n}\n");
  EXPECT_CONTAINS(error_of([&] { load_config(f.path(), {}); }), f.path() + ":2:16: ");
}

TEST(Load, OverridesAppliedInOrder) {
  const TempFile f("load_override.pbtxt", kBase);
  const std::vector<std::string> sets = {"model.hidden_size=256", "model.hidden_size=64",
                                         "--unused"};
  EXPECT_CONTAINS(error_of([&] { load_config(f.path(), sets); }), "--set --unused");
  const auto cfg = load_config(f.path(), std::span(sets).first(2));
  EXPECT_EQ(cfg.model().hidden_size(), 64);
}

TEST(Load, ValidationErrorPointsAtTheLine) {
  const TempFile f("load_line.pbtxt", "model {\n  hidden_size: 128\n  num_attention_heads: 5\n}\n");
  const std::string msg = error_of([&] { load_config(f.path(), {}); });
  EXPECT_CONTAINS(msg, f.path() + ":3:3: model.num_attention_heads = 5: must divide");
}

TEST(Load, ValidationErrorInRepeatedPointsAtTheLine) {
  const TempFile f("load_repeated.pbtxt",
                   "schedule {\n"
                   "  mtp_loss_weight_changes { from_step: 0 weight: 0.3 }\n"
                   "  mtp_loss_weight_changes { from_step: 10 weight: -1 }\n"
                   "}\n");
  const std::string msg = error_of([&] { load_config(f.path(), {}); });
  EXPECT_CONTAINS(msg, f.path() + ":3:43: schedule.mtp_loss_weight_changes[1].weight = -1");
}

TEST(Load, ValidationErrorBlamesTheOverride) {
  const TempFile f("load_blame.pbtxt", kBase);
  const std::vector<std::string> sets = {"optimizer.lr=0"};
  const std::string msg = error_of([&] { load_config(f.path(), sets); });
  EXPECT_CONTAINS(msg, "--set optimizer.lr=0: optimizer.lr = 0: must be > 0");
}

TEST(Load, ValidationErrorOfADefaultNamesTheFile) {
  const TempFile f("load_default.pbtxt", "schedule { total_steps: 50 }\n");  // warmup 100
  const std::string msg = error_of([&] { load_config(f.path(), {}); });
  EXPECT_CONTAINS(msg, f.path() + ": schedule.warmup_steps = 100");
}

// ---------------------------------------------------------------------------------------
// Printing

TEST(Print, ResolvedConfigShowsDefaultsAndRoundTrips) {
  const config::RunConfig cfg = with({"optimizer.lr=0.002"});
  const std::string text = config_to_text(cfg);
  EXPECT_CONTAINS(text, "rope_theta: 10000");
  EXPECT_CONTAINS(text, "scoring_func: SIGMOID");
  EXPECT_CONTAINS(text, "lr: 0.002");
  EXPECT_CONTAINS(text, "seed: 1234");
  EXPECT_CONTAINS(text, "dataset_dir: \"data/prepared/fortunes\"");
  const config::RunConfig back = parse_config_text(text, "resolved");
  EXPECT_EQ(back.SerializeAsString(), resolve_defaults(cfg).SerializeAsString());
  EXPECT_EQ(config_to_text(back), text);
  EXPECT_NO_THROW(validate_config(back));
}

// ---------------------------------------------------------------------------------------
// Command line

TEST(Args, SetForms) {
  const std::vector<std::string> args = {"--set",     "a.b=1",      "run.pbtxt",
                                         "--set=c=2", "--resume=x", "extra"};
  const ConfigArgs parsed = parse_config_args(args);
  EXPECT_EQ(parsed.path, "run.pbtxt");
  EXPECT_EQ(parsed.overrides, (std::vector<std::string>{"a.b=1", "c=2"}));
  EXPECT_EQ(parsed.rest, (std::vector<std::string>{"--resume=x", "extra"}));
}

TEST(Args, Errors) {
  EXPECT_CONTAINS(error_of([] { parse_config_args(std::vector<std::string>{}); }),
                  "missing the CONFIG file argument");
  EXPECT_CONTAINS(error_of([] {
                    parse_config_args(std::vector<std::string>{"run.pbtxt", "--set"});
                  }),
                  "--set needs an argument");
  EXPECT_CONTAINS(error_of([] {
                    parse_config_args(std::vector<std::string>{"r", "--set", "hidden"});
                  }),
                  "--set hidden: expected a.b=value");
}

TEST(ValidateCommand, PrintsResolvedConfigAndOk) {
  const std::vector<std::string> args = {std::string(MOETRON_SOURCE_DIR) + "/configs/tiny.pbtxt",
                                         "--set", "model.moe.scoring_func=SOFTMAX"};
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = run_validate(args);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 0);
  EXPECT_CONTAINS(out, "scoring_func: SOFTMAX");
  EXPECT_CONTAINS(out, "run_dir: \"runs/tiny\"");
  EXPECT_EQ(err, "ok: " + args[0] + "\n");
  EXPECT_EQ(parse_config_text(out, "stdout").model().hidden_size(), 128);
}

TEST(ValidateCommand, BadUsageShowsUsage) {
  std::string msg = error_of([] { run_validate(std::vector<std::string>{}); });
  EXPECT_CONTAINS(msg, "missing the CONFIG file argument");
  EXPECT_CONTAINS(msg, "usage: moetron validate CONFIG");
  msg = error_of([] { run_validate(std::vector<std::string>{"a.pbtxt", "b.pbtxt"}); });
  EXPECT_CONTAINS(msg, "unexpected argument 'b.pbtxt'");
  EXPECT_CONTAINS(msg, "usage: moetron validate CONFIG");
}

}  // namespace
}  // namespace moetron
