// `moetron generate CKPT --prompt TEXT [options]`: continue a prompt with a trained model on the
// CPU, plain or with the model's MTP modules as speculative drafters (docs/generate.md).
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/check.h"
#include "core/threads.h"
#include "data/manifest.h"
#include "models/generate.h"
#include "models/model.h"
#include "parallel/process_groups.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using detail::concat;

constexpr const char* kUsage =
    "usage: moetron generate CKPT --prompt TEXT [options]\n"
    "  CKPT               a checkpoint file, or a checkpoint or run directory (the checkpoint\n"
    "                     its `latest` names; a run's are in RUN_DIR/checkpoints)\n"
    "  --prompt TEXT      the text to continue (at least one token)\n"
    "  --max-tokens N     tokens to generate (default 100, at most 1048576)\n"
    "  --temperature T    0 (default): greedy; > 0: sample from softmax(logits / T)\n"
    "  --top-p P          sample from the smallest set of most probable tokens whose\n"
    "                     probability reaches P, in (0, 1] (default 1: all tokens)\n"
    "  --seed S           the sampler's seed (default 0): the same seed, the same text\n"
    "  --speculative mtp  draft with the model's MTP modules and verify with the main model;\n"
    "                     also decodes plainly in the same run (each way timed 5 times) and\n"
    "                     reports the acceptance rate and the speed-up (greedy: the same text)\n"
    "  --tokenizer DIR    a prepared dataset directory whose tokenizer to use (default: the\n"
    "                     checkpoint's data.dataset_dir)\n"
    "  --threads N        CPU threads (default 1; 0: one per core; at most 1024)\n"
    "  --echo             print the prompt before the continuation\n"
    "  The continuation goes to stdout as it is generated (with --speculative mtp, after the\n"
    "  measurement), figures to stderr. SIGINT/SIGTERM stop it at the next token (130/143).\n";

// The longest continuation asked for at once; the decoder's cache is also checked against the
// memory available.
constexpr int64_t kMaxTokens = int64_t{1} << 20;

struct Options {
  std::string checkpoint, prompt, tokenizer_dir;
  bool has_prompt = false, speculative = false, echo = false;
  int threads = 1;  // a small model decodes fastest alone: no fork per op
  GenerateOptions generate;
};

Options parse(std::span<const std::string> args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "--echo") {
      o.echo = true;
      continue;
    }
    if (!flag.starts_with("--")) {
      if (!o.checkpoint.empty())
        throw Error(concat("generate: unexpected argument \"", flag, "\"\n", kUsage));
      o.checkpoint = flag;
      continue;
    }
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw Error(concat("generate: ", flag, " needs a value\n", kUsage));
      return args[++i];
    };
    if (flag == "--prompt") {
      o.prompt = value();
      o.has_prompt = true;
    } else if (flag == "--max-tokens") {
      o.generate.max_tokens = parse_number<int64_t>("generate", flag, value());
    } else if (flag == "--temperature") {
      o.generate.sampling.temperature = parse_number<float>("generate", flag, value());
    } else if (flag == "--top-p") {
      o.generate.sampling.top_p = parse_number<float>("generate", flag, value());
    } else if (flag == "--seed") {
      o.generate.sampling.seed = parse_number<uint64_t>("generate", flag, value());
    } else if (flag == "--speculative") {
      if (value() != "mtp")
        throw Error(
            concat("generate: --speculative takes \"mtp\" (the model's MTP modules), got \"",
                   args[i], "\""));
      o.speculative = true;
    } else if (flag == "--tokenizer") {
      o.tokenizer_dir = value();
    } else if (flag == "--threads") {
      o.threads = parse_number<int>("generate", flag, value());
      if (o.threads < 0 || o.threads > kMaxThreads)
        throw Error(concat("generate: --threads ", o.threads, " is out of range: [0, ", kMaxThreads,
                           "] (0 = one per core)"));
    } else {
      throw Error(concat("generate: unknown flag \"", flag, "\"; valid flags:\n", kUsage));
    }
  }
  if (o.checkpoint.empty()) throw Error(concat("generate: no checkpoint given\n", kUsage));
  if (!o.has_prompt) throw Error(concat("generate: no --prompt given\n", kUsage));
  if (o.generate.max_tokens < 1 || o.generate.max_tokens > kMaxTokens)
    throw Error(concat("generate: --max-tokens ", o.generate.max_tokens, " is out of range: [1, ",
                       kMaxTokens, "]"));
  (void)Sampler(o.generate.sampling);  // rejects a bad temperature or top-p before any loading
  return o;
}

std::unique_ptr<data::Tokenizer> load_tokenizer(const config::RunConfig& cfg, const Options& o) {
  const fs::path dir =
      o.tokenizer_dir.empty() ? fs::path(cfg.data().dataset_dir()) : fs::path(o.tokenizer_dir);
  if (!fs::exists(dir / data::kManifestFile)) {
    if (o.tokenizer_dir.empty())
      throw Error(
          concat("generate: the tokenizer is the one of the dataset the model was trained "
                 "on, data.dataset_dir = ",
                 dir, ", and it has no ", data::kManifestFile,
                 " here (relative paths start at the current directory); pass "
                 "--tokenizer DIR, a prepared dataset directory with the same tokenizer"));
    throw Error(concat("generate: --tokenizer ", dir, " is not a prepared dataset directory (no ",
                       data::kManifestFile, ")"));
  }
  const data::Manifest m = data::read_manifest(dir);
  if (m.vocab_size > cfg.model().vocab_size())
    throw Error(concat("generate: the tokenizer of ", dir, " has ", m.vocab_size,
                       " ids, more than the model's vocabulary (", cfg.model().vocab_size(), ")"));
  return data::load_tokenizer(dir, m);
}

constexpr int kRepeats = 5;

// Bytes of memory the system can give now (MemAvailable), or 0 when unknown.
uint64_t available_memory() {
  std::ifstream in("/proc/meminfo");
  for (std::string key; in >> key;) {
    uint64_t kb = 0;
    in >> kb;
    if (key == "MemAvailable:") return kb * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

// The decoder keeps each layer's decoding state for every position (attention: keys and
// values; MLA: the latent and the RoPE key) in every layer and MTP block; twice that stands for
// its other per-position buffers.
void check_cache_fits(const config::ModelConfig& mc, int64_t positions) {
  uint64_t floats = 0;  // per position, all layers
  for (int64_t l = 0; l < int64_t{mc.num_hidden_layers()} + mc.num_nextn_predict_layers(); ++l)
    floats += layer_type(mc, l) == config::ModelConfig::MLA
                  ? static_cast<uint64_t>(mc.mla().kv_lora_rank() + mc.mla().qk_rope_head_dim())
                  : 2 * static_cast<uint64_t>(kv_heads(mc)) * head_dim(mc);
  const uint64_t bytes = 2 * floats * 4 * static_cast<uint64_t>(positions);
  const uint64_t available = available_memory();
  if (available > 0 && bytes > available)
    throw Error(concat("generate: ", positions,
                       " positions (the prompt and --max-tokens) need about ", bytes >> 20,
                       " MiB for the decoder's cache, and ", available >> 20,
                       " MiB are available: ask for fewer tokens"));
}

// Writes the continuation as its tokens come. Byte tokens are bytes; SentencePiece pieces are
// decoded a few at a time, holding back while the text ends in a replacement character (a UTF-8
// sequence cut between byte-fallback pieces).
class TextStream {
 public:
  TextStream(const data::Tokenizer& tokenizer, FILE* out) : tokenizer_(tokenizer), out_(out) {}
  void push(int32_t token) {
    pending_.push_back(token);
    const std::string text = tokenizer_.decode(pending_);
    if (text.ends_with("\xEF\xBF\xBD") && pending_.size() < 8) return;
    write(text);
  }
  void finish() {
    if (!pending_.empty()) write(tokenizer_.decode(pending_));
    if (!ends_with_newline_) std::fputc('\n', out_);
    std::fflush(out_);
  }
  void write(const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), out_);
    std::fflush(out_);
    if (!text.empty()) ends_with_newline_ = text.back() == '\n';
    pending_.clear();
  }

 private:
  const data::Tokenizer& tokenizer_;
  FILE* out_;
  std::vector<int32_t> pending_;
  bool ends_with_newline_ = true;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void print_run(const char* what, const GenerateResult& r) {
  std::fprintf(stderr,
               "%-12s %zu tokens in %.3f s: %.1f tokens/s (prompt %.1f ms), %lld main passes\n",
               what, r.tokens.size(), r.total_seconds, r.tokens_per_second(),
               r.prefill_seconds * 1e3, static_cast<long long>(r.main_forwards));
}

void print_acceptance(const GenerateResult& r) {
  auto pct = [](int64_t a, int64_t b) {
    return b > 0 ? 100.0 * static_cast<double>(a) / static_cast<double>(b) : 0.0;
  };
  std::fprintf(stderr, "acceptance   %.1f%% of drafts (%lld of %lld)",
               pct(r.total_accepted(), r.total_drafted()),
               static_cast<long long>(r.total_accepted()),
               static_cast<long long>(r.total_drafted()));
  if (r.drafted.size() > 1)
    for (size_t k = 0; k < r.drafted.size(); ++k)
      std::fprintf(stderr, "%s module %zu: %.1f%%", k == 0 ? ";" : ",", k + 1,
                   pct(r.accepted[k], r.drafted[k]));
  std::fprintf(stderr, "; %.2f tokens per main pass; drafting took %.0f%% of the time\n",
               static_cast<double>(r.tokens.size()) / static_cast<double>(r.main_forwards),
               100.0 * r.draft_seconds / r.total_seconds);
}

}  // namespace

int run_generate(std::span<const std::string> args, const StopToken& stop) {
  if (wants_help(args)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Options o = parse(args);
  set_compute_threads(o.threads);
  const fs::path file = resolve_checkpoint(o.checkpoint);  // commands.h
  const config::RunConfig cfg = checkpoint::saved_config(file);
  const std::unique_ptr<data::Tokenizer> tokenizer = load_tokenizer(cfg, o);
  o.generate.vocab = tokenizer->vocab_size();
  const std::vector<int32_t> prompt = tokenizer->encode(o.prompt);
  if (prompt.empty()) throw Error("generate: the prompt encodes to no tokens: give some text");
  const config::ModelConfig& mc = cfg.model();
  if (o.speculative && mc.num_nextn_predict_layers() == 0)
    throw Error(concat("generate: --speculative mtp drafts with the model's MTP modules, and ",
                       file, " has none (model.num_nextn_predict_layers = 0)"));

  // The weights alone, into a model of one rank (the activations of one 1-token batch).
  Model model(mc, 1, 1);
  const ProcessGroups alone;
  const checkpoint::TrainState state = checkpoint::load(file, model.params(), nullptr, cfg, alone);
  const auto max_len = generation_max_len(static_cast<int64_t>(prompt.size()),
                                          o.generate.max_tokens, mc.num_nextn_predict_layers());
  check_cache_fits(mc, max_len);
  Decoder decoder(model, max_len);
  std::fprintf(stderr, "generate: %s (step %lld), prompt %zu tokens, %s\n", file.c_str(),
               static_cast<long long>(state.step), prompt.size(),
               o.generate.sampling.temperature == 0
                   ? "greedy"
                   : concat("temperature ", o.generate.sampling.temperature, ", top-p ",
                            o.generate.sampling.top_p, ", seed ", o.generate.sampling.seed)
                         .c_str());
  if (max_len > cfg.data().seq_len())
    std::fprintf(stderr,
                 "note: the model was trained on windows of %d tokens (data.seq_len); positions "
                 "past them were never seen and the text may degrade there\n",
                 cfg.data().seq_len());

  GenerateResult result;
  if (!o.speculative) {
    TextStream stream(*tokenizer, stdout);
    if (o.echo) stream.write(o.prompt);
    o.generate.on_token = [&](int32_t token) {
      stop.check();
      stream.push(token);
    };
    result = generate(decoder, prompt, o.generate);
    stream.finish();
    print_run("generated", result);
    return 0;
  }
  o.generate.on_token = [&](int32_t) { stop.check(); };
  {
    // Both loops once to warm up, then each timed kRepeats times, alternately; the medians.
    generate(decoder, prompt, o.generate);
    generate_speculative(decoder, prompt, o.generate);
    GenerateResult plain;
    std::vector<double> times[5];  // plain total, prompt; speculative total, prompt, drafting
    for (int i = 0; i < kRepeats; ++i) {
      plain = generate(decoder, prompt, o.generate);
      result = generate_speculative(decoder, prompt, o.generate);
      for (auto [t, v] : {std::pair{0, plain.total_seconds},
                          {1, plain.prefill_seconds},
                          {2, result.total_seconds},
                          {3, result.prefill_seconds},
                          {4, result.draft_seconds}})
        times[t].push_back(v);
    }
    plain.total_seconds = median(times[0]);
    plain.prefill_seconds = median(times[1]);
    result.total_seconds = median(times[2]);
    result.prefill_seconds = median(times[3]);
    result.draft_seconds = median(times[4]);
    print_run("plain", plain);
    print_run("speculative", result);
    print_acceptance(result);
    // Per pass, after the prompt: what the speed-up is made of (docs/generate.md).
    const auto rounds = static_cast<double>(result.main_forwards - 1);
    if (rounds > 0)
      std::fprintf(
          stderr, "per pass     plain %.1f us; speculative round: verify %.1f us + draft %.1f us\n",
          1e6 * (plain.total_seconds - plain.prefill_seconds) /
              static_cast<double>(plain.main_forwards - 1),
          1e6 * (result.total_seconds - result.prefill_seconds - result.draft_seconds) / rounds,
          1e6 * result.draft_seconds / rounds);
    std::fprintf(stderr, "speed-up     %.2fx over plain decoding in this run; %s\n",
                 plain.total_seconds / result.total_seconds,
                 result.tokens == plain.tokens
                     ? "the same tokens"
                     : (o.generate.sampling.temperature == 0
                            ? "TOKENS DIFFER (a bug: greedy speculation must reproduce plain)"
                            : "another sample of the same distribution"));
    if (o.generate.sampling.temperature == 0 && result.tokens != plain.tokens)
      throw Error("generate: greedy speculative decoding differs from plain decoding");
  }
  const std::string text = (o.echo ? o.prompt : std::string()) + tokenizer->decode(result.tokens);
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (text.empty() || text.back() != '\n') std::fputc('\n', stdout);
  return 0;
}

}  // namespace moetron
