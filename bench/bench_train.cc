// moetron side of the CPU training benchmark: the model of a run config trained for a few
// steps on random tokens (forward, backward, clipping, AdamW), timed per step. Prints one JSON
// line with tokens/s, MFU against the GEMM peak it measures itself, and the model dims that
// bench/run_bench.sh hands to the PyTorch reference.
//
//   moetron_bench CONFIG [--steps N] [--warmup-steps N] [--set a.b=value ...]
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "core/cpu/kernels.h"
#include "core/gemm_peak.h"
#include "core/ops.h"
#include "core/threads.h"
#include "models/model.h"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "parallel/process_groups.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

int run(std::span<const std::string> args) {
  ConfigArgs parsed = parse_config_args(args);
  int steps = 5, warmup = 2;
  for (size_t i = 0; i < parsed.rest.size(); ++i) {
    const std::string& a = parsed.rest[i];
    if ((a == "--steps" || a == "--warmup-steps") && i + 1 < parsed.rest.size())
      (a == "--steps" ? steps : warmup) = std::stoi(parsed.rest[++i]);
    else
      throw Error("moetron_bench: unknown argument '" + a +
                  "'\nusage: moetron_bench CONFIG [--steps N] [--warmup-steps N] [--set a.b=v]");
  }
  const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
  set_compute_threads(cfg.threads());
  // The denominator of MFU: the fastest GEMM we link, large and square, on all threads.
  const double peak_gflops = measure_gemm_gflops(4096, 3);

  const auto& mc = cfg.model();
  Model model(mc, cfg.data().micro_batch_size(), cfg.data().seq_len());
  const ModelDims& d = model.dims();
  model.params().init(cfg.seed(), mc.init_std());
  const ProcessGroups alone;
  TrainStep step(model, cfg.optimizer(), alone, 1);
  std::mt19937 gen(static_cast<uint32_t>(cfg.seed()));
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(d.vocab) - 1);
  std::vector<int32_t> tokens(static_cast<size_t>(d.batch * d.window()));
  for (int32_t& t : tokens) t = token(gen);

  std::vector<double> step_s;
  double loss_first = 0, loss_last = 0;
  for (int s = 0; s < warmup + steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepResult r = step.run(s, cfg.optimizer().lr(), cfg.schedule().mtp_loss_weight(),
                                  [&](std::span<int32_t> out) {
                                    std::copy(tokens.begin(), tokens.end(), out.begin());
                                  });
    const Losses& l = r.losses;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) {
      step_s.push_back(dt);
      (s == warmup ? loss_first : loss_last) = l.total;
    }
  }
  double total = 0;
  for (double t : step_s) total += t;
  const double tok_s = static_cast<double>(d.rows()) * static_cast<double>(step_s.size()) / total;
  const double flops = model.train_flops_per_token();

  JsonLine j;
  j.add("impl", std::string("moetron")).add("tokens_per_s", tok_s);
  j.add("mfu", tok_s * flops / (peak_gflops * 1e9)).add("gemm_peak_gflops", peak_gflops);
  j.add("gemm_backend", std::string(cpu::gemm_backend()));
  j.add("train_flops_per_token", flops).add("achieved_gflops", tok_s * flops * 1e-9);
  j.add("comm_bytes", int64_t{0});  // single process: no collectives
  j.add("threads", static_cast<int64_t>(compute_threads()));
  j.add("params", model.params().numel()).add("loss_first", loss_first);
  j.add("loss_last", steps > 1 ? loss_last : loss_first);
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
    const std::vector<std::string> args(argv + 1, argv + argc);
    return moetron::run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moetron_bench: error: %s\n", e.what());
    return 1;
  }
}
