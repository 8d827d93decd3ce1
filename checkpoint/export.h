// `moetron export`: a checkpoint as a Hugging Face model directory (docs/export.md) in the
// deepseek_v3 layout (MLA models) or the glm4_moe (GLM-4.5) one (attention models),
// checkpoint/hf_layout.h: config.json, generation_config.json, sharded *.safetensors with
// model.safetensors.index.json, and the tokenizer.
//
// Streaming: each shard's tensor list and header are planned first, then the values are read
// from the checkpoint in row blocks of at most one shard (and at most 64 MiB) and written
// through, so the memory used stays below about one shard whatever the model's size. Every
// tensor read is verified against its checksum in the checkpoint.
//
// The directory is built beside the output (OUT.partial-PID) and moved into place only when
// complete: a failed or killed export leaves OUT as it was.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/safetensors.h"
#include "core/stop.h"

namespace moetron::checkpoint {

struct ExportOptions {
  std::filesystem::path checkpoint;  // a moetron checkpoint (.h5)
  std::filesystem::path out;         // the model directory to write
  StDtype dtype = StDtype::bf16;
  // Bytes of tensor data per .safetensors file at most (a larger tensor gets a file of its own).
  uint64_t shard_size = 5'000'000'000;  // Hugging Face's default "5GB"
  // OUT may exist only when empty, unless this is set: then what moetron wrote there (its
  // .moetron-files lists it, data/staged_dir.h) is replaced; anything else makes it refuse.
  bool overwrite = false;
  // The prepared dataset whose tokenizer is exported; empty: the checkpoint config's
  // data.dataset_dir (a relative path resolved against the working directory).
  std::filesystem::path dataset;
  // Polled between blocks of tensor data: a stop throws Stopped and leaves OUT as it was.
  StopToken stop;
};

struct ExportSummary {
  std::string model_type;  // the Hugging Face architecture written, e.g. "deepseek_v3"
  int64_t step = 0;        // the checkpoint's
  size_t tensors = 0;      // in the export, MTP copies included
  size_t shards = 0;
  uint64_t bytes = 0;              // tensor data, all shards together
  std::string tokenizer;           // what was written for it
  std::vector<std::string> notes;  // mappings worth telling the user (docs/export.md)
};

// Throws Error naming the file, tensor or setting at fault and what would be valid. `progress`,
// when set, is told of each file written.
ExportSummary export_checkpoint(const ExportOptions& options,
                                const std::function<void(const std::string&)>& progress = {});

// The HF shard file names: model-00001-of-00003.safetensors.
std::string shard_name(size_t index, size_t count);

// The byte-level tokenizer.json (Hugging Face tokenizers) of moetron's byte tokenizer: ids
// 0..255 are the bytes themselves (GPT-2's byte-to-unicode alphabet, no merges, no special
// tokens), so a text encodes to its UTF-8 bytes and any ids decode back.
std::string byte_tokenizer_json();

}  // namespace moetron::checkpoint
