#include "checkpoint/export.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_layout.h"
#include "checkpoint/reader.h"
#include "core/check.h"
#include "data/file_io.h"
#include "data/json.h"
#include "data/manifest.h"
#include "data/staged_dir.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;
namespace fs = std::filesystem;

constexpr uint64_t kMaxChunkBytes = uint64_t{64} << 20;
constexpr const char* kIndexFile = "model.safetensors.index.json";

// OUT may be replaced only by the rule of data/staged_dir.h, and never when it holds what the
// export reads: the checkpoint, or the dataset whose tokenizer it copies.
void check_output(const ExportOptions& o, const fs::path& dataset) {
  if (o.out.empty()) throw Error("export: no output directory (--out DIR)");
  if (data::is_within(o.checkpoint, o.out))
    throw Error(concat("export: the checkpoint ", o.checkpoint, " lies inside --out ", o.out,
                       ", which the export replaces as a whole; choose another output"));
  if (data::is_within(dataset, o.out) || data::is_within(o.out, dataset))
    throw Error(concat("export: the dataset ", dataset, " (its tokenizer is exported) and --out ",
                       o.out,
                       " overlap; the export replaces --out as a whole: choose another "
                       "output"));
  data::check_replaceable(o.out, "export", "--out", o.overwrite);
}

struct Shard {
  std::vector<size_t> tensors;  // indices into the export's tensor list
  uint64_t bytes = 0;
};

// Greedy in export order: a shard takes tensors while they fit in shard_size; a tensor larger
// than shard_size gets a shard of its own.
std::vector<Shard> plan_shards(const std::vector<ExportTensor>& tensors, uint64_t shard_size) {
  std::vector<Shard> shards;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t b = StTensor{tensors[i].name, tensors[i].dtype, tensors[i].shape}.bytes();
    if (shards.empty() || (!shards.back().tensors.empty() && shards.back().bytes + b > shard_size))
      shards.emplace_back();
    shards.back().tensors.push_back(i);
    shards.back().bytes += b;
  }
  return shards;
}

// Streams one export tensor from the checkpoint into the writer, in blocks of whole rows (whole
// heads when the rows are permuted), checking the source's checksum on the way.
void copy_tensor(const CheckpointReader& reader, const ExportTensor& t, uint64_t chunk_bytes,
                 SafetensorsWriter& writer, std::vector<float>& out, const StopToken& stop) {
  const uint64_t cols = t.shape.size() == 1 ? t.shape[0] : t.shape[1];
  const uint64_t R = t.rope_rows;
  std::vector<std::string> sources{t.source};
  sources.insert(sources.end(), t.more_sources.begin(), t.more_sources.end());
  for (const std::string& source : sources) {
    const std::string path = "/params/" + source;
    const bool ok = reader.read_rows(
        path, R > 0 ? R : 1, chunk_bytes, [&](uint64_t, std::span<const float> block) {
          stop.check();
          if (R == 0) {
            writer.append(block);
            return;
          }
          // Within each head: rows (2j, 2j+1) become rows (j, j + R/2).
          out.resize(block.size());
          const uint64_t n = block.size() / cols;
          for (uint64_t h = 0; h < n; h += R)
            for (uint64_t j = 0; j < R / 2; ++j)
              for (uint64_t k = 0; k < 2; ++k)
                std::copy_n(block.begin() + static_cast<std::ptrdiff_t>((h + 2 * j + k) * cols),
                            cols,
                            out.begin() + static_cast<std::ptrdiff_t>((h + j + k * R / 2) * cols));
          writer.append(out);
        });
    if (!ok)
      throw Error(concat(reader.file().path(), ": ", path,
                         " does not match its checksum (the checkpoint is corrupt)"));
  }
}

// A layout without a router bias (qwen3_5_moe_text) leaves the checkpoint's biases out: they must
// be zero, or the export would route otherwise than the model (a bias trained before
// bias_update_speed was set to 0 is not).
void check_dropped_biases(const CheckpointReader& reader, const std::vector<ExportTensor>& tensors,
                          const HfLayout& layout, const ExportOptions& o) {
  std::set<std::string> exported;
  for (const ExportTensor& t : tensors) {
    exported.insert(t.source);
    exported.insert(t.more_sources.begin(), t.more_sources.end());
  }
  for (const ModelTensor& t : model_tensors(reader.config().model())) {
    if (!t.name.ends_with(".e_score_correction_bias") || exported.contains(t.name)) continue;
    const std::string path = "/params/" + t.name;
    float worst = 0.0f;
    const bool ok =
        reader.read_rows(path, 1, kMaxChunkBytes, [&](uint64_t, std::span<const float> block) {
          for (float v : block) worst = std::max(worst, std::abs(v));
        });
    if (!ok)
      throw Error(concat(reader.file().path(), ": ", path,
                         " does not match its checksum (the checkpoint is corrupt)"));
    if (worst != 0.0f)
      throw Error(concat("export: ", o.checkpoint, " cannot be written as ", layout.model_type(),
                         ": ", t.name, " is not zero (largest |bias| ", worst, "), and ",
                         layout.model_type(),
                         " has no router bias: the model chooses experts with it (trained with "
                         "bias_update_speed > 0?)"));
  }
}

// UTF-8 of one code point below U+0800.
std::string utf8(uint32_t cp) {
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
}

// Writes the tokenizer of the dataset the checkpoint was trained on; returns what it wrote.
// The dataset whose tokenizer is exported.
fs::path tokenizer_dataset(const ExportOptions& o, const config::RunConfig& cfg) {
  return o.dataset.empty() ? fs::path(cfg.data().dataset_dir()) : o.dataset;
}

std::string write_tokenizer(const fs::path& dataset, const config::RunConfig& cfg,
                            const fs::path& dir) {
  data::Manifest m;
  try {
    m = data::read_manifest(dataset);
  } catch (const Error& e) {
    throw Error(concat("export: the tokenizer comes from the checkpoint's dataset: ", e.what(),
                       "; pass --dataset DIR to name it"));
  }
  if (m.vocab_size > cfg.model().vocab_size())
    throw Error(concat("export: the tokenizer of ", dataset, " has ", m.vocab_size,
                       " ids, more than the model's vocab_size ", cfg.model().vocab_size(),
                       ": not the dataset this checkpoint was trained on"));
  if (m.tokenizer_kind == "byte") {
    data::write_file_atomic(dir / "tokenizer.json", byte_tokenizer_json());
    data::write_file_atomic(
        dir / "tokenizer_config.json",
        concat("{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
               "  \"model_max_length\": ",
               cfg.data().seq_len(), ",\n  \"clean_up_tokenization_spaces\": false\n}\n"));
    return "byte-level tokenizer.json (ids 0..255 = bytes)";
  }
  if (m.tokenizer_kind == "sentencepiece") {
    const fs::path model = dataset / m.tokenizer_model;
    const std::string bytes = data::read_file(model, data::kMaxModelBytes, "SentencePiece model");
    if (data::sentencepiece_identity(bytes) != m.tokenizer_identity)
      throw Error(concat("export: ", model, " is not the SentencePiece model ", dataset,
                         " was prepared with (its manifest says ", m.tokenizer_identity, ")"));
    data::write_file_atomic(dir / "tokenizer.model", bytes);
    return concat("tokenizer.model (SentencePiece, ", m.tokenizer_identity, ")");
  }
  throw Error(
      concat("export: ", dataset, " has a tokenizer of unknown kind \"", m.tokenizer_kind, "\""));
}

}  // namespace

std::string shard_name(size_t index, size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

std::string byte_tokenizer_json() {
  // GPT-2's byte-to-unicode alphabet: printable Latin-1 bytes stand for themselves, the others
  // for U+0100 upwards in byte order.
  std::string vocab;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    vocab += concat(b ? ",\n      " : "", data::json_quote(utf8(printable ? b : next++)), ": ", b);
  }
  const char* byte_level =
      "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
      "\"use_regex\": false}";
  return concat(
      "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n",
      "  \"added_tokens\": [],\n  \"normalizer\": null,\n  \"pre_tokenizer\": ", byte_level,
      ",\n  \"post_processor\": null,\n  \"decoder\": ", byte_level,
      ",\n  \"model\": {\n    \"type\": \"BPE\", \"dropout\": null, \"unk_token\": null,\n"
      "    \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null,\n"
      "    \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
      "    \"vocab\": {\n      ",
      vocab, "\n    },\n    \"merges\": []\n  }\n}\n");
}

ExportSummary export_checkpoint(const ExportOptions& o,
                                const std::function<void(const std::string&)>& progress) {
  if (o.shard_size == 0) throw Error("export: --shard-size must be at least 1 byte");
  if (o.out.empty()) throw Error("export: no output directory (--out DIR)");
  const CheckpointReader reader = [&] {
    try {
      return CheckpointReader(o.checkpoint);
    } catch (const Error& e) {
      throw Error(concat("export: ", e.what()));
    }
  }();
  const config::RunConfig& cfg = reader.config();
  const fs::path dataset = tokenizer_dataset(o, cfg);
  check_output(o, dataset);
  const config::ModelConfig& model = cfg.model();
  std::unique_ptr<HfLayout> layout;
  try {
    layout = hf_layout_for(model);
    layout->check(model);
  } catch (const Error& e) {
    throw Error(concat("export: ", o.checkpoint, " cannot be written as ",
                       layout ? layout->model_type() : "a Hugging Face model", ": ", e.what()));
  }

  ExportSummary summary;
  summary.step = reader.metadata().state.step;
  summary.model_type = layout->model_type();
  summary.notes = layout->notes(model);
  const std::vector<ExportTensor> tensors = export_tensors(model, *layout, o.dtype);
  check_dropped_biases(reader, tensors, *layout, o);
  const std::vector<Shard> shards = plan_shards(tensors, o.shard_size);
  summary.tensors = tensors.size();
  summary.shards = shards.size();

  const fs::path out = data::clean_path(o.out);
  fs::create_directories(out.parent_path());
  data::StagedDirectory staged(out, "export");
  const fs::path& staging = staged.path();

  summary.tokenizer = write_tokenizer(dataset, cfg, staging);
  const uint64_t chunk_bytes = std::min(o.shard_size, kMaxChunkBytes);
  std::vector<float> permuted;
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shard_name(s, shards.size());
    std::vector<StTensor> header;
    for (size_t i : shards[s].tensors) {
      header.push_back({tensors[i].name, tensors[i].dtype, tensors[i].shape});
      weight_map[tensors[i].name] = name;
    }
    SafetensorsWriter writer(staging / name, std::move(header), {{"format", "pt"}});
    for (size_t i : shards[s].tensors)
      copy_tensor(reader, tensors[i], chunk_bytes, writer, permuted, o.stop);
    writer.close();
    summary.bytes += writer.data_bytes();
    if (progress)
      progress(concat(name, ": ", shards[s].tensors.size(), " tensors, ", writer.data_bytes(),
                      " bytes"));
  }
  permuted = {};

  std::string index =
      concat("{\n  \"metadata\": {\"total_size\": ", summary.bytes, "},\n  \"weight_map\": {");
  bool first = true;
  for (const auto& [tensor, shard] : weight_map) {
    index += concat(first ? "\n    " : ",\n    ", data::json_quote(tensor), ": ",
                    data::json_quote(shard));
    first = false;
  }
  index += "\n  }\n}\n";
  data::write_file_atomic(staging / kIndexFile, index);
  data::write_file_atomic(staging / "config.json", layout->config_json(cfg, o.dtype, summary.step));
  // No special tokens: moetron trains on plain token streams (no BOS/EOS), so generation stops
  // at max_length or the caller's own stop criteria.
  data::write_file_atomic(staging / "generation_config.json",
                          "{\n  \"_from_model_config\": true\n}\n");
  staged.publish();
  return summary;
}

}  // namespace moetron::checkpoint
