#include "trainer/trainer.h"

#include <signal.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>

#include "configs/config.h"
#include "core/backend.h"
#include "core/check.h"
#include "core/gemm_peak.h"
#include "core/threads.h"
#include "data/file_io.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "models/model.h"
#include "models/model_config.h"
#include "parallel/collective.h"
#include "parallel/process_groups.h"
#include "trainer/checkpoints.h"
#include "trainer/event_file.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/plan.h"
#include "trainer/png.h"
#include "trainer/run_dir.h"
#include "trainer/train_step.h"
#include "trainer/validation.h"

namespace moetron {
namespace {

// The ranks sharing this machine's memory: Open MPI's count of them (set by mpirun, and by srun
// through PMIx), else every rank of the run.
int ranks_here(const ProcessGroups& groups) {
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); local && std::atoi(local) > 0)
    return std::atoi(local);
  return groups.layout().world;
}

using Clock = std::chrono::steady_clock;
using detail::concat;

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

// Writes to the console and to train.log alike; silent on ranks other than 0.
class Log {
 public:
  Log() = default;
  Log(std::ostream& console, const std::filesystem::path& file, bool append)
      : console_(&console), file_(std::in_place, file, append) {}
  void line(const std::string& s) {
    if (!console_) return;
    *console_ << s << std::endl;
    file_->write(s + '\n');
  }
  // The error that ends the run: into train.log alone (the caller reports it on stderr), and
  // as well as it can be (the error may be that train.log cannot be written).
  void error(const std::string& s) noexcept {
    if (!file_) return;
    try {
      file_->write("error: " + s + '\n');
    } catch (const Error&) {
    }
  }

 private:
  std::ostream* console_ = nullptr;
  std::optional<data::AppendFile> file_;
};

double mean(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

// The rows each expert-parallel rank's experts computed in one step, per MoE layer: [layer][ep
// rank], summed over the expert-parallel groups (each holds other tokens). A world all-reduce
// of layers x ep i64 on every rank; empty without expert parallelism.
std::vector<std::vector<int64_t>> ep_rows_received(const std::vector<MoeStepStats>& layers,
                                                   const ProcessGroups& groups) {
  const int ep = groups.layout().ep;
  if (ep <= 1 || layers.empty()) return {};
  const auto n = static_cast<int64_t>(layers.size());
  Tensor t = Tensor::zeros({n, ep}, DType::i64);
  for (int64_t l = 0; l < n; ++l)
    t.data<int64_t>()[l * ep + groups.ep_rank()] = layers[static_cast<size_t>(l)].rows_received;
  groups.world()->all_reduce(t);
  std::vector<std::vector<int64_t>> out;
  for (int64_t l = 0; l < n; ++l)
    out.emplace_back(t.data<int64_t>() + l * ep, t.data<int64_t>() + (l + 1) * ep);
  return out;
}

// Per-layer MoE statistics of one step into the metrics record (with `ep_rows`, each
// expert-parallel rank's load); returns the worst MaxVio.
double add_moe_metrics(const std::vector<MoeStepStats>& layers, double aux_loss,
                       const std::vector<std::vector<int64_t>>& ep_rows, JsonLine& line) {
  double worst = 0;
  line.add("aux_loss", aux_loss);
  for (size_t i = 0; i < layers.size(); ++i) {
    const MoeStepStats& m = layers[i];
    if (!ep_rows.empty()) line.add("moe." + m.name + ".ep_rows_received", ep_rows[i]);
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

// The arrays TensorBoard gets element by element (an expert's load, a rank's): up to this many.
constexpr size_t kTensorBoardArray = 64;

// The expert-load heatmap of one step: a row of cells per MoE layer, a column per expert, each
// cell's brightness its load over the step's largest (grayscale PNG, cells of `cell` pixels).
void expert_load_image(const std::vector<MoeStepStats>& layers, int64_t step, EventFile& events) {
  if (layers.empty() || layers[0].counts.empty()) return;
  const int experts = static_cast<int>(layers[0].counts.size());
  const int rows = static_cast<int>(layers.size());
  const int cell = std::clamp(512 / experts, 1, 16);
  int64_t largest = 1;
  for (const MoeStepStats& m : layers)
    for (int64_t c : m.counts) largest = std::max(largest, c);
  const int width = experts * cell, height = rows * cell;
  std::vector<uint8_t> pixels(static_cast<size_t>(width) * height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      pixels[static_cast<size_t>(y) * width + x] = static_cast<uint8_t>(
          255 * layers[static_cast<size_t>(y / cell)].counts[static_cast<size_t>(x / cell)] /
          largest);
  events.image("moe/expert_load", step, encode_png(pixels, width, height, 1), width, height, 1);
  events.flush();
}

// What one progress line shows.
struct Progress {
  int64_t step, total_steps;
  double main_loss;
  std::optional<double> mtp_loss, max_violation;
  double lr, grad_norm, tokens_per_s, mfu, eta_s;
  std::optional<double> comm_share;  // several ranks: share of the time spent communicating
};

std::string progress_line(const Progress& p) {
  std::ostringstream os;
  os << "step " << std::setw(5) << p.step << "/" << p.total_steps << std::fixed
     << std::setprecision(4) << " | loss " << p.main_loss;
  if (p.mtp_loss) os << " | mtp " << *p.mtp_loss;
  if (p.max_violation) os << std::setprecision(2) << " | MaxVio " << *p.max_violation;
  os << std::scientific << std::setprecision(2) << " | lr " << p.lr << std::fixed
     << std::setprecision(3) << " | gnorm " << p.grad_norm << std::setprecision(0) << " | "
     << p.tokens_per_s << " tok/s" << std::setprecision(1) << " | MFU " << 100.0 * p.mfu << "%";
  if (p.comm_share) os << std::setprecision(0) << " | comm " << 100.0 * *p.comm_share << "%";
  os << " | ETA " << format_duration(p.eta_s);
  return os.str();
}

// What to change when training diverges, with today's values.
std::string divergence_advice(const config::RunConfig& cfg) {
  std::ostringstream os;
  os << "Lower optimizer.lr (now " << cfg.optimizer().lr()
     << ") or raise schedule.warmup_steps (now " << cfg.schedule().warmup_steps() << ")";
  if (cfg.optimizer().grad_clip() <= 0.0f)
    os << ", or set optimizer.grad_clip (e.g. 1.0; clipping is off)";
  return os.str() + ".";
}

// What the log and metrics hold when the run stops before finishing step `step`.
std::string recorded_up_to(int64_t step) {
  return step > 1 ? concat("are complete up to step ", step - 1) : "hold no training step yet";
}

// Per-group communication counters, as differences between two moments.
class CommMeter {
 public:
  explicit CommMeter(const ProcessGroups& groups) : comms_(groups.all()) { mark(); }
  void mark() {
    last_.clear();
    for (const Communicator* c : comms_) last_.push_back(c->stats());
  }
  // Adds "comm.<group>.bytes/.seconds/.calls" since the mark; returns the seconds.
  double add_since_mark(JsonLine& line) const {
    double seconds = 0;
    for (size_t i = 0; i < comms_.size(); ++i) {
      const CommStats& now = comms_[i]->stats();
      const std::string p = "comm." + comms_[i]->name() + ".";
      line.add(p + "bytes", now.bytes - last_[i].bytes)
          .add(p + "calls", now.calls - last_[i].calls);
      line.add(p + "seconds", now.seconds - last_[i].seconds);
      seconds += now.seconds - last_[i].seconds;
    }
    return seconds;
  }

 private:
  std::vector<Communicator*> comms_;
  std::vector<CommStats> last_;
};

// A resumed run rewrites what happened after its checkpoint: metrics.jsonl keeps the records of
// steps up to the checkpoint's (replaced atomically) and the run appends from there.
void keep_metrics_up_to(const std::filesystem::path& metrics, int64_t last) {
  std::error_code ec;
  if (!std::filesystem::exists(metrics, ec)) return;
  const data::MappedFile map(metrics, "metrics file");
  std::string_view text(reinterpret_cast<const char*>(map.bytes().data()), map.bytes().size());
  std::string kept;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    int64_t step = -1;
    if (const size_t at = line.find("\"step\": "); at != std::string_view::npos)
      std::from_chars(line.data() + at + 8, line.data() + line.size(), step);
    if (step > last) continue;
    kept.append(line);
    kept += '\n';
  }
  data::write_file_atomic(metrics, kept);
}

// One run, from checked data and the run directory to the last step.
class Run {
 public:
  Run(const config::RunConfig& cfg, const ProcessGroups& groups, const data::Dataset& train_set,
      const std::optional<data::Dataset>& val_set, const std::filesystem::path& run_dir, Log& log,
      const TrainOptions& options, const std::optional<std::filesystem::path>& resume_from,
      const RunPlan& plan)
      : cfg_(cfg),
        groups_(groups),
        plan_(plan),
        val_set_(val_set),
        val_batches_(validation_batches(cfg, groups.layout().dp)),
        run_dir_(run_dir),
        log_(log),
        options_(options),
        model_(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len(),
               groups.runtime(compute_dtype(cfg.precision()))),
        step_(model_, cfg.optimizer(), groups, cfg.data().grad_accum_steps()),
        train_loader_(train_set, window(), cfg.data().micro_batch_size(), cfg.seed(),
                      groups.dp_rank(), groups.layout().dp),
        comm_(groups),
        checkpoints_(cfg, groups) {
    model_.params().init(cfg.seed(), cfg.model().init_std());
    state_.dataset = data::dataset_identity(train_set.manifest());
    if (resume_from) resume(*resume_from, train_set);
    // The run directory changes only now, when the checkpoint (if any) has loaded.
    if (groups.rank() == 0) {
      if (resume_from) keep_metrics_up_to(run_dir / "metrics.jsonl", state_.step);
      data::write_file_atomic(run_dir / "config.pbtxt", config_to_text(cfg));
      metrics_.emplace((run_dir / "metrics.jsonl").string(), resume_from.has_value());
      if (cfg.logging().tensorboard()) {
        events_.emplace(run_dir / "tensorboard");
        if (resume_from) events_->session_start(state_.step + 1);
      }
    }
  }

  TrainResult run();

 private:
  int window() const { return static_cast<int>(model_.dims().window()); }
  // The stop signal any rank has seen (0 if none): every rank stops at the same point, and
  // names the same signal, whichever of them it reached first.
  int agreed_stop_signal() const {
    return max_over_ranks(groups_.world(), options_.stop.requested());
  }
  int64_t samples_per_step() const {
    return int64_t{cfg_.data().grad_accum_steps()} * cfg_.data().micro_batch_size() *
           groups_.layout().dp;
  }
  // Whether any rank was asked (SIGUSR1) to save now; clears the request.
  bool save_requested() {
    const bool mine = options_.save_request != nullptr && options_.save_request->exchange(0) != 0;
    return any_rank(groups_.world(), mine);
  }
  void resume(const std::filesystem::path& file, const data::Dataset& train_set);
  void save_checkpoint(const char* why);
  void log_header(double peak_gflops, int64_t tokens_per_step);
  void report_memory();
  double evaluate(int64_t step, float lambda);
  // A record to metrics.jsonl, and its numbers to TensorBoard at `step`.
  void write(const JsonLine& line, int64_t step) {
    if (metrics_) metrics_->write(line);
    if (!events_) return;
    for (const auto& [key, value] : line.numbers(kTensorBoardArray))
      if (key != "step") events_->scalar(key, step, value);
    events_->flush();
  }

  const config::RunConfig& cfg_;
  const ProcessGroups& groups_;
  const RunPlan& plan_;  // made before the model: its memory line, and the GEMM peak
  const std::optional<data::Dataset>& val_set_;
  int64_t val_batches_;  // micro-batches per evaluation, over all data-parallel ranks
  std::filesystem::path run_dir_;
  Log& log_;
  const TrainOptions& options_;
  Model model_;
  TrainStep step_;
  data::Loader train_loader_;
  CommMeter comm_;
  Checkpoints checkpoints_;
  std::optional<MetricsWriter> metrics_;
  std::optional<EventFile> events_;  // rank 0, with logging.tensorboard
  checkpoint::TrainState state_;     // steps taken, tokens and windows consumed
  int64_t saved_step_ = -1;          // the step of the last checkpoint written
};

// Continues from `file`: weights, AdamW state and router biases, whatever layout saved them;
// the step, the tokens seen, and the loader at the window after the last one consumed.
void Run::resume(const std::filesystem::path& file, const data::Dataset& train_set) {
  const auto t0 = Clock::now();
  const std::string dataset = state_.dataset;
  try {
    state_ = checkpoints_.load(file, model_, step_.optimizer(), cfg_);
  } catch (const Error& e) {
    throw CollectiveError(concat(e.what(), checkpoints_.alternatives(file)));
  }
  const int64_t total = cfg_.schedule().total_steps();
  if (state_.step > total)
    throw CollectiveError(concat(
        file.string(), " is at step ", state_.step, ", past schedule.total_steps = ", total,
        ": raise schedule.total_steps (--set schedule.total_steps=...) ", "to train on from it"));
  if (!state_.dataset.empty() && state_.dataset != dataset) {
    if (!options_.allow_data_change)
      throw CollectiveError(concat(
          file.string(), " was trained on the dataset ", state_.dataset, ", and data.dataset_dir ",
          cfg_.data().dataset_dir(), " now holds ", dataset, " (", train_set.num_tokens(),
          " training tokens): prepared from other text or with another tokenizer, so resuming "
          "would continue its data position in other data. Point data.dataset_dir at the dataset "
          "it was trained on, or pass --allow-data-change to continue on this one"));
    log_.line(concat("note: the dataset changed (", state_.dataset, " -> ", dataset,
                     "); continuing on the new one (--allow-data-change)"));
  }
  state_.dataset = dataset;
  const int64_t per_draw = int64_t{cfg_.data().micro_batch_size()} * groups_.layout().dp;
  if (state_.samples_consumed % per_draw != 0)
    throw CollectiveError(
        concat(file.string(), " was saved after ", state_.samples_consumed,
               " training windows, which data.micro_batch_size x dp = ", per_draw,
               " does not divide: resume with a micro-batch size and layout that divide it"));
  train_loader_.seek({static_cast<uint64_t>(state_.samples_consumed / per_draw)});
  saved_step_ = state_.step;
  log_.line(concat("resumed from ", file.string(), ": step ", state_.step, ", ", state_.tokens_seen,
                   " tokens seen (", std::fixed, std::setprecision(2), seconds_since(t0), " s)"));
}

void Run::save_checkpoint(const char* why) {
  if (saved_step_ == state_.step) return;
  const auto t0 = Clock::now();
  const std::filesystem::path file =
      checkpoints_.save(model_, step_.optimizer(), state_, config_to_text(cfg_));
  saved_step_ = state_.step;
  std::ostringstream os;
  os << "checkpoint step " << state_.step << " (" << why << ") -> " << file.string();
  if (groups_.rank() == 0)
    os << " (" << std::fixed << std::setprecision(1)
       << static_cast<double>(std::filesystem::file_size(file)) / 1e6 << " MB, "
       << std::setprecision(2) << seconds_since(t0) << " s)";
  log_.line(os.str());
}

void Run::log_header(double peak_gflops, int64_t tokens_per_step) {
  const ModelDims& dims = model_.dims();
  const Layout& layout = groups_.layout();
  std::ostringstream os;
  os << "moetron: " << model_.params().numel() << " parameters";
  if (layout.world > 1) os << " on rank 0";
  os << ", " << dims.layers << " layers, MTP D=" << dims.mtp_depth << ", " << tokens_per_step
     << " tokens/step, ";
  if (layout.world > 1) os << layout.world << " ranks (" << layout.describe() << ") x ";
  os << compute_threads() << " threads";
  if (model_.runtime().device != Device{}) os << " on " << device_name(model_.runtime().device);
  os << ", " << dtype_name(model_.runtime().compute) << " GEMM peak " << std::fixed
     << std::setprecision(0) << peak_gflops << " GFLOP/s" << (layout.world > 1 ? " per rank" : "")
     << "; train " << train_loader_.dataset().num_tokens() << " tokens, val "
     << (val_set_ ? val_set_->num_tokens() : 0) << " tokens ("
     << val_batches_ * cfg_.data().micro_batch_size() << " windows per evaluation"
     << (cfg_.logging().val_sequences() > 0 ? "" : ", logging.val_batches: depends on the layout")
     << "); run dir " << run_dir_.string();
  log_.line(os.str());
  log_.line(memory_line(plan_));
  if (const std::string notes = layout_notes(cfg_, layout); !notes.empty())
    log_.line("note: " + notes);
}

// What the run held at its peak beside the plan: this rank's resident set and tensors, the
// largest over the ranks.
void Run::report_memory() {
  Tensor peaks = Tensor::empty({2}, DType::f64);
  peaks.data<double>()[0] = peak_resident_bytes();
  peaks.data<double>()[1] = static_cast<double>(backend(model_.runtime().device).memory_use().peak);
  if (groups_.world()) groups_.world()->all_reduce(peaks, ReduceOp::max);
  const double resident = peaks.data<double>()[0], tensors = peaks.data<double>()[1];
  const double planned = plan_.memory.total();
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << "memory per rank: peak resident " << resident / 1e6
     << " MB" << (groups_.layout().world > 1 ? " (the largest of the ranks)" : "") << ", tensors "
     << tensors / 1e6 << " MB; planned " << planned / 1e6 << " MB (" << std::showpos
     << 100 * (planned - resident) / resident << std::noshowpos << "%)";
  log_.line(os.str());
  JsonLine line;
  line.add("kind", std::string("memory")).add("step", state_.step);
  line.add("peak_resident_bytes", resident).add("peak_tensor_bytes", tensors);
  line.add("planned_bytes", planned).add("planned_tensor_bytes", planned - plan_.memory.runtime);
  write(line, state_.step);
}

// Validation after `step` steps, with the MTP weight the last of them trained with. The
// val_batches_ micro-batches are those one rank alone would draw, shared out over the
// data-parallel ranks (with val_sequences: windows [0, val_sequences) of the draw, in any
// layout).
double Run::evaluate(int64_t step, float lambda) {
  const size_t depth = static_cast<size_t>(model_.dims().mtp_depth);
  const std::optional<Losses> losses = validate(model_, groups_, *val_set_, cfg_, val_batches_,
                                                lambda, [&] { return agreed_stop_signal() != 0; });
  if (!losses) {
    log_.line(concat("val  step ", step, " | cut short by a signal, not recorded"));
    return std::numeric_limits<double>::quiet_NaN();
  }
  const Losses& l = *losses;
  const int64_t batches = val_batches_;
  std::ostringstream os;
  os << std::fixed << std::setprecision(4) << "val  step " << step << " | loss " << l.main;
  JsonLine line;
  line.add("kind", std::string("val")).add("step", step).add("val_loss", l.main);
  line.add("val_total_loss", l.total);
  line.add("val_windows", batches * cfg_.data().micro_batch_size());
  for (size_t k = 0; k < depth; ++k) {
    os << " | mtp" << k + 1 << " " << l.mtp[k];
    line.add("val_mtp_loss_" + std::to_string(k + 1), l.mtp[k]);
  }
  log_.line(os.str());
  write(line, step);
  return l.main;
}

TrainResult Run::run() {
  const config::DataConfig& dc = cfg_.data();
  const config::ScheduleConfig& sc = cfg_.schedule();
  const config::LoggingConfig& lc = cfg_.logging();
  const ModelDims& dims = model_.dims();
  const int world = groups_.layout().world;
  double peak_gflops = plan_.device.peak_flops / 1e9;
  const double flops_per_token = model_.train_flops_per_token();
  const int64_t tokens_per_step =
      static_cast<int64_t>(dc.grad_accum_steps()) * dims.batch * dims.seq * groups_.layout().dp;
  log_header(peak_gflops, tokens_per_step);
  const bool validate = val_set_.has_value();

  TrainResult result;
  result.final_val_loss = std::numeric_limits<double>::quiet_NaN();
  result.steps = state_.step;
  const auto run_start = Clock::now();
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  double window_comm_s = 0;
  const int64_t total_steps = sc.total_steps();
  if (state_.step == total_steps)
    log_.line(concat("the run is already complete (step ", state_.step,
                     " = schedule.total_steps); ", "raise schedule.total_steps to train further"));

  // `step` counts from 1: the step being taken now.
  for (int64_t step = state_.step + 1; step <= total_steps; ++step) {
    if (const int sig = agreed_stop_signal(); sig != 0) {
      result.stop_signal = sig;
      log_.line(concat("stopping on signal ", result.stop_signal,
                       step > 1 ? concat(" after step ", step - 1, " of ", total_steps)
                                : std::string(" before the first step"),
                       "; metrics.jsonl and train.log ", recorded_up_to(step)));
      if (step > 1) save_checkpoint("stopped by a signal");
      break;
    }
    const int64_t index = step - 1;  // the schedules' 0-based step index
    const float lambda = mtp_loss_weight(sc, index);
    const double lr = learning_rate(sc, cfg_.optimizer().lr(), index);
    comm_.mark();
    const StepResult r = step_.run(index, lr, lambda,
                                   [&](std::span<int32_t> tokens) { train_loader_.next(tokens); });
    if (!r.finite) {
      log_.line(concat("step ", step, ": non-finite ",
                       std::isfinite(r.losses.total) ? "gradient norm" : "loss", " (loss ",
                       r.losses.total, ", grad norm ", r.grad_norm, ")"));
      throw CollectiveError(concat(
          "training diverged at step ", step, ": loss ", r.losses.total, ", grad norm ",
          r.grad_norm, ". The weights were not updated with it; metrics.jsonl and train.log in ",
          run_dir_.string(), " ", recorded_up_to(step), ". ", divergence_advice(cfg_)));
    }
    result.losses.push_back(r.losses.total);
    result.main_losses.push_back(r.losses.main);
    result.grad_norms.push_back(r.grad_norm);
    result.steps = step;
    state_.step = step;
    state_.samples_consumed += samples_per_step();
    state_.tokens_seen += tokens_per_step;
    ++window_steps;

    JsonLine line;
    line.add("kind", std::string("train")).add("step", step).add("loss", r.losses.total);
    line.add("main_loss", r.losses.main);
    for (size_t k = 0; k < r.losses.mtp.size(); ++k)
      line.add("mtp_loss_" + std::to_string(k + 1), r.losses.mtp[k]);
    line.add("lr", lr).add("grad_norm", r.grad_norm);
    line.add("mtp_weight", static_cast<double>(lambda));
    if (cfg_.optimizer().kind() == config::OptimizerConfig::MUON &&
        cfg_.optimizer().muon().qk_clip_tau() > 0)
      line.add("qk_clip.max_logit", r.max_logit).add("qk_clip.clipped_heads", r.clipped_heads);
    const bool moe = !r.moe.empty();
    const double worst_maxvio =
        moe ? add_moe_metrics(r.moe, r.losses.aux, ep_rows_received(r.moe, groups_), line) : 0.0;
    if (world > 1) {
      window_comm_s += comm_.add_since_mark(line);
      line.add("comm.grad_sync_exposed_seconds", r.exposed_comm_seconds);
    }

    const bool last = step == total_steps;
    if (step == 1 || step % lc.log_interval() == 0 || last) {
      const double elapsed = seconds_since(window_start);
      const double tok_s = static_cast<double>(window_steps * tokens_per_step) / elapsed;
      const double achieved = tok_s * flops_per_token / 1e9 / world;  // GFLOP/s per rank
      if (const double peak = plausible_peak(
              peak_gflops, achieved,
              // Smaller than the start-up probe: its matrices (12 MB) join the model's memory.
              [&] { return measure_gemm_gflops(1024, 5, model_.runtime().compute); });
          peak != peak_gflops) {
        log_.line(concat("note: step ", step, " ran at ", std::llround(achieved),
                         " GFLOP/s per rank, above the start-up GEMM peak of ",
                         std::llround(peak_gflops), " (measured on a busy machine?); the peak is ",
                         std::llround(peak), " GFLOP/s from now on"));
        peak_gflops = peak;
      }
      const double mfu = achieved / peak_gflops;
      const double eta = seconds_since(run_start) / static_cast<double>(step) *
                         static_cast<double>(total_steps - step);
      log_.line(progress_line(
          {step, total_steps, r.losses.main,
           dims.mtp_depth > 0 ? std::optional<double>(mean(r.losses.mtp)) : std::nullopt,
           moe ? std::optional<double>(worst_maxvio) : std::nullopt, lr, r.grad_norm, tok_s, mfu,
           eta, world > 1 ? std::optional<double>(window_comm_s / elapsed) : std::nullopt}));
      line.add("tokens_per_s", tok_s).add("mfu", mfu);
      window_start = Clock::now();
      window_steps = 0;
      window_comm_s = 0;
    }
    write(line, step);
    if (validate && ((lc.val_interval() > 0 && step % lc.val_interval() == 0) || last)) {
      result.final_val_loss = evaluate(step, lambda);
      if (events_ && moe) expert_load_image(r.moe, step, *events_);
      // Evaluation time is not training throughput: the window restarts after it.
      window_start = Clock::now();
      window_steps = 0;
      window_comm_s = 0;
    }
    const int64_t interval = cfg_.checkpoint().interval();
    const bool asked = save_requested();
    if ((interval > 0 && step % interval == 0) || asked || last) {
      save_checkpoint(last ? "end of run" : asked ? "asked by SIGUSR1" : "interval");
      window_start = Clock::now();
      window_steps = 0;
      window_comm_s = 0;
    }
  }
  report_memory();
  log_.line(concat("done: ", state_.step, " steps in ", format_duration(seconds_since(run_start)),
                   saved_step_ >= 0
                       ? concat("; the latest checkpoint is step ", saved_step_, " in ",
                                checkpoints_.dir().string())
                       : std::string("; no checkpoint was written (no step finished)")));
  return result;
}

}  // namespace

TrainResult train(const config::RunConfig& cfg, std::ostream& console,
                  const TrainOptions& options) {
  // The device first: one this build or machine lacks stops before anything is read or
  // allocated (a parallel job's groups checked it already, on every rank).
  const Device device = parse_device(cfg.device());  // validated: a valid name
  const ProcessGroups alone(device);
  const ProcessGroups& groups = options.groups ? *options.groups : alone;
  MOETRON_CHECK(groups.device() == device, "the process groups are for ",
                device_name(groups.device()), ", the config's device is ", cfg.device());
  const bool root = groups.rank() == 0;
  set_compute_threads(cfg.threads());
  const auto& mc = cfg.model();
  const auto& dc = cfg.data();
  const auto& lc = cfg.logging();
  run_collectively(groups.world(), [&] {
    try {
      backend(device);
    } catch (const Error& e) {
      throw Error(concat("device = \"", cfg.device(), "\": ", e.what()));
    }
  });
  // Data first: a bad dataset, or a window longer than a split, fails before any large
  // allocation and before the run directory is touched. Every rank checks; rank 0 takes the
  // run's directories; a failure anywhere stops every rank with the same message.
  std::optional<data::Dataset> train_set, val_set;
  std::optional<RunDirectories> dirs;
  std::optional<std::filesystem::path> resume_from;
  run_collectively(groups.world(), [&] {
    train_set.emplace(dc.dataset_dir(), data::Split::train);
    if (validation_batches(cfg, groups.layout().dp) > 0)
      val_set.emplace(dc.dataset_dir(), data::Split::val);
    if (train_set->vocab_size() > mc.vocab_size())
      throw Error(concat("model.vocab_size = ", mc.vocab_size(), " is smaller than the ",
                         "vocabulary of dataset ", dc.dataset_dir(), " (", train_set->vocab_size(),
                         " tokens, ", train_set->tokenizer_identity(), "); set it to at least ",
                         train_set->vocab_size()));
    const int window = dc.seq_len() + 1 + mc.num_nextn_predict_layers();
    data::Loader(*train_set, window, dc.micro_batch_size(), cfg.seed());  // throws if too short
    if (val_set) data::Loader(*val_set, window, dc.micro_batch_size(), cfg.seed());
  });
  // The plan, before the model: a layout that does not fit stops here, before the run directory
  // changes. The GEMM probe runs now, its matrices gone before the model's arrive.
  std::optional<RunPlan> plan;
  // The peak of the precision the GEMMs run in, so the MFU is against what this precision can do.
  // On a GPU: the H200's, the GPU this project checks on (moetron plan's device table; the CPU
  // probe would measure the wrong chip).
  const DType compute = compute_dtype(cfg.precision());
  const DeviceSpec spec =
      device.kind == DeviceKind::cuda
          ? device_spec("h200")
          : cpu_spec(measure_gemm_gflops(2048, 3, compute) * 1e9, ranks_here(groups));
  backend(device).reset_peak();  // the run's peak, not the probe's
  run_collectively(groups.world(), [&] {
    plan.emplace(plan_run(cfg, groups.layout().world, spec));
    if (!plan->fits()) throw Error(does_not_fit(*plan));
  });
  // The run's directories, every check made before anything in them changes (trainer/run_dir.h).
  const Checkpoints checkpoints(cfg, groups);
  run_collectively(groups.world(), [&] {
    if (!root) return;
    const Existing existing = options.resume      ? Existing::resume
                              : options.overwrite ? Existing::overwrite
                                                  : Existing::refuse;
    dirs.emplace(lc.run_dir(), checkpoints.dir(), existing);
  });
  // The checkpoint to resume from: every rank finds the same file.
  if (options.resume)
    run_collectively(groups.world(),
                     [&] { resume_from = checkpoints.resume_point(options.resume_from); });
  Log log = root ? Log(console, std::filesystem::path(lc.run_dir()) / "train.log", options.resume)
                 : Log();
  try {
    Run run(cfg, groups, *train_set, val_set, lc.run_dir(), log, options, resume_from, *plan);
    return run.run();
  } catch (const std::exception& e) {
    log.error(error_text(e));  // train.log tells the whole story
    throw;
  }
}

}  // namespace moetron
