// `moetron prepare`: command-line front end of prepare_dataset().
#include <charconv>
#include <cstdio>
#include <string_view>

#include "core/check.h"
#include "data/prepare.h"
#include "trainer/cli/commands.h"

namespace moetron {
namespace {

using detail::concat;

constexpr const char* kUsage =
    "usage: moetron prepare --input PATH [--input PATH ...] --output DIR [options]\n"
    "  --input PATH        a text file, or a directory read recursively in sorted order\n"
    "                      (skips hidden, binary and .dat/.u8 files); repeatable\n"
    "  --output DIR        dataset directory: shards + manifest.json (+ tokenizer.model)\n"
    "  --tokenizer KIND    byte (default) or sentencepiece\n"
    "  --vocab-size N      sentencepiece: train a BPE model of N pieces (default 4096)\n"
    "  --sp-model FILE     sentencepiece: use this .model instead of training one\n"
    "  --val-fraction F    share of documents held out for validation, in [0, 1) (default 0.05)\n"
    "  --shard-tokens N    tokens per shard file (default 16777216)\n"
    "  --fortunes          documents are fortune(6) entries separated by lines of \"%\";\n"
    "                      directories are read top level only\n"
    "  --allow-invalid-utf8  sentencepiece: replace bytes that are not UTF-8 by U+FFFD\n"
    "                      (default: stop with the file and byte offset)\n"
    "  --overwrite         replace an earlier dataset in DIR: only what moetron wrote there\n"
    "                      (its .moetron-files lists it); anything else in DIR is refused\n"
    "  The dataset is built beside DIR and replaces it only when complete (docs/data.md);\n"
    "  SIGINT/SIGTERM stop it (status 130/143), leaving DIR as it was.\n";

}  // namespace

int run_prepare(std::span<const std::string> args, const StopToken& stop) {
  data::PrepareOptions o;
  o.stop = stop;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (flag == "--fortunes" || flag == "--allow-invalid-utf8" || flag == "--overwrite") {
      (flag == "--fortunes"    ? o.fortunes
       : flag == "--overwrite" ? o.overwrite
                               : o.allow_invalid_utf8) = true;
      continue;
    }
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw Error(concat("prepare: ", flag, " needs a value\n", kUsage));
      return args[++i];
    };
    if (flag == "--input")
      o.inputs.emplace_back(value());
    else if (flag == "--output")
      o.output = value();
    else if (flag == "--tokenizer")
      o.tokenizer = value();
    else if (flag == "--vocab-size")
      o.vocab_size = parse_number<int>("prepare", flag, value());
    else if (flag == "--sp-model")
      o.sp_model = value();
    else if (flag == "--val-fraction")
      o.val_fraction = parse_number<double>("prepare", flag, value());
    else if (flag == "--shard-tokens")
      o.shard_tokens = parse_number<uint64_t>("prepare", flag, value());
    else
      throw Error(concat("prepare: unknown flag \"", flag, "\"; valid flags:\n", kUsage));
  }
  if (o.tokenizer == "sentencepiece" && o.vocab_size == 0 && o.sp_model.empty())
    std::fputs("prepare: no --vocab-size given, training a 4096-piece SentencePiece model\n",
               stderr);

  const data::PrepareResult r = data::prepare_dataset(o);
  const data::Manifest& m = r.manifest;
  std::printf("prepared %s\n", o.output.c_str());
  std::printf("  inputs     %llu files (%llu skipped)\n", static_cast<unsigned long long>(r.files),
              static_cast<unsigned long long>(r.skipped_files));
  std::printf("  tokenizer  %s (vocab %d, %s tokens, %.1fs)\n", m.tokenizer_identity.c_str(),
              m.vocab_size, m.token_width == 2 ? "u16" : "u32", r.tokenizer_seconds);
  for (data::Split s : {data::Split::train, data::Split::val}) {
    const data::SplitEntry& e = m.split(s);
    std::printf("  %-5s      %llu documents, %llu tokens, %zu shards\n",
                std::string(data::split_name(s)).c_str(),
                static_cast<unsigned long long>(e.documents),
                static_cast<unsigned long long>(e.tokens), e.shards.size());
  }
  if (r.invalid_utf8_files > 0)
    std::printf("  utf-8      %llu files held invalid UTF-8, replaced by U+FFFD\n",
                static_cast<unsigned long long>(r.invalid_utf8_files));
  std::printf("  took       %.1fs\n", r.total_seconds);
  return 0;
}

}  // namespace moetron
