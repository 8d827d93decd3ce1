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

// Training texts are cut at newlines into chunks of at most this many bytes: SentencePiece
// drops sentences longer than max_sentence_length, and "\n" is an atomic piece, so cutting
// there changes no merge statistics.
constexpr size_t kTrainChunkBytes = 16384;

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

// Feeds the trainer newline-aligned chunks of the texts a TextSource yields.
struct ChunkFeeder {
  explicit ChunkFeeder(const TextSource& t) : texts(t) {}
  const TextSource& texts;
  std::string text;
  size_t pos = 0;
  std::string chunk;

  static int next(void* ctx, const char** data, size_t* size) {
    auto& self = *static_cast<ChunkFeeder*>(ctx);
    while (self.pos >= self.text.size()) {
      if (!self.texts(self.text)) return 0;
      self.pos = 0;
    }
    const std::string_view rest = std::string_view(self.text).substr(self.pos);
    size_t n = rest.size();
    if (n > kTrainChunkBytes) {
      const size_t nl = rest.rfind('\n', kTrainChunkBytes - 1);
      n = nl != std::string_view::npos ? nl + 1 : kTrainChunkBytes;
      // No newline: back off to a UTF-8 character boundary.
      while (nl == std::string_view::npos && n > 1 && (rest[n] & 0xc0) == 0x80) n--;
    }
    self.chunk.assign(rest.substr(0, n));
    self.pos += n;
    *data = self.chunk.data();
    *size = self.chunk.size();
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
    : SentencePieceTokenizer(read_file(model_file), model_file.string()) {}

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

  ChunkFeeder feeder(texts);
  std::string model, error;
  if (spm_api().train(keys.data(), values.data(), options.size(), /*seed=*/20240917,
                      &ChunkFeeder::next, &feeder, string_sink(model), string_sink(error)) != 0)
    throw Error(concat("SentencePiece training (vocab size ", vocab_size, ") failed: ", error));
  write_file_atomic(model_file, model);
  return SentencePieceTokenizer(std::move(model), model_file.string());
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  std::string error;
  if (spm_api().encode(processor_->handle, text.data(), text.size(), append_ids, &ids,
                       string_sink(error)) != 0)
    throw Error(concat(origin_, ": encode failed: ", error));
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
