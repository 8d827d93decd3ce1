// A checkpoint's metadata: the root attributes that say where training stands and how the file
// was made, written with a checksum over all of them, and read back as untrusted input: every
// attribute present, of its type and in its range, the checksum matching, and the config passing
// the checks a config file passes (docs/checkpoint.md, "Trust").
#pragma once

#include <cstdint>
#include <string>

#include "configs/moetron.pb.h"

namespace moetron::checkpoint {

class H5File;

inline constexpr const char* kFormat = "moetron-checkpoint";
// Version 3: the metadata checksum and the dataset identity. Version 2 files (no metadata
// checksum) are still read; version 1, written only by development builds of 2026-11-25, is
// refused.
inline constexpr int64_t kVersion = 3;
inline constexpr int64_t kOldestVersion = 2;

// Where training stands, beside the tensors.
struct TrainState {
  int64_t step = 0;              // optimizer steps taken
  int64_t tokens_seen = 0;       // training tokens consumed, all ranks together
  int64_t samples_consumed = 0;  // training windows drawn, all ranks together
  // The identity of the prepared dataset it trained on (data::dataset_identity); "" when the
  // file does not say (version 2).
  std::string dataset = {};
};

struct Metadata {
  int64_t version = kVersion;
  TrainState state;
  int64_t optimizer_step = 0;  // AdamW's step count
  std::string layout;          // "dp=2 tp=1 ep=2 zero1=0 world=2"
  std::string config_text;     // the resolved run config, every default explicit
  config::RunConfig config;    // config_text parsed (filled by read_metadata)
};

// The checksum over every attribute (FNV-1a 64 of "name=value" lines in a fixed order).
uint64_t metadata_checksum(const Metadata& m);
// Writes every attribute and the checksum over them.
void write_metadata(H5File& file, const Metadata& m);
// Reads and checks the metadata; throws Error naming the file, the attribute and what is wrong.
Metadata read_metadata(const H5File& file);

}  // namespace moetron::checkpoint
