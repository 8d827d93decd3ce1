#include "checkpoint/metadata.h"

#include <google/protobuf/text_format.h>

#include "checkpoint/h5.h"
#include "configs/config.h"
#include "core/check.h"
#include "data/hash.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;

// The attributes, in the order the checksum covers them.
constexpr const char* kIntAttrs[] = {"version", "step", "tokens_seen", "samples_consumed",
                                     "optimizer_step"};
constexpr const char* kStringAttrs[] = {"format", "layout", "config", "dataset"};
constexpr const char* kChecksum = "metadata_checksum";
// The largest config text read (a resolved config is about 3 KB).
constexpr size_t kMaxConfigBytes = size_t{1} << 20;
// Steps stay below 2^53, so every count is exact in a double (JSON metrics) as well.
constexpr int64_t kMaxSteps = int64_t{1} << 53;

}  // namespace

uint64_t metadata_checksum(const Metadata& m) {
  const int64_t ints[] = {m.version, m.state.step, m.state.tokens_seen, m.state.samples_consumed,
                          m.optimizer_step};
  const std::string strings[] = {kFormat, m.layout, m.config_text, m.state.dataset};
  uint64_t h = data::kFnv1a64Offset;
  for (size_t i = 0; i < std::size(kIntAttrs); ++i)
    h = data::fnv1a64(concat(kIntAttrs[i], "=", ints[i], "\n"), h);
  for (size_t i = 0; i < std::size(kStringAttrs); ++i)
    h = data::fnv1a64(concat(kStringAttrs[i], "=", strings[i], "\n"), h);
  return h;
}

void write_metadata(H5File& file, const Metadata& m) {
  file.set_attr("format", kFormat);
  file.set_attr("version", m.version);
  file.set_attr("step", m.state.step);
  file.set_attr("tokens_seen", m.state.tokens_seen);
  file.set_attr("samples_consumed", m.state.samples_consumed);
  file.set_attr("optimizer_step", m.optimizer_step);
  file.set_attr("layout", m.layout);
  file.set_attr("config", m.config_text);
  file.set_attr("dataset", m.state.dataset);
  file.set_attr(kChecksum, data::hex64(metadata_checksum(m)));
}

Metadata read_metadata(const H5File& file) {
  const std::string& path = file.path();
  if (!file.has_attr("format") || file.string_attr("format", 64) != kFormat)
    throw Error(concat(path, " is not a moetron checkpoint (no format \"", kFormat, "\")"));
  Metadata m;
  m.version = file.int_attr("version");
  if (m.version < kOldestVersion || m.version > kVersion)
    throw Error(concat(path, ": format version ", m.version,
                       " is unknown (this build reads versions ", kOldestVersion, " to ", kVersion,
                       ")"));
  m.state.step = file.int_attr("step");
  m.state.tokens_seen = file.int_attr("tokens_seen");
  m.state.samples_consumed = file.int_attr("samples_consumed");
  m.optimizer_step = file.int_attr("optimizer_step");
  m.layout = file.string_attr("layout", 256);
  m.config_text = file.string_attr("config", kMaxConfigBytes);
  if (m.version >= 3) {
    m.state.dataset = file.string_attr("dataset", 256);
    uint64_t stored = 0;
    if (!data::parse_hex64(file.string_attr(kChecksum, 64), stored) ||
        stored != metadata_checksum(m))
      throw Error(concat(path,
                         ": its metadata (step, tokens, data position, config) does not match ",
                         "its checksum: the file is corrupt or was edited"));
  }
  // In range whatever wrote them: each step draws at least one window of at least one token.
  auto range = [&](const char* name, int64_t v, int64_t lo, int64_t hi, const std::string& why) {
    if (v < lo || v > hi)
      throw Error(concat(path, ": attribute ", name, " = ", v, " is out of range: ", why));
  };
  const TrainState& s = m.state;
  range("step", s.step, 0, kMaxSteps - 1, "it must be in [0, 2^53)");
  range("samples_consumed", s.samples_consumed, s.step, int64_t{1} << 62,
        concat("a run of ", s.step, " steps drew at least as many windows"));
  range("tokens_seen", s.tokens_seen, s.samples_consumed, INT64_MAX,
        concat("the ", s.samples_consumed, " windows hold at least as many tokens"));
  range("optimizer_step", m.optimizer_step, 0, s.step,
        concat("it counts updates, at most one per step (step = ", s.step, ")"));
  // The config, as a config file is checked: it builds the model that reads this file.
  if (!google::protobuf::TextFormat::ParseFromString(m.config_text, &m.config))
    throw Error(concat(path, ": its config attribute is not a moetron run config"));
  try {
    validate_config(m.config);
  } catch (const Error& e) {
    throw Error(concat(path, ": its config fails the checks of a config file: ", e.what()));
  }
  return m;
}

}  // namespace moetron::checkpoint
