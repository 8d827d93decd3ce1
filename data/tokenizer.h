// Tokenizers: text <-> token ids. Every tokenizer has an identity string that shards and the
// manifest record, so a dataset prepared with one tokenizer is never read as another.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moetron::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Throws Error on an id outside [0, vocab_size()).
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual std::string_view kind() const = 0;  // "byte" or "sentencepiece"
  // "byte", or "sentencepiece:<FNV-1a 64 of the .model bytes, 16 hex digits>".
  virtual const std::string& identity() const = 0;
};

// Ids are the UTF-8 bytes themselves: vocab 256, lossless for any input.
class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int vocab_size() const override { return 256; }
  std::string_view kind() const override { return "byte"; }
  const std::string& identity() const override { return identity_; }

 private:
  std::string identity_ = "byte";
};

// The largest SentencePiece model file read (a 256k-piece model is about 5 MB).
inline constexpr uint64_t kMaxModelBytes = uint64_t{1} << 28;

// Yields the next training text into `text`; returns false at the end.
using TextSource = std::function<bool(std::string& text)>;

// A SentencePiece model, run through the shim module (see spm_shim.h for why).
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& model_file);  // throws Error
  // `origin` names the model in error messages.
  SentencePieceTokenizer(std::string model_bytes, std::string origin);
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;

  // Trains a byte-fallback BPE model of exactly `vocab_size` pieces on `texts` and writes it
  // atomically to `model_file`. Deterministic: the same texts give a byte-identical model.
  static SentencePieceTokenizer train(const TextSource& texts, int vocab_size,
                                      const std::filesystem::path& model_file);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int vocab_size() const override { return vocab_size_; }
  std::string_view kind() const override { return "sentencepiece"; }
  const std::string& identity() const override { return identity_; }
  const std::string& model_bytes() const { return model_bytes_; }

 private:
  struct Processor;
  std::unique_ptr<Processor> processor_;
  std::string model_bytes_;
  std::string origin_;
  std::string identity_;
  int vocab_size_ = 0;
};

// The identity a SentencePiece model with these bytes has.
std::string sentencepiece_identity(std::string_view model_bytes);

}  // namespace moetron::data
