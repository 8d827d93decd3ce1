// `moetron export CKPT --out DIR [options]`: command-line front end of export_checkpoint().
#include <charconv>
#include <chrono>
#include <cstdio>
#include <string_view>

#include "checkpoint/export.h"
#include "core/check.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

using detail::concat;

constexpr const char* kUsage =
    "usage: moetron export CKPT --out DIR [options]\n"
    "  Writes the checkpoint CKPT (a file, or a run or checkpoint directory: its latest) as a\n"
    "  Hugging Face model directory: deepseek_v3 for an MLA model, glm4_moe (GLM-4.5) for an\n"
    "  attention model; config.json, generation_config.json, *.safetensors with\n"
    "  model.safetensors.index.json, and the tokenizer (docs/export.md).\n"
    "  --out DIR           the model directory; must not exist or be empty\n"
    "  --dtype bf16|fp32   tensor type (default bf16, rounded to nearest even; the router stays\n"
    "                      fp32)\n"
    "  --shard-size BYTES  tensor bytes per .safetensors file at most (default 5000000000;\n"
    "                      suffixes KB, MB, GB = 10^3.., KiB, MiB, GiB = 2^10..)\n"
    "  --dataset DIR       the prepared dataset whose tokenizer to export (default: the\n"
    "                      checkpoint config's data.dataset_dir)\n"
    "  --overwrite         replace an earlier export in DIR: only what moetron wrote there\n"
    "                      (its .moetron-files lists it); anything else in DIR is refused\n"
    "  SIGINT/SIGTERM stop it (status 130/143), leaving DIR as it was.\n";

// "5000000000", "5GB", "512MiB".
uint64_t parse_size(const std::string& text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, value);
  const std::string_view suffix(p, static_cast<size_t>(end - p));
  static constexpr std::pair<std::string_view, uint64_t> kUnits[] = {{"", 1},
                                                                     {"B", 1},
                                                                     {"KB", 1000},
                                                                     {"MB", 1000 * 1000},
                                                                     {"GB", 1000000000},
                                                                     {"KiB", 1ull << 10},
                                                                     {"MiB", 1ull << 20},
                                                                     {"GiB", 1ull << 30}};
  if (ec == std::errc() && p != text.data())
    for (const auto& [unit, scale] : kUnits)
      if (suffix == unit && value > 0 && value <= UINT64_MAX / scale) return value * scale;
  throw Error(
      concat("export: --shard-size expects a positive number of bytes (e.g. 5000000000, "
             "5GB, 512MiB), got \"",
             text, "\"\n", kUsage));
}

}  // namespace

int run_export(std::span<const std::string> args, const StopToken& stop) {
  checkpoint::ExportOptions o;
  o.stop = stop;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (flag == "--overwrite") {
      o.overwrite = true;
      continue;
    }
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw Error(concat("export: ", flag, " needs a value\n", kUsage));
      return args[++i];
    };
    if (flag == "--out") {
      o.out = value();
    } else if (flag == "--dtype") {
      const std::string& d = value();
      if (d != "bf16" && d != "fp32")
        throw Error(concat("export: --dtype is bf16 or fp32, not \"", d, "\""));
      o.dtype = d == "bf16" ? checkpoint::StDtype::bf16 : checkpoint::StDtype::f32;
    } else if (flag == "--shard-size") {
      o.shard_size = parse_size(value());
    } else if (flag == "--dataset") {
      o.dataset = value();
    } else if (flag.starts_with("-")) {
      throw Error(concat("export: unknown flag \"", flag, "\"; valid flags:\n", kUsage));
    } else if (o.checkpoint.empty()) {
      o.checkpoint = flag;
    } else {
      throw Error(concat("export: unexpected argument \"", flag, "\" (the checkpoint is ",
                         o.checkpoint, ")\n", kUsage));
    }
  }
  if (o.checkpoint.empty()) throw Error(concat("export: no checkpoint given\n", kUsage));
  if (o.out.empty()) throw Error(concat("export: no output directory (--out DIR)\n", kUsage));
  o.checkpoint = resolve_checkpoint(o.checkpoint.string());  // a run or checkpoint dir: its latest

  const auto start = std::chrono::steady_clock::now();
  const checkpoint::ExportSummary s = checkpoint::export_checkpoint(
      o, [](const std::string& line) { std::printf("  %s\n", line.c_str()); });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("exported %s (step %lld) -> %s\n", o.checkpoint.c_str(),
              static_cast<long long>(s.step), o.out.c_str());
  std::printf("  %s, %s, %zu tensors in %zu shards, %.1f MB, %.1fs\n", s.model_type.c_str(),
              o.dtype == checkpoint::StDtype::bf16 ? "bf16" : "fp32", s.tensors, s.shards,
              static_cast<double>(s.bytes) / 1e6, seconds);
  std::printf("  tokenizer  %s\n", s.tokenizer.c_str());
  for (const std::string& note : s.notes) std::printf("  note: %s\n", note.c_str());
  return 0;
}

}  // namespace moetron
