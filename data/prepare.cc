#include "data/prepare.h"

#include <chrono>
#include <cstdio>

#include "core/check.h"
#include "data/corpus.h"
#include "data/shard_format.h"
#include "data/staged_dir.h"

namespace moetron::data {
namespace {

namespace fs = std::filesystem;
using detail::concat;
using Clock = std::chrono::steady_clock;

constexpr int kDefaultSentencePieceVocab = 4096;
constexpr const char* kModelFile = "tokenizer.model";

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Accumulates one split's tokens and writes a shard every `shard_tokens`.
class SplitWriter {
 public:
  SplitWriter(const fs::path& dir, Split split, const Tokenizer& tok, uint64_t shard_tokens,
              SplitEntry& entry)
      : dir_(dir), split_(split), tok_(tok), shard_tokens_(shard_tokens), entry_(entry) {}

  void add_document(std::span<const int32_t> tokens) {
    entry_.documents++;
    while (!tokens.empty()) {
      const size_t n = std::min<size_t>(tokens.size(), shard_tokens_ - buffer_.size());
      buffer_.insert(buffer_.end(), tokens.begin(), tokens.begin() + n);
      tokens = tokens.subspan(n);
      if (buffer_.size() == shard_tokens_) flush();
    }
  }

  void flush() {
    if (buffer_.empty()) return;
    char name[64];
    std::snprintf(name, sizeof name, "%s-%05zu.bin", split_name(split_).data(),
                  entry_.shards.size());
    const ShardHeader h = write_shard(dir_ / name, buffer_, tok_.vocab_size(), tok_.identity());
    entry_.shards.push_back({name, h.num_tokens, h.payload_checksum});
    entry_.tokens += h.num_tokens;
    buffer_.clear();
  }

 private:
  fs::path dir_;
  Split split_;
  const Tokenizer& tok_;
  uint64_t shard_tokens_;
  SplitEntry& entry_;
  std::vector<int32_t> buffer_;
};

void validate(const PrepareOptions& o) {
  if (o.inputs.empty()) throw Error("prepare: no --input given");
  if (o.output.empty()) throw Error("prepare: no --output directory given");
  if (o.tokenizer != "byte" && o.tokenizer != "sentencepiece")
    throw Error(
        concat("prepare: --tokenizer ", o.tokenizer, " is unknown; valid: byte, sentencepiece"));
  if (o.tokenizer == "byte" && o.vocab_size != 0)
    throw Error("prepare: --vocab-size applies to --tokenizer sentencepiece only (byte has 256)");
  if (o.tokenizer == "byte" && !o.sp_model.empty())
    throw Error("prepare: --sp-model applies to --tokenizer sentencepiece only");
  if (!o.sp_model.empty() && o.vocab_size != 0)
    throw Error(
        "prepare: give --sp-model (use an existing model) or --vocab-size (train one), not both");
  if (o.vocab_size < 0 || o.vocab_size > (1 << 24))
    throw Error(concat("prepare: --vocab-size ", o.vocab_size, " is out of range [1, 16777216]"));
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw Error(concat("prepare: --val-fraction ", o.val_fraction, " must be in [0, 1)"));
  if (o.shard_tokens < 1) throw Error("prepare: --shard-tokens must be >= 1");
  if (o.allow_invalid_utf8 && o.tokenizer != "sentencepiece")
    throw Error("prepare: --allow-invalid-utf8 applies to --tokenizer sentencepiece only");
}

// The output must not swallow an input, and an input must not lie inside what gets replaced.
void check_output_location(const PrepareOptions& o) {
  for (const fs::path& in : o.inputs) {
    if (is_within(o.output, in))
      throw Error(concat("prepare: --output ", o.output, " lies inside --input ", in,
                         ": the dataset would be read as its own input; choose an output "
                         "outside the inputs"));
    if (is_within(in, o.output))
      throw Error(concat("prepare: --input ", in, " lies inside --output ", o.output,
                         ", which prepare replaces as a whole; move the input or choose "
                         "another output"));
  }
  if (!o.sp_model.empty() && is_within(o.sp_model, o.output))
    throw Error(concat("prepare: --sp-model ", o.sp_model, " lies inside --output ", o.output,
                       ", which prepare replaces as a whole; copy the model elsewhere first"));
  check_replaceable(o.output, "prepare", "--output", o.overwrite);
}

}  // namespace

PrepareResult prepare_dataset(const PrepareOptions& o) {
  validate(o);
  const auto start = Clock::now();
  PrepareResult result;
  const InputFiles input = list_input_files(o.inputs, o.fortunes);
  result.files = input.files.size();
  result.skipped_files = input.skipped;
  if (input.files.empty())
    throw Error(concat("prepare: no text files found in the inputs (", input.skipped,
                       " skipped as binary, .dat/.u8, hidden or duplicate)"));

  check_output_location(o);
  StagedDirectory staging(o.output, "prepare");
  const fs::path& out = staging.path();
  // Before any tokenizer sees the text: SentencePiece would replace invalid bytes silently.
  if (o.tokenizer == "sentencepiece")
    result.invalid_utf8_files = check_utf8(input.files, !o.allow_invalid_utf8, o.stop);

  Manifest& m = result.manifest;
  const auto tok_start = Clock::now();
  std::unique_ptr<Tokenizer> tok;
  if (o.tokenizer == "byte") {
    tok = std::make_unique<ByteTokenizer>();
  } else if (!o.sp_model.empty()) {
    auto sp = std::make_unique<SentencePieceTokenizer>(o.sp_model);
    // A copy inside the directory keeps the dataset self-describing.
    write_file_atomic(out / kModelFile, sp->model_bytes());
    tok = std::move(sp);
    m.tokenizer_model = kModelFile;
  } else {
    // Trained on the train split only, so val text stays unseen by the tokenizer too.
    DocumentReader reader(input.files, o.fortunes);
    TextSource train_docs = [&](std::string& text) {
      for (std::string_view doc; reader.next(doc);)
        if (o.stop.check(); !is_val_document(doc, o.val_fraction)) {
          text.assign(doc);
          return true;
        }
      return false;
    };
    tok = std::make_unique<SentencePieceTokenizer>(SentencePieceTokenizer::train(
        train_docs, o.vocab_size ? o.vocab_size : kDefaultSentencePieceVocab, out / kModelFile));
    m.tokenizer_model = kModelFile;
  }
  result.tokenizer_seconds = seconds_since(tok_start);

  m.tokenizer_kind = std::string(tok->kind());
  m.vocab_size = tok->vocab_size();
  m.tokenizer_identity = tok->identity();
  m.token_width = token_width_for_vocab(m.vocab_size);
  for (const auto& in : o.inputs) m.inputs.push_back(in.string());
  m.fortunes = o.fortunes;
  m.val_fraction = o.val_fraction;

  SplitWriter train(out, Split::train, *tok, o.shard_tokens, m.train);
  SplitWriter val(out, Split::val, *tok, o.shard_tokens, m.val);
  DocumentReader reader(input.files, o.fortunes);
  std::string doc;
  for (std::string_view view; reader.next(view);) {
    o.stop.check();
    const bool is_val = is_val_document(view, o.val_fraction);
    doc.assign(view);
    doc += '\n';  // documents are newline-separated in the token stream
    (is_val ? val : train).add_document(tok->encode(doc));
  }
  train.flush();
  val.flush();
  if (m.train.documents + m.val.documents == 0)
    throw Error(concat("prepare: the ", input.files.size(),
                       " input files hold no documents (all empty or whitespace)"));
  if (m.train.documents == 0)
    throw Error(concat("prepare: every one of the ", m.val.documents,
                       " documents went to val; lower --val-fraction"));
  write_manifest(out, m);
  staging.publish();
  result.total_seconds = seconds_since(start);
  return result;
}

}  // namespace moetron::data
