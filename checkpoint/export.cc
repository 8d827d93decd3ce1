#include "checkpoint/export.h"

#include <algorithm>
#include <map>

#include "checkpoint/checkpoint.h"
#include "checkpoint/glm4_moe.h"
#include "checkpoint/h5.h"
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

bool is_export(const fs::path& dir) {
  return fs::is_regular_file(dir / "config.json") && fs::is_regular_file(dir / kIndexFile);
}

// OUT may be absent or an empty directory; with --overwrite also an earlier export. Never the
// place that holds the checkpoint, which replacing OUT would delete.
void check_output(const ExportOptions& o) {
  if (o.out.empty()) throw Error("export: no output directory (--out DIR)");
  if (data::is_within(o.checkpoint, o.out))
    throw Error(concat("export: the checkpoint ", o.checkpoint, " lies inside --out ", o.out,
                       ", which the export replaces as a whole; choose another output"));
  std::error_code ec;
  if (!fs::exists(o.out, ec)) return;
  if (!fs::is_directory(o.out))
    throw Error(concat("export: --out ", o.out, " exists and is not a directory"));
  if (fs::is_empty(o.out)) return;
  if (!o.overwrite)
    throw Error(concat("export: --out ", o.out,
                       " exists and is not empty; pass --overwrite to replace an earlier export "
                       "there, or choose another output"));
  if (!is_export(o.out))
    throw Error(concat("export: --out ", o.out, " is not an earlier export (no config.json and ",
                       kIndexFile,
                       "); --overwrite replaces only exports: choose another output "
                       "or remove it yourself"));
}

// The checkpoint's tensors must be exactly those its config describes, each f32 of that shape.
void check_tensors(const H5File& file, const config::ModelConfig& m) {
  const std::vector<std::string> found = file.list("/params");
  std::vector<std::string> expected;
  for (const ModelTensor& t : model_tensors(m)) {
    expected.push_back(t.name);
    const std::string path = "/params/" + t.name;
    if (!std::binary_search(found.begin(), found.end(), t.name))
      throw Error(concat(file.path(), ": tensor ", t.name,
                         " is missing (the checkpoint's config describes it)"));
    if (file.shape(path) != t.shape) {
      const std::vector<uint64_t> s = file.shape(path);
      throw Error(concat(file.path(), ": ", path, " has shape ", shape_str({s.begin(), s.end()}),
                         ", the checkpoint's config says ",
                         shape_str({t.shape.begin(), t.shape.end()})));
    }
    if (!file.is_f32(path)) throw Error(concat(file.path(), ": ", path, " is not f32"));
  }
  std::sort(expected.begin(), expected.end());
  for (const std::string& name : found)
    if (!std::binary_search(expected.begin(), expected.end(), name))
      throw Error(
          concat(file.path(), ": tensor ", name, " is not part of the model its config describes"));
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

// Resizes a block buffer without holding the old and the new allocation at once, so the peak is
// the largest block rather than two of them.
void resize_block(std::vector<float>& v, size_t n) {
  if (n > v.capacity()) v = std::vector<float>();
  v.resize(n);
}

// Streams one export tensor from the checkpoint into the writer, in blocks of whole rows (whole
// heads when the rows are permuted), checking the source's checksum on the way.
void copy_tensor(const H5File& file, const ExportTensor& t, uint64_t chunk_bytes,
                 SafetensorsWriter& writer, std::vector<float>& block, std::vector<float>& out) {
  const std::string path = "/params/" + t.source;
  const bool vector = t.shape.size() == 1;
  const uint64_t rows = vector ? 1 : t.shape[0], cols = vector ? t.shape[0] : t.shape[1];
  const uint64_t unit = t.rope_rows > 0 ? t.rope_rows : 1;  // rows that move together
  MOETRON_CHECK(rows % unit == 0, t.name, ": ", rows, " rows in heads of ", unit);
  const uint64_t step = std::max<uint64_t>(1, chunk_bytes / (4 * cols * unit)) * unit;
  uint64_t hash = 0;
  for (uint64_t r = 0; r < rows; r += step) {
    const uint64_t n = std::min(step, rows - r);
    resize_block(block, n * cols);
    const Rect rect = vector ? Rect{0, 0, 1, cols} : Rect{r, 0, n, cols};
    file.read(path, {&rect, 1}, block);
    // Serial on purpose: export also runs in forked children (its memory test), where an
    // OpenMP team of the parent would deadlock; it is bound by the disk anyway.
    for (uint64_t i = 0; i < block.size(); ++i) hash ^= element_hash(r * cols + i, block[i]);
    if (t.rope_rows == 0) {
      writer.append(block);
      continue;
    }
    // Within each head: rows (2j, 2j+1) become rows (j, j + R/2).
    resize_block(out, block.size());
    const uint64_t R = t.rope_rows;
    for (uint64_t h = 0; h < n; h += R)
      for (uint64_t j = 0; j < R / 2; ++j)
        for (uint64_t k = 0; k < 2; ++k)
          std::copy_n(block.begin() + static_cast<std::ptrdiff_t>((h + 2 * j + k) * cols), cols,
                      out.begin() + static_cast<std::ptrdiff_t>((h + j + k * R / 2) * cols));
    writer.append(out);
  }
  if (hash != file.dataset_u64_attr(path, "checksum"))
    throw Error(concat(file.path(), ": ", path,
                       " does not match its checksum (the checkpoint is corrupt)"));
}

// UTF-8 of one code point below U+0800.
std::string utf8(uint32_t cp) {
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
}

// Writes the tokenizer of the dataset the checkpoint was trained on; returns what it wrote.
std::string write_tokenizer(const ExportOptions& o, const config::RunConfig& cfg,
                            const fs::path& dir) {
  const fs::path dataset = o.dataset.empty() ? fs::path(cfg.data().dataset_dir()) : o.dataset;
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
    const std::string bytes = data::read_file(model);
    if (data::sentencepiece_identity(bytes) != m.tokenizer_identity)
      throw Error(concat("export: ", model, " is not the SentencePiece model ", dataset,
                         " was prepared with (its manifest says ", m.tokenizer_identity, ")"));
    data::write_file_atomic(dir / "tokenizer.model", bytes);
    return concat("tokenizer.model (SentencePiece, ", m.tokenizer_identity, ")");
  }
  throw Error(
      concat("export: ", dataset, " has a tokenizer of unknown kind \"", m.tokenizer_kind, "\""));
}

std::vector<std::string> notes_for(const config::ModelConfig& m) {
  std::vector<std::string> notes;
  if (m.rope_style() == config::ModelConfig::INTERLEAVED)
    notes.push_back(
        "rope_style INTERLEAVED: q_proj/k_proj rows permuted within each head to the "
        "rotate_half layout glm4_moe implements (the same function)");
  if (m.tie_word_embeddings())
    notes.push_back("tied embeddings: lm_head.weight written as a copy of the embedding");
  if (m.moe().capacity_factor() > 0)
    notes.push_back(concat("capacity_factor ", m.moe().capacity_factor(),
                           " is a training setting: glm4_moe (and the export) is dropless"));
  if (m.moe().n_shared_experts() == 0)
    notes.push_back(
        "n_shared_experts 0: transformers runs a zero-width shared expert; other "
        "engines may expect at least one");
  return notes;
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
  check_output(o);
  if (!fs::exists(o.checkpoint))
    throw Error(concat("export: checkpoint ", o.checkpoint, " does not exist"));
  const H5File file(o.checkpoint.string(), H5File::Mode::read);
  config::RunConfig cfg;
  try {
    cfg = read_header(file);
  } catch (const Error& e) {
    throw Error(concat("export: ", e.what()));
  }
  const config::ModelConfig& model = cfg.model();
  try {
    check_glm4_moe(model);
  } catch (const Error& e) {
    throw Error(concat("export: ", o.checkpoint, " cannot be written as glm4_moe: ", e.what()));
  }
  check_tensors(file, model);

  ExportSummary summary;
  summary.step = file.int_attr("step");
  summary.notes = notes_for(model);
  const std::vector<ExportTensor> tensors = export_tensors(model, o.dtype);
  const std::vector<Shard> shards = plan_shards(tensors, o.shard_size);
  summary.tensors = tensors.size();
  summary.shards = shards.size();

  const fs::path out = data::clean_path(o.out);
  fs::create_directories(out.parent_path());
  data::StagedDirectory staged(out, "export");
  const fs::path& staging = staged.path();

  summary.tokenizer = write_tokenizer(o, cfg, staging);
  const uint64_t chunk_bytes = std::min(o.shard_size, kMaxChunkBytes);
  std::vector<float> block, permuted;
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
      copy_tensor(file, tensors[i], chunk_bytes, writer, block, permuted);
    writer.close();
    summary.bytes += writer.data_bytes();
    if (progress)
      progress(concat(name, ": ", shards[s].tensors.size(), " tensors, ", writer.data_bytes(),
                      " bytes"));
  }
  block = {};
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
  data::write_file_atomic(staging / "config.json",
                          glm4_moe_config_json(cfg, o.dtype, summary.step));
  // No special tokens: moetron trains on plain token streams (no BOS/EOS), so generation stops
  // at max_length or the caller's own stop criteria.
  data::write_file_atomic(staging / "generation_config.json",
                          "{\n  \"_from_model_config\": true\n}\n");
  staged.publish();
  return summary;
}

}  // namespace moetron::checkpoint
