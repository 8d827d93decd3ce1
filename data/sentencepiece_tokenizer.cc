#include <array>
#include <utility>

#include "core/check.h"
#include "data/file_io.h"
#include "data/hash.h"
#include "data/spm_module.h"
#include "data/tokenizer.h"

namespace moetron::data {
namespace {

using detail::concat;

// Training sentences are the lines of the texts, cut into pieces of at most this many bytes:
// SentencePiece drops sentences longer than max_sentence_length. "\n" is an atomic piece, so
// cutting after it changes no merge statistics.
constexpr size_t kTrainChunkBytes = 16384;
// SentencePiece keeps every training sentence in memory (about 11 bytes per byte of text, measured
// on 17 MB): it trains on the first this many bytes of the texts, and at most input_sentence_size
// sentences of them.
constexpr size_t kMaxTrainBytes = size_t{256} << 20;
// SentencePiece's encoder takes about 115 bytes of memory per byte of text (measured: 2 GB for a
// 17 MB line), so long texts are encoded in pieces of at most this many bytes.
constexpr size_t kEncodeChunkBytes = size_t{256} << 10;

void append_string(void* ctx, const char* data, size_t size) {
  static_cast<std::string*>(ctx)->append(data, size);
}

void append_ids(void* ctx, const int32_t* ids, size_t count) {
  auto* out = static_cast<std::vector<int32_t>*>(ctx);
  out->insert(out->end(), ids, ids + count);
}

moetron_spm_sink string_sink(std::string& s) {
  return {append_string, &s};
}

// Where the first piece of `rest` of at most `limit` bytes ends: after its last newline, else
// (`at_space`) before its last space that follows a non-space, else at the last UTF-8 character
// boundary. In the models moetron trains a newline is an atomic piece and no piece spans the
// start of a word, so the first two cuts leave the encoding as it would be uncut.
size_t piece_end(std::string_view rest, size_t limit, bool at_space) {
  if (rest.size() <= limit) return rest.size();
  if (const size_t nl = rest.rfind('\n', limit - 1); nl != std::string_view::npos) return nl + 1;
  if (at_space)  // a space that starts a run: runs of spaces may be one piece
    for (size_t sp = rest.rfind(' ', limit - 1); sp != std::string_view::npos && sp > 0;
         sp = rest.rfind(' ', sp - 1))
      if (rest[sp - 1] != ' ') return sp;
  size_t n = limit;
  while (n > 1 && (static_cast<unsigned char>(rest[n]) & 0xc0) == 0x80) n--;
  return n;
}

// Feeds the trainer the lines of the texts a TextSource yields, up to kMaxTrainBytes.
struct LineFeeder {
  explicit LineFeeder(const TextSource& t) : texts(t) {}
  const TextSource& texts;
  std::string text;
  size_t pos = 0, fed = 0;
  std::string line;

  static int next(void* ctx, const char** data, size_t* size) {
    auto& self = *static_cast<LineFeeder*>(ctx);
    while (self.pos >= self.text.size()) {
      if (self.fed >= kMaxTrainBytes || !self.texts(self.text)) return 0;
      self.pos = 0;
    }
    const std::string_view rest = std::string_view(self.text).substr(self.pos);
    const size_t eol = rest.find('\n');
    const std::string_view upto = eol == std::string_view::npos ? rest : rest.substr(0, eol + 1);
    const size_t n = piece_end(upto, kTrainChunkBytes, false);
    self.line.assign(rest.substr(0, n));
    self.pos += n;
    self.fed += n;
    *data = self.line.data();
    *size = self.line.size();
    return 1;
  }
};

}  // namespace

struct SentencePieceTokenizer::Processor {
  void* handle = nullptr;
  ~Processor() {
    if (handle) spm_api().destroy(handle);
  }
};

std::string sentencepiece_identity(std::string_view model_bytes) {
  return "sentencepiece:" + hex64(fnv1a64(model_bytes));
}

SentencePieceTokenizer::SentencePieceTokenizer(const std::filesystem::path& model_file)
    : SentencePieceTokenizer(read_file(model_file, kMaxModelBytes, "SentencePiece model"),
                             model_file.string()) {}

SentencePieceTokenizer::SentencePieceTokenizer(std::string model_bytes, std::string origin)
    : processor_(std::make_unique<Processor>()),
      model_bytes_(std::move(model_bytes)),
      origin_(std::move(origin)),
      identity_(sentencepiece_identity(model_bytes_)) {
  std::string error;
  processor_->handle = spm_api().load(model_bytes_.data(), model_bytes_.size(), string_sink(error));
  if (!processor_->handle)
    throw Error(concat(origin_, ": not a valid SentencePiece model: ", error));
  vocab_size_ = spm_api().vocab_size(processor_->handle);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept =
    default;

SentencePieceTokenizer SentencePieceTokenizer::train(const TextSource& texts, int vocab_size,
                                                     const std::filesystem::path& model_file) {
  const std::string vocab = std::to_string(vocab_size);
  // Identity normalization, no dummy prefix and no whitespace folding make decode(encode(s)) == s
  // for valid UTF-8; byte_fallback covers characters unseen in training. "\n" is one piece
  // because documents are newline-separated. One thread and a fixed seed make it deterministic.
  const std::array<std::pair<const char*, const char*>, 16> options = {{
      {"model_type", "bpe"},
      {"vocab_size", vocab.c_str()},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"user_defined_symbols", "\n"},
      {"max_sentence_length", "65536"},
      {"input_sentence_size", "1000000"},
      {"shuffle_input_sentence", "true"},
      {"num_threads", "1"},
      {"hard_vocab_limit", "true"},
      {"minloglevel", "1"},
  }};
  std::array<const char*, options.size()> keys, values;
  for (size_t i = 0; i < options.size(); ++i)
    keys[i] = options[i].first, values[i] = options[i].second;

  LineFeeder feeder(texts);
  std::string model, error;
  if (spm_api().train(keys.data(), values.data(), options.size(), /*seed=*/20240917,
                      &LineFeeder::next, &feeder, string_sink(model), string_sink(error)) != 0)
    throw Error(concat("SentencePiece training (vocab size ", vocab_size, ") failed: ", error));
  write_file_atomic(model_file, model);
  return SentencePieceTokenizer(std::move(model), model_file.string());
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  std::string error;
  while (!text.empty()) {
    const size_t n = piece_end(text, kEncodeChunkBytes, true);
    if (spm_api().encode(processor_->handle, text.data(), n, append_ids, &ids,
                         string_sink(error)) != 0)
      throw Error(concat(origin_, ": encode failed: ", error));
    text.remove_prefix(n);
  }
  return ids;
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab_size_)
      throw Error(concat(origin_, ": id ", ids[i], " at position ", i, " is outside [0, ",
                         vocab_size_, ")"));
  std::string text, error;
  if (spm_api().decode(processor_->handle, ids.data(), ids.size(), string_sink(text),
                       string_sink(error)) != 0)
    throw Error(concat(origin_, ": decode failed: ", error));
  return text;
}

}  // namespace moetron::data
