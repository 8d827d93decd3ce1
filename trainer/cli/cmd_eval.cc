// `moetron eval CKPT [--dataset DIR] [--sequences N | --tokens N | --batches N] [--set ...]`:
// the validation loss, perplexity and MTP losses of a checkpoint, in any layout (one process, or
// every rank of an MPI job), by the validation pass `train` runs (trainer/validation.h).
#include <cmath>
#include <cstdio>
#include <optional>

#include "checkpoint/checkpoint.h"
#include "configs/config.h"
#include "core/check.h"
#include "core/threads.h"
#include "data/loader.h"
#include "models/model_config.h"
#include "parallel/collective.h"
#include "parallel/every_rank.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "trainer/cli/commands.h"
#include "trainer/lr_schedule.h"
#include "trainer/metrics.h"
#include "trainer/validation.h"

namespace moetron {
namespace {

using detail::concat;

constexpr const char* kUsage =
    "usage: moetron eval CKPT [--dataset DIR] [--sequences N | --tokens N | --batches N]\n"
    "                   [--set a.b=value ...] [--json]\n"
    "  The validation loss, perplexity and MTP losses of checkpoint CKPT (a file, or a run or\n"
    "  checkpoint directory: its latest) on the validation split of a prepared dataset, by the\n"
    "  pass `moetron train` runs, so the numbers are those train reported at that step.\n"
    "  --dataset DIR     the prepared dataset (default: the checkpoint's data.dataset_dir)\n"
    "  --sequences N     N validation windows (default: the checkpoint's logging.val_sequences,\n"
    "                    or its val_batches micro-batches); the same windows in every layout\n"
    "  --tokens N        as many windows as N predicted tokens need (N / data.seq_len, rounded\n"
    "                    up)\n"
    "  --batches N       N micro-batches of data.micro_batch_size\n"
    "  --set a.b=value   change the checkpoint's config: the layout (parallel.*; default: data\n"
    "                    parallel over the ranks started), data.micro_batch_size, threads,\n"
    "                    precision (the model must stay the checkpoint's)\n"
    "  --json            print the result as one JSON object\n"
    "  Under mpirun/srun every rank runs it; the windows must split into whole rounds of\n"
    "  dp x data.micro_batch_size.";

struct Options {
  std::string checkpoint, dataset;
  std::vector<std::string> overrides;
  std::optional<int64_t> sequences, tokens, batches;
  bool json = false;
};

Options parse(std::span<const std::string> args) {
  ConfigArgs parsed = parse_command_args(args, kUsage);
  Options o;
  o.checkpoint = parsed.path;
  o.overrides = parsed.overrides;
  int counts = 0;
  for (size_t i = 0; i < parsed.rest.size(); ++i) {
    const std::string& a = parsed.rest[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 == parsed.rest.size()) throw Error(concat("eval: ", a, " needs a value\n", kUsage));
      return parsed.rest[++i];
    };
    auto count = [&](std::optional<int64_t>& out) {
      out = parse_number<int64_t>("eval", a, value());
      if (*out <= 0) throw Error(concat("eval: ", a, " must be at least 1, got ", *out));
      ++counts;
    };
    if (a == "--dataset") {
      o.dataset = value();
    } else if (a == "--sequences") {
      count(o.sequences);
    } else if (a == "--tokens") {
      count(o.tokens);
    } else if (a == "--batches") {
      count(o.batches);
    } else if (a == "--json") {
      o.json = true;
    } else {
      throw Error(concat("eval: unexpected argument '", a, "'\n", kUsage));
    }
  }
  if (o.checkpoint.empty()) throw Error(concat("eval: no checkpoint given\n", kUsage));
  if (counts > 1)
    throw Error(concat("eval: give one of --sequences, --tokens and --batches\n", kUsage));
  return o;
}

}  // namespace

int run_eval(std::span<const std::string> args, const StopToken& stop) {
  if (wants_help(args)) {
    std::printf("%s\n", kUsage);
    return 0;
  }
  const Options o = parse(args);
  const MpiRuntime mpi;
  return run_on_every_rank(mpi, "eval", [&] {
    std::optional<MpiCommunicator> world;
    if (mpi.active()) world.emplace(MPI_COMM_WORLD, "world");
    std::filesystem::path file;
    config::RunConfig cfg;
    Layout layout;
    run_collectively(world ? &*world : nullptr, [&] {
      file = resolve_checkpoint(o.checkpoint);
      cfg = checkpoint::saved_config(file);
      // Any layout: data parallel over the ranks started unless --set says otherwise (the
      // checkpoint records the layout it was trained in; weights load into any).
      config::ParallelConfig* p = cfg.mutable_parallel();
      p->set_dp(0);
      p->set_tp(1);
      p->set_ep(1);
      for (const std::string& s : o.overrides) apply_override(cfg, s);
      if (!o.dataset.empty()) cfg.mutable_data()->set_dataset_dir(o.dataset);
      // The windows, as train counts them.
      const int64_t mb = cfg.data().micro_batch_size();
      config::LoggingConfig* lc = cfg.mutable_logging();
      if (o.sequences) lc->set_val_sequences(*o.sequences);
      if (o.tokens)
        lc->set_val_sequences((*o.tokens + cfg.data().seq_len() - 1) / cfg.data().seq_len());
      if (o.batches) lc->set_val_sequences(*o.batches * mb);
      validate_config(cfg);
      layout = resolve_layout(cfg, mpi.world_size());
      if (validation_batches(cfg, layout.dp) == 0)
        throw Error(
            "eval: no validation windows (logging.val_sequences and val_batches are 0): "
            "give --sequences N");
    });
    set_compute_threads(cfg.threads());
    const std::optional<ProcessGroups> parallel =
        mpi.active() ? std::optional<ProcessGroups>(std::in_place, layout) : std::nullopt;
    const ProcessGroups alone;
    const ProcessGroups& groups = parallel ? *parallel : alone;
    const int64_t batches = validation_batches(cfg, layout.dp);
    std::optional<data::Dataset> split;
    run_collectively(groups.world(), [&] {
      split.emplace(cfg.data().dataset_dir(), data::Split::val);
      data::Loader(*split, cfg.data().seq_len() + 1 + cfg.model().num_nextn_predict_layers(),
                   cfg.data().micro_batch_size(), cfg.seed());  // throws if too short
    });
    Model model(cfg.model(), cfg.data().micro_batch_size(), cfg.data().seq_len(),
                groups.runtime(compute_dtype(cfg.precision())));
    const checkpoint::TrainState state =
        checkpoint::load(file, model.params(), nullptr, cfg, groups);
    // The MTP weight the checkpoint's last step trained with, as train's validation uses.
    const float lambda = mtp_loss_weight(cfg.schedule(), std::max<int64_t>(state.step, 1) - 1);
    int stop_signal = 0;  // the signal any rank saw: every rank exits with the same status
    const std::optional<Losses> l = validate(model, groups, *split, cfg, batches, lambda, [&] {
      stop_signal = max_over_ranks(groups.world(), stop.requested());
      return stop_signal != 0;
    });
    if (!l) return 128 + stop_signal;
    if (groups.rank() != 0) return 0;
    const int64_t windows = batches * cfg.data().micro_batch_size();
    if (o.json) {
      JsonLine j;
      j.add("checkpoint", file.string()).add("step", state.step);
      j.add("dataset", cfg.data().dataset_dir()).add("windows", windows);
      j.add("tokens", windows * cfg.data().seq_len()).add("layout", layout.describe());
      j.add("val_loss", l->main).add("perplexity", std::exp(l->main));
      j.add("val_total_loss", l->total);
      for (size_t k = 0; k < l->mtp.size(); ++k)
        j.add("val_mtp_loss_" + std::to_string(k + 1), l->mtp[k]);
      std::printf("%s\n", j.str().c_str());
      return 0;
    }
    std::string mtp;
    for (size_t k = 0; k < l->mtp.size(); ++k) {
      char buf[64];
      std::snprintf(buf, sizeof buf, " | mtp%zu %.4f", k + 1, l->mtp[k]);
      mtp += buf;
    }
    std::printf("eval %s (step %lld): %lld windows of %d tokens from %s, %s\n", file.c_str(),
                static_cast<long long>(state.step), static_cast<long long>(windows),
                cfg.data().seq_len(), cfg.data().dataset_dir().c_str(), layout.describe().c_str());
    std::printf("val  step %lld | loss %.4f | ppl %.4f%s\n", static_cast<long long>(state.step),
                l->main, std::exp(l->main), mtp.c_str());
    return 0;
  });
}

}  // namespace moetron
