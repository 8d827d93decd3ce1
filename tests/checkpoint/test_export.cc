// `moetron export` (docs/export.md): the export of a checkpoint, read back by an independent
// Python safetensors reader and fed to the PyTorch reference model, gives moetron's logits; its
// bf16 is torch's round-to-nearest-even; its memory stays near one shard; it refuses what is not
// a checkpoint, what glm4_moe cannot express, and to replace anything but an earlier export.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/export.h"
#include "checkpoint/h5.h"
#include "checkpoint/model_tensors.h"
#include "checkpoint/safetensors.h"
#include "configs/config.h"
#include "data/json.h"
#include "data/prepare.h"
#include "tests/checkpoint/export_logits.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using checkpoint::ExportOptions;
using checkpoint::StDtype;
using data::testing::read_text;
using data::testing::TempDir;
using data::testing::write_text;

const std::string kMoetron = std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";
const std::string kReference = std::string(MOETRON_SOURCE_DIR) + "/tests/reference";

// A GLM-4.5-shaped model small enough for the PyTorch reference: GQA, a dense first layer, then
// MoE with group-limited sigmoid routing, a shared expert and scaled, normalised gates; D MTP
// modules.
config::RunConfig glm_run(int mtp_depth) {
  config::RunConfig cfg = parse_config_text(R"(
    model { vocab_size: 256 hidden_size: 32 num_hidden_layers: 3 num_attention_heads: 4
            num_key_value_heads: 2 intermediate_size: 48 rms_norm_eps: 1e-5 rope_theta: 10000
            moe { n_routed_experts: 8 num_experts_per_tok: 2 moe_intermediate_size: 16
                  n_shared_experts: 1 first_k_dense_replace: 1 scoring_func: SIGMOID
                  routed_scaling_factor: 2.5 norm_topk_prob: true n_group: 2 topk_group: 1 } }
    data { seq_len: 16 micro_batch_size: 2 }
    threads: 1
  )",
                                            "test");
  cfg.mutable_model()->set_num_nextn_predict_layers(mtp_depth);
  cfg.mutable_data()->set_dataset_dir(testing::dataset_dir().string());
  validate_config(cfg);
  return cfg;
}

// Every parameter at random so that each one shows in the logits: matrices and the embedding
// N(0, 0.1), norms 1 + N(0, 0.1), router biases N(0, 0.05) (they change which experts are
// chosen). With bf16_exact every value is rounded to bf16 first, so a bf16 export is lossless.
// With zero_biases the router biases stay 0 (a model trained without bias updates).
void randomize(ParamTable& params, uint64_t seed, bool bf16_exact, bool zero_biases = false) {
  uint64_t h = seed;
  auto uniform = [&] {
    return (static_cast<double>((h = data::splitmix64(h)) >> 11) + 0.5) * 0x1p-53;
  };
  for (const ParamInfo& p : params.infos()) {
    float* v = params.flat_values().data<float>() + p.offset;
    const bool norm = p.name.ends_with("norm.weight");
    const bool bias = p.name.ends_with("e_score_correction_bias");
    for (int64_t i = 0; i < p.numel(); ++i) {
      const double n = std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform());
      float x = static_cast<float>(norm   ? 1 + 0.1 * n
                                   : bias ? (zero_biases ? 0 : 0.05 * n)
                                          : 0.1 * n);
      if (bf16_exact) x = std::bit_cast<float>(uint32_t{checkpoint::to_bf16(x)} << 16);
      v[i] = x;
    }
  }
}

// Saves a randomized model of `cfg` as a checkpoint of step 7, weights alone (no moments).
void make_checkpoint(const config::RunConfig& cfg, const fs::path& file, uint64_t seed,
                     bool bf16_exact = false, bool zero_biases = false) {
  Model model(cfg.model(), 1, 8);
  randomize(model.params(), seed, bf16_exact, zero_biases);
  const ProcessGroups groups;
  checkpoint::TrainState state;
  state.step = 7;
  state.samples_consumed = 7;  // one window of 8 tokens per step
  state.tokens_seen = 7 * 8;
  checkpoint::save(file, model.params(), checkpoint::OptimizerState{}, state, config_to_text(cfg),
                   groups);
}

ExportOptions options(const fs::path& ckpt, const fs::path& out, StDtype dtype,
                      uint64_t shard_size = 64 * 1024) {
  ExportOptions o;
  o.checkpoint = ckpt;
  o.out = out;
  o.dtype = dtype;
  o.shard_size = shard_size;
  return o;
}

// Runs a shell command; returns its exit status and appends its output to `out`.
int run(const std::string& cmd, std::string& out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// moetron's logits of the checkpoint next to the export's, compared by check_export.py (the
// independent reader, the bitwise value checks, the reference model's logits).
void check_with_reference(const fs::path& dir, const ExportOptions& o, double rtol,
                          int min_shards) {
  const config::RunConfig cfg = checkpoint::saved_config(o.checkpoint);
  const int64_t batch = 2, seq = 16;
  std::vector<int32_t> tokens;
  const Tensor logits = testing::checkpoint_logits(o.checkpoint, cfg, batch, seq, 5, tokens);
  write_text(dir / "tokens.i32", std::string_view(reinterpret_cast<const char*>(tokens.data()),
                                                  tokens.size() * sizeof(int32_t)));
  write_text(dir / "logits.f32",
             std::string_view(static_cast<const char*>(logits.raw_data()), logits.bytes()));
  const std::string cmd = detail::concat(
      "/usr/bin/python3 ", kReference, "/check_export.py --export ", o.out, " --checkpoint ",
      o.checkpoint, " --tokens ", dir / "tokens.i32", " --logits ", dir / "logits.f32", " --batch ",
      batch, " --seq ", seq, " --dtype ", o.dtype == StDtype::bf16 ? "bf16" : "fp32", " --rtol ",
      rtol, " --min-shards ", min_shards);
  std::string out;
  const int rc = run(cmd, out);
  std::cout << out;
  EXPECT_EQ(rc, 0) << cmd << "\n"
                   << out << "(needs Debian's python3-torch, -numpy, -h5py: launch/setup.sh)";
}

void expect_error(const std::function<void()>& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << part << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(Export, Fp32GivesMoetronsLogitsInTheReferenceModel) {
  TempDir dir;
  const config::RunConfig cfg = glm_run(2);
  make_checkpoint(cfg, dir / "ckpt.h5", 11);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::f32);
  const checkpoint::ExportSummary s = checkpoint::export_checkpoint(o);
  EXPECT_EQ(s.step, 7);
  EXPECT_GE(s.shards, 3u);
  check_with_reference(dir.path(), o, 1e-4, 3);
}

// INTERLEAVED RoPE (q/k rows permuted to glm4_moe's rotate_half), tied embeddings (written as
// an untied copy), D = 1; weights that bf16 holds exactly, so the bf16 export is lossless and
// must give moetron's logits to fp32 rounding.
TEST(Export, Bf16OfInterleavedTiedModelGivesMoetronsLogits) {
  TempDir dir;
  config::RunConfig cfg = glm_run(1);
  cfg.mutable_model()->set_rope_style(config::ModelConfig::INTERLEAVED);
  cfg.mutable_model()->set_tie_word_embeddings(true);
  make_checkpoint(cfg, dir / "ckpt.h5", 12, /*bf16_exact=*/true);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::bf16);
  const checkpoint::ExportSummary s = checkpoint::export_checkpoint(o);
  EXPECT_EQ(s.notes.size(), 2u);  // the RoPE permutation and the untied head
  check_with_reference(dir.path(), o, 1e-4, 2);
}

// Weights bf16 cannot hold: every value must be torch's round-to-nearest-even of the
// checkpoint's (the router stays F32), and the logits move only by bf16's rounding: measured
// 6.1e-3 of the largest logit here (moetron on the fp32 checkpoint vs the reference on the bf16
// export), checked against 2e-2.
TEST(Export, Bf16IsRoundedToNearestEven) {
  TempDir dir;
  make_checkpoint(glm_run(1), dir / "ckpt.h5", 13);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::bf16);
  checkpoint::export_checkpoint(o);
  check_with_reference(dir.path(), o, 2e-2, 2);
}

TEST(Export, Bf16RoundingOfSpecialValues) {
  using checkpoint::to_bf16;
  EXPECT_EQ(to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);  // above the tie
  EXPECT_EQ(to_bf16(-std::bit_cast<float>(0x3f808001u)), 0xbf81);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to infinity
  EXPECT_EQ(to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  const uint16_t nan = to_bf16(std::bit_cast<float>(0x7f800001u));  // a NaN whose payload is low
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);
}

// A kernel memory figure of this process from /proc/self/status, in KiB ("VmRSS", "VmHWM").
int64_t status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(field + ":")) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

// Exports `ckpt` (`moetron export` in-process, through its command line) in a child process
// whose peak RSS is reset first (/proc/self/clear_refs); returns how much the peak grew, in KiB.
int64_t export_peak_growth_kib(const fs::path& ckpt, const fs::path& out, uint64_t shard) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {  // the child: reset the peak, export, report {rss before, peak}
    ::close(fds[0]);
    int64_t report[2] = {-1, -1};
    std::ofstream("/proc/self/clear_refs") << "5";
    report[0] = status_kib("VmRSS");
    try {
      run_export(std::vector<std::string>{ckpt.string(), "--out", out.string(), "--dtype", "fp32",
                                          "--shard-size", std::to_string(shard)});
      report[1] = status_kib("VmHWM");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "export failed: %s\n", e.what());
    }
    const bool sent = ::write(fds[1], report, sizeof report) == sizeof report;
    ::_exit(sent && report[0] >= 0 && report[1] >= 0 ? 0 : 1);
  }
  ::close(fds[1]);
  int64_t report[2] = {-1, -1};
  const bool received = ::read(fds[0], report, sizeof report) == sizeof report;
  ::close(fds[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !received || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    return -1;
  return report[1] - report[0];
}

// A model of about 49 MB exported in 4 MiB shards: the peak RSS grows by less than two shards
// more than for a tiny model (whose export costs the fixed ~5.5 MiB of HDF5's metadata cache and
// the program's first allocations), so the export streams instead of holding the model.
TEST(Export, PeakMemoryStaysBelowTwoShards) {
  TempDir dir;
  config::RunConfig big = parse_config_text(R"(
    model { vocab_size: 4096 hidden_size: 256 num_hidden_layers: 2 num_attention_heads: 4
            intermediate_size: 512 num_nextn_predict_layers: 1
            moe { n_routed_experts: 16 num_experts_per_tok: 2 moe_intermediate_size: 256
                  n_shared_experts: 1 first_k_dense_replace: 1 } }
    data { seq_len: 16 micro_batch_size: 1 }
  )",
                                            "test");
  big.mutable_data()->set_dataset_dir(testing::dataset_dir().string());
  validate_config(big);
  make_checkpoint(big, dir / "big.h5", 21);
  make_checkpoint(glm_run(1), dir / "small.h5", 22);

  const uint64_t shard = 4 << 20;
  const int64_t small = export_peak_growth_kib(dir / "small.h5", dir / "small", shard);
  const int64_t large = export_peak_growth_kib(dir / "big.h5", dir / "big", shard);
  ASSERT_GE(small, 0);
  ASSERT_GE(large, 0);
  uint64_t bytes = 0;
  size_t shards = 0;
  for (const auto& e : fs::directory_iterator(dir / "big"))
    if (e.path().extension() == ".safetensors") bytes += fs::file_size(e.path()), ++shards;
  std::cout << "export of " << bytes / 1e6 << " MB in " << shards << " shards of at most "
            << shard / 1048576.0 << " MiB: peak RSS growth " << large / 1024.0 << " MiB, against "
            << small / 1024.0 << " MiB for a 0.4 MB model\n";
  EXPECT_GE(shards, 10u);
  EXPECT_LT((large - small) * 1024, static_cast<int64_t>(2 * shard));
}

TEST(Export, RefusesWhatIsNotACheckpoint) {
  TempDir dir;
  write_text(dir / "notes.txt", "not a checkpoint\n");
  expect_error(
      [&] { checkpoint::export_checkpoint(options(dir / "notes.txt", dir / "hf", StDtype::bf16)); },
      "is not an HDF5 file, or it is truncated");
  {
    checkpoint::H5File other((dir / "other.h5").string(), checkpoint::H5File::Mode::create);
    other.set_attr("format", "something-else");
    other.close();
  }
  expect_error(
      [&] { checkpoint::export_checkpoint(options(dir / "other.h5", dir / "hf", StDtype::bf16)); },
      "is not a moetron checkpoint");
  expect_error(
      [&] { checkpoint::export_checkpoint(options(dir / "absent.h5", dir / "hf", StDtype::bf16)); },
      "does not exist");
  EXPECT_FALSE(fs::exists(dir / "hf"));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_FALSE(e.path().filename().string().starts_with("hf.partial-")) << e.path();
}

TEST(Export, CommandLineNamesWhatIsMissingOrWrong) {
  using Args = std::vector<std::string>;
  expect_error([] { run_export(Args{"ckpt.h5"}); }, "no output directory (--out DIR)");
  expect_error([] { run_export(Args{"--out", "x"}); }, "no checkpoint given");
  expect_error([] { run_export(Args{"ckpt.h5", "--out"}); }, "--out needs a value");
  expect_error(
      [] {
        run_export(Args{"ckpt.h5", "--out", "x", "--dtype", "fp16"});
      },
      "--dtype is bf16 or fp32, not \"fp16\"");
  expect_error(
      [] {
        run_export(Args{"ckpt.h5", "--out", "x", "--shard-size", "0"});
      },
      "--shard-size expects a positive number of bytes");
  expect_error(
      [] {
        run_export(Args{"ckpt.h5", "--out", "x", "--shard-size", "5XB"});
      },
      "--shard-size expects a positive number of bytes");
  expect_error(
      [] {
        run_export(Args{"ckpt.h5", "--out", "x", "--bogus"});
      },
      "unknown flag \"--bogus\"");
  expect_error([] { run_export(Args{"a.h5", "b.h5", "--out", "x"}); }, "unexpected argument");
}

TEST(Export, ReplacesOnlyAnEarlierExportAndOnlyWithOverwrite) {
  TempDir dir;
  make_checkpoint(glm_run(1), dir / "ckpt.h5", 31);
  ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::bf16);
  checkpoint::export_checkpoint(o);
  const std::string before = read_text(dir / "hf" / "config.json");

  o.dtype = StDtype::f32;
  expect_error([&] { checkpoint::export_checkpoint(o); }, "pass --overwrite");
  EXPECT_EQ(read_text(dir / "hf" / "config.json"), before);

  o.overwrite = true;
  checkpoint::export_checkpoint(o);
  const std::string after = read_text(dir / "hf" / "config.json");
  EXPECT_NE(after.find("\"dtype\": \"float32\""), std::string::npos) << after;

  // --overwrite replaces what an export wrote, nothing else: a file or directory added to an
  // export is named and kept.
  write_text(dir / "hf" / "README.md", "my model card\n");
  write_text(dir / "hf" / ".git" / "HEAD", "ref: refs/heads/main\n");
  expect_error([&] { checkpoint::export_checkpoint(o); },
               ".git/, README.md, which moetron did not write");
  EXPECT_EQ(read_text(dir / "hf" / "README.md"), "my model card\n");
  EXPECT_EQ(read_text(dir / "hf" / "config.json"), after);
  write_text(dir / "notes" / "keep.txt", "mine\n");
  o.out = dir / "notes";
  expect_error([&] { checkpoint::export_checkpoint(o); }, "was not written by moetron");
  EXPECT_EQ(read_text(dir / "notes" / "keep.txt"), "mine\n");
  // Nor the dataset whose tokenizer it exports.
  o.out = dir / "hf2";
  o.dataset = dir / "hf2" / "fortunes";
  expect_error([&] { checkpoint::export_checkpoint(o); }, "overlap");
  o.dataset.clear();
  // Nor the directory that holds the checkpoint.
  o.out = dir.path();
  expect_error([&] { checkpoint::export_checkpoint(o); }, "lies inside --out");
  // An empty directory is taken as it is.
  fs::create_directories(dir / "empty");
  o.out = dir / "empty";
  o.overwrite = false;
  checkpoint::export_checkpoint(o);
  EXPECT_TRUE(fs::exists(dir / "empty" / "model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".partial-"), std::string::npos) << e.path();
}

TEST(Export, RefusesSettingsGlm4MoeCannotExpress) {
  TempDir dir;
  config::RunConfig softmax = glm_run(1);
  softmax.mutable_model()->mutable_moe()->set_scoring_func(config::MoeConfig::SOFTMAX);
  softmax.mutable_model()->mutable_moe()->set_n_group(1);
  make_checkpoint(softmax, dir / "softmax.h5", 41);
  expect_error(
      [&] {
        checkpoint::export_checkpoint(options(dir / "softmax.h5", dir / "hf", StDtype::bf16));
      },
      "model.moe.scoring_func is SOFTMAX");
  config::RunConfig dense = glm_run(1);
  dense.mutable_model()->clear_moe();
  make_checkpoint(dense, dir / "dense.h5", 42);
  expect_error(
      [&] { checkpoint::export_checkpoint(options(dir / "dense.h5", dir / "hf", StDtype::bf16)); },
      "model.moe.n_routed_experts is 0");
  EXPECT_FALSE(fs::exists(dir / "hf"));
}

// A DeepSeek-V3-shaped MLA model small enough for the PyTorch reference: MLA with a q LoRA
// (or q_proj), v_head_dim != qk_nope_head_dim, the glm_run MoE, D MTP modules.
config::RunConfig deepseek_run(int mtp_depth, bool q_lora) {
  config::RunConfig cfg = glm_run(mtp_depth);
  config::ModelConfig* m = cfg.mutable_model();
  m->add_layer_types(config::ModelConfig::MLA);
  m->set_num_key_value_heads(0);
  m->set_rope_style(config::ModelConfig::INTERLEAVED);
  config::MlaConfig* a = m->mutable_mla();
  a->set_q_lora_rank(q_lora ? 24 : 0);
  a->set_kv_lora_rank(16);
  a->set_qk_nope_head_dim(8);
  a->set_qk_rope_head_dim(4);
  a->set_v_head_dim(12);
  validate_config(cfg);
  return cfg;
}

// deepseek_v3: every tensor copied as stored (rope_interleave true for INTERLEAVED), MTP layers
// at num_hidden_layers + k; the reference model's MLA (tests/reference/mla.py) gives moetron's
// logits.
TEST(Export, DeepseekV3Fp32GivesMoetronsLogitsInTheReferenceModel) {
  TempDir dir;
  make_checkpoint(deepseek_run(2, true), dir / "ckpt.h5", 61);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::f32);
  const checkpoint::ExportSummary s = checkpoint::export_checkpoint(o);
  EXPECT_EQ(s.model_type, "deepseek_v3");
  check_with_reference(dir.path(), o, 1e-4, 3);
}

// q_proj (q_lora_rank null), ROTATE_HALF (rope_interleave false), YaRN, tied embeddings, bf16
// of bf16-exact weights.
TEST(Export, DeepseekV3Bf16OfQProjYarnTiedModelGivesMoetronsLogits) {
  TempDir dir;
  config::RunConfig cfg = deepseek_run(1, false);
  cfg.mutable_model()->set_rope_style(config::ModelConfig::ROTATE_HALF);
  cfg.mutable_model()->set_tie_word_embeddings(true);
  config::RopeScalingConfig* r = cfg.mutable_model()->mutable_rope_scaling();
  r->set_factor(4.0f);
  r->set_original_max_position_embeddings(8);
  r->set_mscale(1.0f);
  r->set_mscale_all_dim(0.8f);
  validate_config(cfg);
  make_checkpoint(cfg, dir / "ckpt.h5", 62, /*bf16_exact=*/true);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::bf16);
  const checkpoint::ExportSummary s = checkpoint::export_checkpoint(o);
  EXPECT_EQ(s.model_type, "deepseek_v3");
  check_with_reference(dir.path(), o, 1e-4, 2);
}

// A Qwen3.5-shaped hybrid small enough for the reference (tests/reference/qwen35.py): Gated
// DeltaNet, Gated DeltaNet, gated attention (q/k norms, partial RoPE, output gate, head_dim set),
// zero-centred norms, every layer MoE with softmax routing and a gated shared expert.
config::RunConfig qwen_run(int mtp_depth, bool tied) {
  config::RunConfig cfg = glm_run(mtp_depth);
  config::ModelConfig* m = cfg.mutable_model();
  m->add_layer_types(config::ModelConfig::GATED_DELTANET);
  m->add_layer_types(config::ModelConfig::GATED_DELTANET);
  m->add_layer_types(config::ModelConfig::ATTENTION);
  m->set_head_dim(12);
  m->set_partial_rotary_factor(0.5f);
  m->set_attention_output_gate(true);
  m->set_qk_norm(true);
  m->set_zero_centered_norms(true);
  m->set_tie_word_embeddings(tied);
  config::GatedDeltaNetConfig* g = m->mutable_linear_attention();
  g->set_linear_num_key_heads(2);
  g->set_linear_key_head_dim(8);
  g->set_linear_num_value_heads(4);
  g->set_linear_value_head_dim(6);
  config::MoeConfig* e = m->mutable_moe();
  e->set_first_k_dense_replace(0);
  e->set_scoring_func(config::MoeConfig::SOFTMAX);
  e->set_routed_scaling_factor(1.0f);
  e->set_n_group(1);
  e->set_topk_group(1);
  e->set_shared_expert_gate(true);
  validate_config(cfg);
  return cfg;
}

// qwen3_5_moe_text: in_proj_qkv and conv1d fused from moetron's parts, the shared expert and
// the MTP module under Qwen's names; the reference hybrid gives moetron's logits.
TEST(Export, Qwen35Fp32GivesMoetronsLogitsInTheReferenceModel) {
  TempDir dir;
  make_checkpoint(qwen_run(1, false), dir / "ckpt.h5", 64, false, /*zero_biases=*/true);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::f32);
  const checkpoint::ExportSummary s = checkpoint::export_checkpoint(o);
  EXPECT_EQ(s.model_type, "qwen3_5_moe_text");
  check_with_reference(dir.path(), o, 1e-4, 2);
}

TEST(Export, Qwen35Bf16OfTiedModelGivesMoetronsLogits) {
  TempDir dir;
  make_checkpoint(qwen_run(0, true), dir / "ckpt.h5", 65, /*bf16_exact=*/true,
                  /*zero_biases=*/true);
  const ExportOptions o = options(dir / "ckpt.h5", dir / "hf", StDtype::bf16);
  EXPECT_EQ(checkpoint::export_checkpoint(o).model_type, "qwen3_5_moe_text");
  check_with_reference(dir.path(), o, 1e-4, 1);
}

TEST(Export, RefusesWhatQwen35CannotExpress) {
  TempDir dir;
  auto refused = [&](config::RunConfig cfg, const std::string& part, bool zero_biases = true) {
    make_checkpoint(cfg, dir / "q.h5", 66, false, zero_biases);
    expect_error(
        [&] { checkpoint::export_checkpoint(options(dir / "q.h5", dir / "hf", StDtype::bf16)); },
        part);
    EXPECT_FALSE(fs::exists(dir / "hf"));
  };
  config::RunConfig cfg = qwen_run(1, false);
  cfg.mutable_model()->mutable_moe()->set_scoring_func(config::MoeConfig::SIGMOID);
  refused(cfg, "model.moe.scoring_func is SIGMOID");
  cfg = qwen_run(2, false);
  refused(cfg, "model.num_nextn_predict_layers is 2");
  cfg = qwen_run(1, false);
  cfg.mutable_model()->set_attention_output_gate(false);
  refused(cfg, "model.attention_output_gate is false");
  // A router bias it would drop must be zero.
  refused(qwen_run(1, false), "mlp.gate.e_score_correction_bias is not zero", false);
  // And the DeepSeek-style layouts refuse Qwen's options.
  cfg = glm_run(1);
  cfg.mutable_model()->set_qk_norm(true);
  refused(cfg, "model.qk_norm is true: glm4_moe has no such option");
}

// The checkpoint's tensor list (checkpoint/model_tensors.h) is the model's parameter table, and
// its closed-form size counts that list, for every architecture.
TEST(ModelTensors, ListTheParameterTableAndCountInClosedForm) {
  for (const config::RunConfig& cfg : {glm_run(1), deepseek_run(2, true), deepseek_run(1, false),
                                       qwen_run(1, false), qwen_run(0, true)}) {
    const std::vector<checkpoint::ModelTensor> list = checkpoint::model_tensors(cfg.model());
    Model model(cfg.model(), 1, 8);
    ASSERT_EQ(list.size(), model.params().infos().size());
    uint64_t elements = 0;
    for (const checkpoint::ModelTensor& t : list) {
      const int id = model.params().find(t.name);
      ASSERT_GE(id, 0) << t.name;
      const Shape& shape = model.params().info(id).global_shape;
      EXPECT_EQ(std::vector<uint64_t>(shape.begin(), shape.end()), t.shape) << t.name;
      uint64_t n = 1;
      for (uint64_t d : t.shape) n *= d;
      elements += n;
    }
    const checkpoint::ModelSize size = checkpoint::model_size(cfg.model());
    EXPECT_EQ(size.tensors, list.size());
    EXPECT_EQ(size.elements, elements);
  }
}

TEST(Export, RefusesAModelMixingMlaAndAttention) {
  TempDir dir;
  config::RunConfig cfg = deepseek_run(1, true);
  cfg.mutable_model()->add_layer_types(config::ModelConfig::ATTENTION);
  cfg.mutable_model()->set_num_hidden_layers(4);
  cfg.mutable_model()->mutable_mla()->set_qk_rope_head_dim(8);  // head_dim 32 / 4
  validate_config(cfg);
  make_checkpoint(cfg, dir / "mixed.h5", 63);
  expect_error(
      [&] { checkpoint::export_checkpoint(options(dir / "mixed.h5", dir / "hf", StDtype::bf16)); },
      "mixes MLA with other layers");
  EXPECT_FALSE(fs::exists(dir / "hf"));
}

TEST(Export, WritesTheTokenizerTheCheckpointWasTrainedWith) {
  TempDir dir;
  // The byte tokenizer: tokenizer.json maps ids 0..255 to the 256 bytes, one each.
  make_checkpoint(glm_run(1), dir / "byte.h5", 51);
  checkpoint::export_checkpoint(options(dir / "byte.h5", dir / "byte", StDtype::bf16));
  const data::JsonValue tok = data::parse_json(read_text(dir / "byte" / "tokenizer.json"), "tok");
  const data::JsonValue& vocab = tok.at("model").at("vocab");
  ASSERT_EQ(vocab.members.size(), 256u);
  std::vector<bool> seen(256);
  for (const auto& [piece, id] : vocab.members) seen.at(id.as_u64()) = true;
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 256);
  EXPECT_TRUE(fs::exists(dir / "byte" / "tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(dir / "byte" / "generation_config.json"));

  // SentencePiece: the model file itself, byte for byte.
  data::PrepareOptions p;
  p.inputs = {data::testing::write_generated_corpus(dir / "corpus", 4, 200, 7)};
  p.output = dir / "spm";
  p.tokenizer = "sentencepiece";
  p.vocab_size = 300;
  p.val_fraction = 0.25;
  data::prepare_dataset(p);
  config::RunConfig cfg = glm_run(1);
  cfg.mutable_model()->set_vocab_size(320);
  cfg.mutable_data()->set_dataset_dir((dir / "spm").string());
  make_checkpoint(cfg, dir / "spm.h5", 52);
  checkpoint::export_checkpoint(options(dir / "spm.h5", dir / "spm-hf", StDtype::bf16));
  EXPECT_EQ(read_text(dir / "spm-hf" / "tokenizer.model"),
            read_text(dir / "spm" / "tokenizer.model"));
  EXPECT_FALSE(fs::exists(dir / "spm-hf" / "tokenizer.json"));

  // A dataset that is gone: the error says how to name it.
  ExportOptions o = options(dir / "spm.h5", dir / "gone", StDtype::bf16);
  o.dataset = dir / "nowhere";
  expect_error([&] { checkpoint::export_checkpoint(o); }, "pass --dataset DIR");
}

}  // namespace
}  // namespace moetron
