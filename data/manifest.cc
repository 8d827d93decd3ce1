#include "data/manifest.h"

#include <charconv>
#include <sstream>

#include "core/check.h"
#include "data/file_io.h"
#include "data/hash.h"
#include "data/json.h"

namespace moetron::data {
namespace {

using detail::concat;

void write_split(std::ostringstream& os, std::string_view name, const SplitEntry& s, bool last) {
  os << "    " << json_quote(name) << ": {\n"
     << "      \"documents\": " << s.documents << ",\n"
     << "      \"tokens\": " << s.tokens << ",\n"
     << "      \"shards\": [";
  for (size_t i = 0; i < s.shards.size(); ++i) {
    const auto& sh = s.shards[i];
    os << (i ? ",\n" : "\n") << "        {\"file\": " << json_quote(sh.file)
       << ", \"tokens\": " << sh.tokens << ", \"checksum\": \"fnv1a64:" << hex64(sh.checksum)
       << "\"}";
  }
  os << (s.shards.empty() ? "]\n" : "\n      ]\n") << "    }" << (last ? "\n" : ",\n");
}

SplitEntry read_split(const JsonValue& v) {
  SplitEntry s;
  s.documents = v.at("documents").as_u64();
  s.tokens = v.at("tokens").as_u64();
  uint64_t sum = 0;
  for (const auto& sh : v.at("shards").as_array()) {
    ShardEntry e;
    e.file = sh.at("file").as_string();
    e.tokens = sh.at("tokens").as_u64();
    const JsonValue& c = sh.at("checksum");
    const std::string& text = c.as_string();
    if (!text.starts_with("fnv1a64:") || !parse_hex64(std::string_view(text).substr(8), e.checksum))
      throw Error(concat(c.origin, ": expected \"fnv1a64:<16 hex digits>\", found \"", text, "\""));
    if (e.file.empty() || e.file.find('/') != std::string::npos || e.file.starts_with("."))
      throw Error(concat(sh.at("file").origin, ": shard file \"", e.file,
                         "\" must be a plain file name inside the dataset directory"));
    sum += e.tokens;
    s.shards.push_back(std::move(e));
  }
  if (sum != s.tokens)
    throw Error(concat(v.origin, ": \"tokens\" is ", s.tokens, " but its shards hold ", sum));
  return s;
}

}  // namespace

std::string_view split_name(Split split) {
  return split == Split::train ? "train" : "val";
}

std::string dataset_identity(const Manifest& m) {
  uint64_t h = fnv1a64(m.tokenizer_identity);
  for (const Split split : {Split::train, Split::val})
    for (const ShardEntry& e : m.split(split).shards)
      h = fnv1a64(concat(split_name(split), " ", e.file, " ", e.tokens, " ", e.checksum, "\n"), h);
  return "tokens:" + hex64(h);
}

std::string manifest_to_json(const Manifest& m) {
  std::ostringstream os;
  char fraction[32];  // shortest text that reads back as the same double
  *std::to_chars(fraction, fraction + sizeof fraction - 1, m.val_fraction).ptr = '\0';
  os << "{\n"
     << "  \"format\": \"moetron-tokens\",\n"
     << "  \"version\": " << kManifestVersion << ",\n"
     << "  \"tokenizer\": {\n"
     << "    \"kind\": " << json_quote(m.tokenizer_kind) << ",\n"
     << "    \"vocab_size\": " << m.vocab_size << ",\n"
     << "    \"identity\": " << json_quote(m.tokenizer_identity) << ",\n"
     << "    \"model_file\": " << json_quote(m.tokenizer_model) << "\n"
     << "  },\n"
     << "  \"token_dtype\": \"" << (m.token_width == 2 ? "u16" : "u32") << "\",\n"
     << "  \"splits\": {\n";
  write_split(os, "train", m.train, false);
  write_split(os, "val", m.val, true);
  os << "  },\n"
     << "  \"source\": {\n"
     << "    \"inputs\": [";
  for (size_t i = 0; i < m.inputs.size(); ++i) os << (i ? ", " : "") << json_quote(m.inputs[i]);
  os << "],\n"
     << "    \"fortunes\": " << (m.fortunes ? "true" : "false") << ",\n"
     << "    \"val_fraction\": " << fraction << "\n"
     << "  }\n"
     << "}\n";
  return os.str();
}

void write_manifest(const std::filesystem::path& dir, const Manifest& m) {
  write_file_atomic(dir / kManifestFile, manifest_to_json(m));
}

Manifest read_manifest(const std::filesystem::path& dir) {
  const auto file = dir / kManifestFile;
  if (!std::filesystem::exists(file)) {
    const std::string relative =
        dir.is_relative() ? concat(" (a relative path, resolved against the working directory ",
                                   std::filesystem::current_path(), ")")
                          : std::string();
    throw Error(concat(file, " not found: ", dir, relative,
                       " is not a prepared dataset (create one with `moetron prepare`)"));
  }
  const JsonValue root = parse_json(read_file(file, kMaxTextFileBytes, "manifest"), file.string());
  if (root.kind != JsonValue::Kind::object)
    throw Error(concat(file, ": expected a JSON object at the top level"));
  if (const JsonValue* f = root.find("format"); !f || f->as_string() != "moetron-tokens")
    throw Error(concat(file,
                       ": not a moetron dataset manifest (\"format\" must be "
                       "\"moetron-tokens\")"));
  if (const uint64_t v = root.at("version").as_u64(); v != kManifestVersion)
    throw Error(concat(file, ": unknown manifest version ", v, " (this build reads version ",
                       kManifestVersion, ")"));
  Manifest m;
  const JsonValue& tok = root.at("tokenizer");
  m.tokenizer_kind = tok.at("kind").as_string();
  const uint64_t vocab = tok.at("vocab_size").as_u64();
  if (vocab == 0 || vocab > (1u << 31) - 1)
    throw Error(concat(tok.at("vocab_size").origin, ": vocab size ", vocab, " is out of range"));
  m.vocab_size = static_cast<int>(vocab);
  m.tokenizer_identity = tok.at("identity").as_string();
  if (const JsonValue* model = tok.find("model_file")) m.tokenizer_model = model->as_string();
  const std::string& dtype = root.at("token_dtype").as_string();
  if (dtype != "u16" && dtype != "u32")
    throw Error(concat(root.at("token_dtype").origin, ": \"", dtype, "\"; valid: u16, u32"));
  m.token_width = dtype == "u16" ? 2 : 4;
  const JsonValue& splits = root.at("splits");
  m.train = read_split(splits.at("train"));
  m.val = read_split(splits.at("val"));
  if (const JsonValue* src = root.find("source")) {
    if (const JsonValue* in = src->find("inputs"))
      for (const auto& i : in->as_array()) m.inputs.push_back(i.as_string());
    if (const JsonValue* f = src->find("fortunes")) m.fortunes = f->as_bool();
    if (const JsonValue* f = src->find("val_fraction")) m.val_fraction = f->as_double();
  }
  return m;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir, const Manifest& m) {
  const auto file = dir / kManifestFile;
  std::unique_ptr<Tokenizer> t;
  if (m.tokenizer_kind == "byte") {
    t = std::make_unique<ByteTokenizer>();
  } else if (m.tokenizer_kind == "sentencepiece") {
    if (m.tokenizer_model.empty())
      throw Error(concat(file, ": tokenizer.model_file is empty for a sentencepiece tokenizer"));
    t = std::make_unique<SentencePieceTokenizer>(dir / m.tokenizer_model);
  } else {
    throw Error(concat(file, ": unknown tokenizer kind \"", m.tokenizer_kind,
                       "\"; valid: byte, sentencepiece"));
  }
  if (t->identity() != m.tokenizer_identity || t->vocab_size() != m.vocab_size)
    throw Error(concat(dir / m.tokenizer_model, ": tokenizer is ", t->identity(), " (vocab ",
                       t->vocab_size(), ") but ", file, " says ", m.tokenizer_identity, " (vocab ",
                       m.vocab_size, ")"));
  return t;
}

}  // namespace moetron::data
