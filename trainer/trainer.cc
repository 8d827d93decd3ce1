#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>

#include "core/check.h"
#include "core/gemm_peak.h"
#include "core/threads.h"
#include "data/loader.h"
#include "models/model.h"
#include "trainer/config.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"

namespace moetron {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string format_duration(double s) {
  const int64_t total = std::llround(s);
  std::ostringstream os;
  if (total >= 3600) os << total / 3600 << "h";
  if (total >= 60) os << (total / 60) % 60 << "m";
  os << total % 60 << "s";
  return os.str();
}

// Writes to the console and to train.log alike.
class Log {
 public:
  Log(std::ostream& console, const std::filesystem::path& file)
      : console_(console), file_(file, std::ios::trunc) {
    if (!file_) throw Error("cannot open " + file.string() + " for writing");
  }
  void line(const std::string& s) {
    console_ << s << std::endl;
    file_ << s << std::endl;
  }

 private:
  std::ostream& console_;
  std::ofstream file_;
};

double mean(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

// Per-layer MoE statistics of one step into the metrics record; returns the worst MaxVio.
double add_moe_metrics(const std::vector<MoeStepStats>& layers, double aux_loss, JsonLine& line) {
  double worst = 0;
  line.add("aux_loss", aux_loss);
  for (const MoeStepStats& m : layers) {
    const double n = static_cast<double>(std::max<int64_t>(1, m.micro_batches));
    const std::string p = "moe." + m.name + ".";
    line.add(p + "counts", m.counts).add(p + "max_violation", m.max_violation());
    line.add(p + "dropped", m.dropped).add(p + "entropy", m.entropy / n);
    line.add(p + "seq_aux_loss", m.seq_aux / n).add(p + "aux_loss", m.aux / n);
    line.add(p + "z_loss", m.z / n);
    worst = std::max(worst, m.max_violation());
  }
  line.add("max_violation", worst);
  return worst;
}

// What one progress line shows.
struct Progress {
  int64_t step, total_steps;
  double main_loss;
  std::optional<double> mtp_loss, max_violation;
  double lr, grad_norm, tokens_per_s, mfu, eta_s;
};

std::string progress_line(const Progress& p) {
  std::ostringstream os;
  os << "step " << std::setw(5) << p.step << "/" << p.total_steps << std::fixed
     << std::setprecision(4) << " | loss " << p.main_loss;
  if (p.mtp_loss) os << " | mtp " << *p.mtp_loss;
  if (p.max_violation) os << std::setprecision(2) << " | MaxVio " << *p.max_violation;
  os << std::scientific << std::setprecision(2) << " | lr " << p.lr << std::fixed
     << std::setprecision(3) << " | gnorm " << p.grad_norm << std::setprecision(0) << " | "
     << p.tokens_per_s << " tok/s" << std::setprecision(1) << " | MFU " << 100.0 * p.mfu << "%"
     << " | ETA " << format_duration(p.eta_s);
  return os.str();
}

}  // namespace

TrainResult train(const config::RunConfig& cfg, std::ostream& console,
                  const std::atomic<int>* stop) {
  auto stop_requested = [&] { return stop != nullptr && stop->load() != 0; };
  set_compute_threads(cfg.threads());
  const auto& mc = cfg.model();
  const auto& dc = cfg.data();
  const auto& sc = cfg.schedule();
  const auto& lc = cfg.logging();

  // Data first: a bad dataset should fail before any large allocation.
  const data::Dataset train_set(dc.dataset_dir(), data::Split::train);
  const bool validate = lc.val_batches() > 0;
  const std::optional<data::Dataset> val_set =
      validate ? std::optional<data::Dataset>(std::in_place, dc.dataset_dir(), data::Split::val)
               : std::nullopt;
  if (train_set.vocab_size() > mc.vocab_size())
    throw Error(detail::concat("model.vocab_size = ", mc.vocab_size(), " is smaller than the ",
                               "vocabulary of dataset ", dc.dataset_dir(), " (",
                               train_set.vocab_size(), " tokens, ", train_set.tokenizer_identity(),
                               "); set it to at least ", train_set.vocab_size()));

  Model model(mc, dc.micro_batch_size(), dc.seq_len());
  const ModelDims& dims = model.dims();
  model.params().init(cfg.seed(), mc.init_std());
  AdamW optimizer(model.params(), cfg.optimizer());

  const auto window = static_cast<int>(dims.window());
  data::Loader train_loader(train_set, window, dc.micro_batch_size(), cfg.seed());
  // The validation loader checks the split is long enough: now, not at the first evaluation.
  const uint64_t val_seed = cfg.seed() ^ 0x5eed5eedull;
  if (validate) data::Loader(*val_set, window, dc.micro_batch_size(), val_seed);
  std::vector<int32_t> tokens(static_cast<size_t>(dims.batch * dims.window()));

  const std::filesystem::path run_dir = lc.run_dir();
  std::filesystem::create_directories(run_dir);
  {
    std::ofstream resolved(run_dir / "config.pbtxt", std::ios::trunc);
    resolved << config_to_text(cfg);
    if (!resolved) throw Error("cannot write " + (run_dir / "config.pbtxt").string());
  }
  Log log(console, run_dir / "train.log");
  MetricsWriter metrics((run_dir / "metrics.jsonl").string());

  const double peak_gflops = measure_gemm_gflops(2048, 3);
  const double flops_per_token = model.train_flops_per_token();
  const int64_t tokens_per_step =
      static_cast<int64_t>(dc.grad_accum_steps()) * dims.batch * dims.seq;
  {
    std::ostringstream os;
    os << "moetron: " << model.params().numel() << " parameters, " << dims.layers
       << " layers, MTP D=" << dims.mtp_depth << ", " << tokens_per_step << " tokens/step, "
       << compute_threads() << " threads, GEMM peak " << std::fixed << std::setprecision(0)
       << peak_gflops << " GFLOP/s; train " << train_set.num_tokens() << " tokens, val "
       << (validate ? val_set->num_tokens() : 0) << " tokens; run dir " << run_dir.string();
    log.line(os.str());
  }

  // Validation after `step` steps, with the MTP weight the last of them trained with.
  auto evaluate = [&](int64_t step, float lambda) {
    // The same validation windows every time: a fixed seed and a fresh cursor.
    data::Loader val_loader(*val_set, window, dc.micro_batch_size(), val_seed);
    std::vector<double> main, total;
    std::vector<double> mtp(static_cast<size_t>(dims.mtp_depth), 0.0);
    for (int i = 0; i < lc.val_batches(); ++i) {
      if (stop_requested()) {
        log.line(detail::concat("val  step ", step, " | cut short by a signal, not recorded"));
        return std::numeric_limits<double>::quiet_NaN();
      }
      val_loader.next(tokens);
      const Losses l = model.evaluate(tokens, lambda);
      main.push_back(l.main);
      total.push_back(l.total);
      for (size_t k = 0; k < l.mtp.size(); ++k) mtp[k] += l.mtp[k] / lc.val_batches();
    }
    std::ostringstream os;
    os << std::fixed << std::setprecision(4) << "val  step " << step << " | loss " << mean(main);
    JsonLine line;
    line.add("kind", std::string("val")).add("step", step).add("val_loss", mean(main));
    line.add("val_total_loss", mean(total));
    for (size_t k = 0; k < mtp.size(); ++k) {
      os << " | mtp" << k + 1 << " " << mtp[k];
      line.add("val_mtp_loss_" + std::to_string(k + 1), mtp[k]);
    }
    log.line(os.str());
    metrics.write(line);
    return mean(main);
  };

  TrainResult result;
  result.final_val_loss = std::numeric_limits<double>::quiet_NaN();
  const auto run_start = Clock::now();
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  const int64_t total_steps = sc.total_steps();
  const float grad_scale = 1.0f / static_cast<float>(dc.grad_accum_steps());

  for (int64_t step = 0; step < total_steps; ++step) {
    if (stop_requested()) {
      result.stop_signal = stop->load();
      log.line(detail::concat("stopping on signal ", result.stop_signal, " after step ", step,
                              " of ", total_steps, "; metrics and log are complete up to there"));
      break;
    }
    ops::fill(model.params().flat_grads(), 0.0f);
    model.begin_step();
    const float lambda = mtp_loss_weight(sc, step);
    Losses acc;
    acc.mtp.assign(static_cast<size_t>(dims.mtp_depth), 0.0);
    for (int micro = 0; micro < dc.grad_accum_steps(); ++micro) {
      train_loader.next(tokens);
      const Losses l = model.forward_backward(tokens, lambda, grad_scale);
      acc.total += l.total * grad_scale;
      acc.main += l.main * grad_scale;
      acc.aux += l.aux * grad_scale;
      for (size_t k = 0; k < l.mtp.size(); ++k) acc.mtp[k] += l.mtp[k] * grad_scale;
    }
    const double gnorm = optimizer.grad_norm();
    if (!std::isfinite(acc.total) || !std::isfinite(gnorm)) {
      log.line(detail::concat("step ", step, ": non-finite ",
                              std::isfinite(acc.total) ? "gradient norm" : "loss", " (loss ",
                              acc.total, ", grad norm ", gnorm, ")"));
      throw Error(detail::concat(
          "training diverged at step ", step, ": loss ", acc.total, ", grad norm ", gnorm,
          ". The weights were not updated with it; metrics.jsonl and train.log in ",
          run_dir.string(), " are complete up to step ", step - 1,
          ". Lower optimizer.lr, raise schedule.warmup_steps or set optimizer.grad_clip."));
    }
    const double lr = learning_rate(sc, cfg.optimizer().lr(), step);
    optimizer.step(lr, gnorm);
    model.update_router_biases(step);
    result.losses.push_back(acc.total);
    result.main_losses.push_back(acc.main);
    result.steps = step + 1;
    ++window_steps;

    JsonLine line;
    line.add("kind", std::string("train")).add("step", step).add("loss", acc.total);
    line.add("main_loss", acc.main);
    for (size_t k = 0; k < acc.mtp.size(); ++k)
      line.add("mtp_loss_" + std::to_string(k + 1), acc.mtp[k]);
    line.add("lr", lr).add("grad_norm", gnorm).add("mtp_weight", static_cast<double>(lambda));
    const bool moe = !model.moe_step_stats().empty();
    const double worst_maxvio = moe ? add_moe_metrics(model.moe_step_stats(), acc.aux, line) : 0.0;

    const bool last = step + 1 == total_steps;
    if (step == 0 || (step + 1) % lc.log_interval() == 0 || last) {
      const double elapsed = seconds_since(window_start);
      const double tok_s = static_cast<double>(window_steps * tokens_per_step) / elapsed;
      const double mfu = tok_s * flops_per_token / (peak_gflops * 1e9);
      const double eta = seconds_since(run_start) / static_cast<double>(step + 1) *
                         static_cast<double>(total_steps - step - 1);
      log.line(progress_line(
          {step + 1, total_steps, acc.main,
           dims.mtp_depth > 0 ? std::optional<double>(mean(acc.mtp)) : std::nullopt,
           moe ? std::optional<double>(worst_maxvio) : std::nullopt, lr, gnorm, tok_s, mfu, eta}));
      line.add("tokens_per_s", tok_s).add("mfu", mfu);
      window_start = Clock::now();
      window_steps = 0;
    }
    metrics.write(line);
    if (validate && ((lc.val_interval() > 0 && (step + 1) % lc.val_interval() == 0) || last)) {
      result.final_val_loss = evaluate(step + 1, lambda);
      // Evaluation time is not training throughput: the window restarts after it.
      window_start = Clock::now();
      window_steps = 0;
    }
  }
  log.line(detail::concat("done: ", result.steps, " steps in ",
                          format_duration(seconds_since(run_start))));
  return result;
}

}  // namespace moetron
