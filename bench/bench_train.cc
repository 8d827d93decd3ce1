// moetron side of the CPU training benchmark: the model of a run config trained for a few
// steps on random tokens (the real training step: forward, backward, gradient sync, clipping,
// AdamW), timed per step. Prints one JSON line with tokens/s, MFU against the GEMM peak it
// measures itself, and the model dims that bench/run_bench.sh hands to the PyTorch reference.
//
// Under mpirun it trains the config's parallel layout and adds, per process group, the bytes one
// step moved (mean over the ranks) next to the formulas of docs/parallelism.md
// (parallel/comm_volume.h), and the share of the gradient reduction hidden behind backward:
// 1 - (wait after backward with overlap) / (wait without overlap), both timed here.
//
// With --checkpoint DIR it then saves the trained state to DIR three times and loads it back,
// reporting bytes, seconds and the memory a save needs beyond the model's (the growth of the peak
// resident set while saving).
//
//   [mpirun -np N] moetron_bench CONFIG [--steps N] [--warmup-steps N] [--checkpoint DIR]
//                                [--set a.b=value ...]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "configs/config.h"
#include "core/backend.h"
#include "core/cpu/kernels.h"
#include "core/gemm_peak.h"
#include "core/ops.h"
#include "core/threads.h"
#include "models/model.h"
#include "models/model_config.h"
#include "parallel/comm_volume.h"
#include "parallel/every_rank.h"
#include "parallel/layout.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "trainer/metrics.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using Clock = std::chrono::steady_clock;

// Timed steps of one TrainStep; returns the seconds of each.
struct Timing {
  std::vector<double> step_s;
  double exposed_s = 0;  // waiting for gradient reductions after backward, summed
  double loss_first = 0, loss_last = 0;
  int64_t rows_sent = 0, rows_off_rank = 0;
};

// The communicators count from the first timed step on.
Timing time_steps(TrainStep& step, const ProcessGroups& groups, const config::RunConfig& cfg,
                  const std::vector<int32_t>& tokens, int warmup, int steps) {
  Timing t;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup)
      for (Communicator* c : groups.all()) c->reset_stats();
    const auto t0 = Clock::now();
    const StepResult r = step.run(
        s, cfg.optimizer().lr(), cfg.schedule().mtp_loss_weight(),
        [&](std::span<int32_t> out) { std::copy(tokens.begin(), tokens.end(), out.begin()); });
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s < warmup) continue;
    t.step_s.push_back(dt);
    t.exposed_s += r.exposed_comm_seconds;
    (s == warmup ? t.loss_first : t.loss_last) = r.losses.total;
    for (const MoeStepStats& m : r.moe) {
      t.rows_sent += m.rows_sent;
      t.rows_off_rank += m.rows_off_rank;
    }
  }
  if (steps == 1) t.loss_last = t.loss_first;
  return t;
}

// The peak resident set since the last reset_peak_rss(), and the current one, in bytes.
int64_t rss_field(const char* field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with(field)) return std::stoll(line.substr(std::strlen(field))) * 1024;
  return 0;
}
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

struct CheckpointTiming {
  double bytes = 0, save_s = 0, load_s = 0, save_extra_bytes = 0;
};

// Saves the trained state three times (the best time counts) and loads it back once.
CheckpointTiming time_checkpoint(const std::filesystem::path& dir, Model& model, Optimizer& adam,
                                 const config::RunConfig& cfg, const ProcessGroups& groups) {
  CheckpointTiming t;
  t.save_s = 1e30;
  const std::filesystem::path file = dir / "bench.h5";
  if (groups.rank() == 0) std::filesystem::create_directories(dir);
  if (groups.world()) groups.world()->barrier();
  checkpoint::OptimizerState opt = adam.state();
  for (int i = 0; i < 3; ++i) {
    reset_peak_rss();
    const int64_t before = rss_field("VmRSS:");
    const auto t0 = Clock::now();
    checkpoint::save(file, model.params(), opt,
                     {.step = 1, .tokens_seen = 1, .samples_consumed = 1}, config_to_text(cfg),
                     groups);
    t.save_s = std::min(t.save_s, std::chrono::duration<double>(Clock::now() - t0).count());
    t.save_extra_bytes =
        std::max(t.save_extra_bytes, static_cast<double>(rss_field("VmHWM:") - before));
  }
  const auto t0 = Clock::now();
  checkpoint::load(file, model.params(), &opt, cfg, groups);
  t.load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  t.bytes = static_cast<double>(std::filesystem::file_size(file));
  if (groups.world()) groups.world()->barrier();
  if (groups.rank() == 0) std::filesystem::remove(file);
  return t;
}

// Sums `values` over the world (identity without MPI).
std::vector<double> sum_over_world(const ProcessGroups& groups, std::vector<double> values) {
  if (!groups.world()) return values;
  Tensor t = Tensor::empty({static_cast<int64_t>(values.size())}, DType::f64);
  std::copy(values.begin(), values.end(), t.data<double>());
  groups.world()->all_reduce(t);
  return {t.data<double>(), t.data<double>() + values.size()};
}

int run(std::span<const std::string> args, const MpiRuntime& mpi) {
  ConfigArgs parsed = parse_config_args(args);
  int steps = 5, warmup = 2;
  std::string checkpoint_dir;
  for (size_t i = 0; i < parsed.rest.size(); ++i) {
    const std::string& a = parsed.rest[i];
    if ((a == "--steps" || a == "--warmup-steps") && i + 1 < parsed.rest.size())
      (a == "--steps" ? steps : warmup) = std::stoi(parsed.rest[++i]);
    else if (a == "--checkpoint" && i + 1 < parsed.rest.size())
      checkpoint_dir = parsed.rest[++i];
    else
      throw Error("moetron_bench: unknown argument '" + a +
                  "'\nusage: moetron_bench CONFIG [--steps N] [--warmup-steps N] "
                  "[--checkpoint DIR] [--set a.b=v]");
  }
  const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
  const Layout layout = resolve_layout(cfg, mpi.world_size());
  const std::optional<ProcessGroups> parallel =
      mpi.active() ? std::optional<ProcessGroups>(std::in_place, layout) : std::nullopt;
  const ProcessGroups alone;
  const ProcessGroups& groups = parallel ? *parallel : alone;
  set_compute_threads(cfg.threads());
  // The denominator of MFU: the fastest GEMM we link, large and square, on all threads.
  const double peak_gflops = measure_gemm_gflops(4096, 3);
  // The bf16 GEMM's peak beside it, by the same probe (the ceiling mixed precision would have).
  const double peak_bf16_gflops = measure_gemm_gflops(4096, 3, DType::bf16);

  const auto& mc = cfg.model();
  const int accum = cfg.data().grad_accum_steps();
  const DType compute = compute_dtype(cfg.precision());
  Model model(mc, cfg.data().micro_batch_size(), cfg.data().seq_len(), groups.runtime(compute));
  const ModelDims& d = model.dims();
  model.params().init(cfg.seed(), mc.init_std());
  // Each data-parallel rank its own tokens; tensor-parallel ranks share them.
  std::mt19937 gen(static_cast<uint32_t>(cfg.seed() + 1000 * groups.dp_rank()));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(d.vocab) - 1);
  std::vector<int32_t> tokens(static_cast<size_t>(d.batch * d.window()));
  for (int32_t& t : tokens) t = token(gen);

  TrainStep step(model, cfg.optimizer(), groups, accum);
  const Timing t = time_steps(step, groups, cfg, tokens, warmup, steps);
  std::vector<std::string> names;
  std::vector<double> per_rank{t.rows_sent * 1.0, t.rows_off_rank * 1.0};
  for (Communicator* c : groups.all()) {
    names.push_back(c->name());
    per_rank.push_back(static_cast<double>(c->stats().bytes));
    per_rank.push_back(c->stats().seconds);
  }
  double total = 0;
  for (double s : t.step_s) total += s;
  per_rank.push_back(total);
  per_rank.push_back(t.exposed_s);
  // Without overlap: what the reduction costs when nothing hides it.
  double blocking_s = 0;
  if (layout.dp > 1 || layout.edp() > 1) {
    step.set_overlap(false);
    blocking_s = time_steps(step, groups, cfg, tokens, 1, steps).exposed_s;
  }
  per_rank.push_back(blocking_s);
  CheckpointTiming ckpt;
  if (!checkpoint_dir.empty())
    ckpt = time_checkpoint(checkpoint_dir, model, step.optimizer(), cfg, groups);
  per_rank.push_back(ckpt.save_extra_bytes);
  const std::vector<double> sums = sum_over_world(groups, per_rank);
  if (groups.rank() != 0) return 0;

  const double ranks = layout.world;
  const double seconds = sums[sums.size() - 4] / ranks;  // mean over ranks of the timed steps
  const double tokens_per_step = static_cast<double>(d.rows()) * accum * layout.dp;
  const double tok_s = tokens_per_step * static_cast<double>(t.step_s.size()) / seconds;
  const double flops = model.train_flops_per_token();

  JsonLine j;
  j.add("impl", std::string("moetron")).add("tokens_per_s", tok_s);
  // MFU against the peak of the precision the GEMMs run in.
  const double peak_used = compute == DType::bf16 ? peak_bf16_gflops : peak_gflops;
  j.add("precision", std::string(dtype_name(compute)));
  j.add("mfu", tok_s * flops / (peak_used * 1e9 * ranks)).add("gemm_peak_gflops", peak_gflops);
  j.add("gemm_peak_bf16_gflops", peak_bf16_gflops)
      .add("gemm_bf16", std::string(cpu::gemm_bf16_backend()));
  j.add("gemm_backend", backend(Device{}).name());
  j.add("train_flops_per_token", flops).add("achieved_gflops", tok_s * flops * 1e-9);
  j.add("world", static_cast<int64_t>(layout.world)).add("layout", layout.describe());
  j.add("threads", static_cast<int64_t>(compute_threads()));
  if (layout.world > 1) {
    const double off_rank = sums[0] > 0 ? sums[1] / sums[0] : 0.0;
    const double balanced = layout.ep > 1 ? (layout.ep - 1.0) / layout.ep : 0.0;
    const auto expected = expected_comm_bytes(d, model.params(), layout, accum, balanced);
    const auto realized = expected_comm_bytes(d, model.params(), layout, accum, off_rank);
    double comm_bytes = 0, comm_s = 0;
    const double n = static_cast<double>(t.step_s.size());
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string p = "comm." + names[i] + ".";
      const double bytes = sums[2 + 2 * i] / ranks / n, secs = sums[3 + 2 * i] / ranks / n;
      comm_bytes += bytes;
      comm_s += secs;
      j.add(p + "bytes_per_step", bytes).add(p + "seconds_per_step", secs);
      j.add(p + "expected_bytes_per_step", expected.count(names[i]) ? expected.at(names[i]) : 0.0);
      if (names[i] == "ep") {
        j.add(p + "expected_bytes_at_measured_routing", realized.at("ep"));
        j.add("routed_rows_off_rank", off_rank).add("routed_rows_off_rank_balanced", balanced);
      }
    }
    j.add("comm_bytes", comm_bytes).add("comm_share", comm_s / (seconds / n));
    const double exposed = sums[sums.size() - 3] / ranks / n;
    const double blocking = sums[sums.size() - 2] / ranks / n;
    j.add("grad_sync_exposed_s", exposed).add("grad_sync_blocking_s", blocking);
    if (blocking > 0) j.add("grad_sync_hidden_share", 1.0 - exposed / blocking);
  } else {
    j.add("comm_bytes", int64_t{0});  // single process: no collectives
  }
  if (!checkpoint_dir.empty()) {
    j.add("checkpoint_bytes", ckpt.bytes).add("checkpoint_save_s", ckpt.save_s);
    j.add("checkpoint_load_s", ckpt.load_s);
    j.add("checkpoint_save_mb_per_s", ckpt.bytes / ckpt.save_s / 1e6);
    j.add("checkpoint_load_mb_per_s", ckpt.bytes / ckpt.load_s / 1e6);
    j.add("checkpoint_save_extra_peak_mb_per_rank", sums.back() / ranks / 1e6);
    j.add("model_state_mb_per_rank", 3.0 * static_cast<double>(model.params().numel()) * 4 / 1e6);
  }
  j.add("params", model.params().numel()).add("loss_first", t.loss_first);
  j.add("loss_last", t.loss_last);
  j.add("vocab", d.vocab).add("hidden", d.hidden).add("layers", d.layers).add("heads", d.heads);
  j.add("kv_heads", d.kv_heads).add("intermediate", d.intermediate).add("seq", d.seq);
  j.add("batch", d.batch).add("mtp_depth", d.mtp_depth);
  j.add("tie_embeddings", std::string(d.tied_head ? "true" : "false"));
  j.add("rope_style",
        std::string(d.rope_style == ops::RopeStyle::interleaved ? "interleaved" : "rotate_half"));
  j.add("mtp_loss_weight", static_cast<double>(cfg.schedule().mtp_loss_weight()));
  j.add("lr", static_cast<double>(cfg.optimizer().lr()));
  j.add("weight_decay", static_cast<double>(cfg.optimizer().weight_decay()));
  j.add("grad_clip", static_cast<double>(cfg.optimizer().grad_clip()));
  j.add("init_std", static_cast<double>(mc.init_std()));
  const MoeDims& m = d.moe;  // the MoE settings, for the reference
  j.add("n_routed_experts", m.experts).add("experts_per_tok", m.k);
  j.add("moe_intermediate", m.intermediate).add("n_shared_experts", m.shared);
  j.add("first_k_dense", m.first_dense).add("routed_scaling", static_cast<double>(m.scaling));
  j.add("scoring_func", std::string(m.scoring == ops::Scoring::softmax ? "softmax" : "sigmoid"));
  j.add("norm_topk_prob", int64_t{m.norm_topk_prob}).add("n_group", m.n_group);
  j.add("topk_group", m.topk_group)
      .add("bias_update_speed", static_cast<double>(m.bias_update_speed));
  j.add("seq_aux_alpha", static_cast<double>(m.seq_aux_alpha));
  j.add("aux_loss_coeff", static_cast<double>(m.aux_coeff));
  j.add("z_loss_coeff", static_cast<double>(m.z_coeff));
  j.add("capacity_factor", static_cast<double>(m.capacity_factor));
  j.add("steps", static_cast<int64_t>(steps)).add("warmup_steps", static_cast<int64_t>(warmup));
  std::cout << j.str() << std::endl;
  return 0;
}

}  // namespace
}  // namespace moetron

int main(int argc, char** argv) {
  try {
    const moetron::MpiRuntime mpi;
    const std::vector<std::string> args(argv + 1, argv + argc);
    return moetron::run_on_every_rank(mpi, "bench", [&] { return moetron::run(args, mpi); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moetron_bench: error: %s\n", e.what());
    return 1;
  }
}
