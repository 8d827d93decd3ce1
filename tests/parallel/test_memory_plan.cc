// `moetron plan` against measured runs: the meta model allocates what the CPU model does; the
// planned memory per rank is within 10% of the peak resident set real runs measure (one rank and
// under mpirun, dense and MoE, ZeRO-1 on and off); the bytes per group are those the run moved;
// a layout that does not fit is refused, by plan and by train, with the numbers.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/backend.h"
#include "data/json.h"
#include "models/model.h"
#include "models/model_config.h"
#include "models/runtime.h"
#include "parallel/process_groups.h"
#include "tests/host_kernels.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/plan.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using data::testing::TempDir;

// A model whose parameters, optimizer state and buffers (hundreds of MB) outweigh the process's
// libraries, so the check is of the plan, not of the runtime it measures.
config::RunConfig big_run(const std::filesystem::path& run_dir, bool moe) {
  config::RunConfig cfg = testing::small_run(run_dir, 2);
  config::ModelConfig* m = cfg.mutable_model();
  m->set_hidden_size(256);
  m->set_num_hidden_layers(4);
  m->set_intermediate_size(768);
  if (moe) {
    m->mutable_moe()->set_n_routed_experts(32);
    m->mutable_moe()->set_num_experts_per_tok(2);
    m->mutable_moe()->set_moe_intermediate_size(256);
    m->mutable_moe()->set_n_shared_experts(1);
    m->mutable_moe()->set_first_k_dense_replace(1);
  }
  cfg.mutable_data()->set_seq_len(128);
  cfg.mutable_data()->set_micro_batch_size(8);
  cfg.mutable_logging()->set_log_interval(1);
  cfg.mutable_logging()->set_val_interval(0);
  cfg.set_threads(1);
  validate_config(cfg);
  return cfg;
}

std::string run_text(const std::vector<std::string>& argv, const TempDir& dir, int* status) {
  const pid_t pid = test::spawn(argv, dir / "out.txt");
  const test::Exit e = test::wait_for(pid, std::chrono::seconds(180));
  *status = e.exited ? e.status : -1;
  return data::testing::read_text(dir / "out.txt");
}

std::vector<std::string> launcher(int world) {
  if (world == 1) return {test::moetron_binary()};
  return {"mpirun", "--oversubscribe",     "--allow-run-as-root",
          "-np",    std::to_string(world), test::moetron_binary()};
}

TEST(MemoryPlan, TheMetaModelAllocatesWhatTheCpuModelDoes) {
  for (const auto& [moe, bf16] : {std::pair{false, false}, {true, false}, {true, true}}) {
    SCOPED_TRACE(std::string(moe ? "MoE" : "dense") + (bf16 ? ", bf16" : ""));
    TempDir dir;
    config::RunConfig cfg = big_run(dir / "run", moe);
    if (bf16) cfg.set_precision(config::RunConfig::BF16);  // the weight copies, the casts
    DeviceSpec cpu = cpu_spec(1e11, 1);
    cpu.runtime = 0;
    const RunPlan plan = plan_run(cfg, 1, cpu);
    Backend& b = backend(Device{});
    const int64_t before = b.memory_use().live;
    b.reset_peak();
    {
      const ProcessGroups alone;
      Model model(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len(),
                  alone.runtime(compute_dtype(cfg.precision())));
      model.params().init(cfg.seed(), cfg.model().init_std());
      TrainStep step(model, cfg.optimizer(), alone, 1);
      std::vector<int32_t> tokens(static_cast<size_t>(model.dims().batch * model.dims().window()));
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 7 % 256);
      step.run(0, 1e-3, 0.3f,
               [&](std::span<int32_t> t) { std::copy(tokens.begin(), tokens.end(), t.begin()); });
    }
    const double measured = static_cast<double>(b.memory_use().peak - before);
    // With ep = 1 the routing changes no size: the tensors are the plan's, to a few bytes (the
    // optimizer's step counter and such; 8 and 120 bytes here).
    std::printf("%s%s: planned %.0f, allocated %.0f bytes\n", moe ? "MoE" : "dense",
                bf16 ? ", bf16" : "", plan.memory.total(), measured);
    EXPECT_NEAR(plan.memory.total(), measured, 4096);
  }
}

// The largest over steps and ranks of each MoE layer's received rows over their mean, averaged
// over the layers: the imbalance the run had (metrics.jsonl's ep_rows_received).
double measured_imbalance(const std::filesystem::path& metrics, int ep) {
  std::map<std::string, double> worst;
  for (const std::string& line : testing::lines_of(metrics)) {
    const data::JsonValue j = data::parse_json(line, "metrics.jsonl");
    if (j.at("kind").as_string() != "train") continue;
    for (const auto& [key, value] : j.members) {
      if (!key.ends_with(".ep_rows_received")) continue;
      double total = 0, most = 0;
      for (const data::JsonValue& r : value.as_array()) {
        total += static_cast<double>(r.as_u64());
        most = std::max(most, static_cast<double>(r.as_u64()));
      }
      worst[key] = std::max(worst[key], most / (total / ep));
    }
  }
  if (worst.empty()) return 1.0;
  double sum = 0;
  for (const auto& [key, f] : worst) sum += f;
  return sum / static_cast<double>(worst.size());
}

TEST(MemoryPlan, PeakResidentSetOfRealRunsIsWithinTenPercent) {
  struct Case {
    const char* name;
    int world;
    bool moe;
    int ep, tp;
    bool zero1;
    bool bf16 = false;
  };
  for (const Case& c :
       {Case{"dense, 1 rank", 1, false, 1, 1, false}, Case{"MoE, 1 rank", 1, true, 1, 1, false},
        Case{"dense, dp 2, ZeRO-1", 2, false, 1, 1, true}, Case{"MoE, ep 2", 2, true, 2, 1, false},
        Case{"MoE, ep 2, ZeRO-1", 2, true, 2, 1, true}, Case{"MoE, tp 2", 2, true, 1, 2, false},
        Case{"MoE, 1 rank, bf16", 1, true, 1, 1, false, true}}) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    config::RunConfig cfg = big_run(dir / "run", c.moe);
    cfg.mutable_parallel()->set_ep(c.ep);
    cfg.mutable_parallel()->set_tp(c.tp);
    cfg.mutable_parallel()->set_zero1(c.zero1);
    if (c.bf16) cfg.set_precision(config::RunConfig::BF16);
    const std::filesystem::path config = dir / "run.pbtxt";
    std::ofstream(config) << config_to_text(cfg);
    std::vector<std::string> argv = launcher(c.world);
    argv.insert(argv.end(), {"train", config.string()});
    int status = 0;
    const std::string out = run_text(argv, dir, &status);
    ASSERT_EQ(status, 0) << out;
    EXPECT_NE(out.find("memory per rank (plan):"), std::string::npos) << out;
    double resident = 0, runtime = 0;
    std::map<std::string, double> moved;  // "comm.<group>.bytes" of the last step
    for (const std::string& line : testing::lines_of(dir / "run" / "metrics.jsonl")) {
      const data::JsonValue j = data::parse_json(line, "metrics.jsonl");
      if (j.at("kind").as_string() == "memory") {
        resident = j.at("peak_resident_bytes").as_double();
        runtime = j.at("planned_bytes").as_double() - j.at("planned_tensor_bytes").as_double();
      }
      if (j.at("kind").as_string() == "train")
        for (const auto& [key, value] : j.members)
          if (key.starts_with("comm.") && key.ends_with(".bytes")) moved[key] = value.as_double();
    }
    ASSERT_GT(resident, 0) << out;
    // The plan at the imbalance the run had, with the runtime the run measured.
    const double imbalance = measured_imbalance(dir / "run" / "metrics.jsonl", c.ep);
    std::vector<std::string> plan_argv{
        test::moetron_binary(),  "plan",        config.string(),           "--world",
        std::to_string(c.world), "--imbalance", std::to_string(imbalance), "--json"};
    TempDir plan_dir;
    const std::string json = run_text(plan_argv, plan_dir, &status);
    ASSERT_EQ(status, 0) << json;
    const data::JsonValue p = data::parse_json(json, "plan");
    const double planned =
        p.at("memory.total").as_double() - p.at("memory.runtime").as_double() + runtime;
    std::printf("%s: planned %.1f MB (imbalance %.2f), peak resident %.1f MB (%+.1f%%)\n", c.name,
                planned / 1e6, imbalance, resident / 1e6, 100 * (planned - resident) / resident);
    std::fflush(stdout);  // before the next fork copies the buffer
    EXPECT_NEAR(planned, resident, 0.10 * resident);
    // Bytes per group: exact, but for ep, whose rows follow the routing.
    int groups = 0;
    for (const auto& [key, bytes] : p.members) {
      if (!key.starts_with("comm.") || key == "comm.ep.bytes" || bytes.as_double() == 0) continue;
      ASSERT_TRUE(moved.count(key)) << key;
      EXPECT_EQ(bytes.as_double(), moved.at(key)) << key;
      ++groups;
    }
    if (c.world > 1) {
      EXPECT_GE(groups, 2) << json;  // world, and dp or tp at least
    }
  }
}

// On a GPU the plan counts the CUDA backend's kernel scratch: what the device backend's own code
// (cpu:1) holds after a forward and backward of the same model, the gated delta rule's work of
// the Gated DeltaNet hybrid at a sequence of 4 chunks. On the CPU there is none.
TEST(MemoryPlan, AGpuPlanCountsTheKernelScratchTheDeviceBackendHolds) {
  config::RunConfig cfg =
      load_config(std::string(MOETRON_SOURCE_DIR) + "/configs/qwen3.5-tiny.pbtxt", {});
  cfg.mutable_data()->set_seq_len(256);
  cfg.mutable_data()->set_micro_batch_size(2);
  validate_config(cfg);
  const RunPlan gpu = plan_run(cfg, 1, device_spec("h200"));
  const RunPlan cpu = plan_run(cfg, 1, cpu_spec(1e11, 1));
  EXPECT_EQ(cpu.memory.kernel_scratch, 0);
  EXPECT_EQ(gpu.memory.total() - gpu.memory.kernel_scratch - gpu.memory.runtime,
            cpu.memory.total() - cpu.memory.runtime);

  const Device device = test::host_kernels_device();
  Runtime rt;
  rt.device = device;
  Model model(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len(), rt);
  model.params().init(5, 0.05f);
  const std::vector<int32_t> tokens(static_cast<size_t>(model.dims().batch * model.dims().window()),
                                    3);
  model.forward_backward(tokens, 0.3f, 1.0f);
  const int64_t held = backend(device).memory_use().kernel_scratch;
  std::printf("kernel scratch: planned %.0f, held %ld bytes\n", gpu.memory.kernel_scratch,
              static_cast<long>(held));
  EXPECT_GT(held, 0);
  EXPECT_EQ(gpu.memory.kernel_scratch, static_cast<double>(held));
  EXPECT_NE(describe(gpu).find("kernel scratch (the gated delta rule's)"), std::string::npos);
}

TEST(MemoryPlan, ALayoutThatDoesNotFitIsRefusedWithTheNumbers) {
  TempDir dir;
  config::RunConfig cfg = big_run(dir / "run", true);
  // 671B-class widths on one H100: far past its 80 GB.
  cfg.mutable_model()->set_hidden_size(7168);
  cfg.mutable_model()->set_num_attention_heads(128);
  cfg.mutable_model()->set_num_key_value_heads(128);
  cfg.mutable_model()->mutable_moe()->set_moe_intermediate_size(2048);
  cfg.mutable_model()->mutable_moe()->set_n_routed_experts(256);
  const std::filesystem::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(cfg);
  int status = 0;
  const std::string out =
      run_text({test::moetron_binary(), "plan", config.string(), "--device", "h100"}, dir, &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("DOES NOT FIT"), std::string::npos) << out;
  EXPECT_NE(out.find("does not fit: memory per rank (plan): params"), std::string::npos) << out;
  EXPECT_NE(out.find("of 80.0 GB (h100)"), std::string::npos) << out;

  // train refuses it on this machine before the run directory exists.
  const std::string train =
      run_text({test::moetron_binary(), "train", config.string()}, dir, &status);
  EXPECT_EQ(status, 1) << train;
  EXPECT_NE(train.find("does not fit"), std::string::npos) << train;
  EXPECT_FALSE(std::filesystem::exists(dir / "run")) << train;
}

TEST(MemoryPlan, PlanHasHelpAndRejectsBadArguments) {
  TempDir dir;
  int status = 0;
  EXPECT_NE(run_text({test::moetron_binary(), "plan", "--help"}, dir, &status).find("--imbalance"),
            std::string::npos);
  EXPECT_EQ(status, 0);
  const std::filesystem::path config = dir / "run.pbtxt";
  std::ofstream(config) << config_to_text(big_run(dir / "run", true));
  const std::string bad =
      run_text({test::moetron_binary(), "plan", config.string(), "--device", "tpu"}, dir, &status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(bad.find("no device \"tpu\" (valid: cpu, h100, h200, h800, b200)"), std::string::npos)
      << bad;
  const std::string layout = run_text(
      {test::moetron_binary(), "plan", config.string(), "--world", "3", "--set", "parallel.tp=2"},
      dir, &status);
  EXPECT_EQ(status, 1);
  EXPECT_NE(layout.find("parallel.tp = 2 does not divide the 3 ranks"), std::string::npos)
      << layout;
}

}  // namespace
}  // namespace moetron
