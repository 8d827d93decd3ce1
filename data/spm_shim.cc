// The SentencePiece shim module: wraps the C++ API behind spm_shim.h's C ABI.
#include "data/spm_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void report(moetron_spm_sink sink, const std::string& message) {
  sink.fn(sink.ctx, message.data(), message.size());
}

class Sentences final : public sentencepiece::SentenceIterator {
 public:
  Sentences(moetron_spm_next_fn next, void* ctx) : next_(next), ctx_(ctx) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    const char* data = nullptr;
    size_t size = 0;
    done_ = next_(ctx_, &data, &size) == 0;
    if (!done_) value_.assign(data, size);
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  moetron_spm_next_fn next_;
  void* ctx_;
  bool done_ = false;
  std::string value_;
};

int train(const char* const* keys, const char* const* values, size_t n_options, uint32_t seed,
          moetron_spm_next_fn next, void* next_ctx, moetron_spm_sink model,
          moetron_spm_sink error) {
  try {
    std::unordered_map<std::string, std::string> options;
    for (size_t i = 0; i < n_options; ++i) options[keys[i]] = values[i];
    sentencepiece::SetRandomGeneratorSeed(seed);
    Sentences sentences(next, next_ctx);
    std::string serialized;
    const auto status =
        sentencepiece::SentencePieceTrainer::Train(options, &sentences, &serialized);
    if (!status.ok()) {
      report(error, status.ToString());
      return 1;
    }
    model.fn(model.ctx, serialized.data(), serialized.size());
    return 0;
  } catch (const std::exception& e) {
    report(error, e.what());
    return 1;
  }
}

void* load(const char* model, size_t size, moetron_spm_sink error) {
  try {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->LoadFromSerializedProto(std::string_view(model, size));
    if (!status.ok()) {
      report(error, status.ToString());
      return nullptr;
    }
    return sp.release();
  } catch (const std::exception& e) {
    report(error, e.what());
    return nullptr;
  }
}

void destroy(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

int vocab_size(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

int encode(const void* processor, const char* text, size_t size, moetron_spm_ids_fn out,
           void* out_ctx, moetron_spm_sink error) {
  try {
    std::vector<int> ids;
    const auto status =
        static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(
            std::string_view(text, size), &ids);
    if (!status.ok()) {
      report(error, status.ToString());
      return 1;
    }
    static_assert(sizeof(int) == sizeof(int32_t));
    out(out_ctx, reinterpret_cast<const int32_t*>(ids.data()), ids.size());
    return 0;
  } catch (const std::exception& e) {
    report(error, e.what());
    return 1;
  }
}

int decode(const void* processor, const int32_t* ids, size_t count, moetron_spm_sink out,
           moetron_spm_sink error) {
  try {
    std::string text;
    const auto status =
        static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Decode(
            std::vector<int>(ids, ids + count), &text);
    if (!status.ok()) {
      report(error, status.ToString());
      return 1;
    }
    out.fn(out.ctx, text.data(), text.size());
    return 0;
  } catch (const std::exception& e) {
    report(error, e.what());
    return 1;
  }
}

constexpr moetron_spm_api kApi = {
    MOETRON_SPM_ABI_VERSION, train, load, destroy, vocab_size, encode, decode};

}  // namespace

extern "C" __attribute__((visibility("default"))) const moetron_spm_api* moetron_spm_get_api() {
  return &kApi;
}
