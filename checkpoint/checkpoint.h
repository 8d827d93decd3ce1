// Training checkpoints: one HDF5 file each, written collectively through MPI-IO and readable
// into any parallel layout (docs/checkpoint.md).
//
// Each dataset is one logical, unsharded tensor under its Hugging Face name (/params/NAME, and
// AdamW's moments under /exp_avg/NAME and /exp_avg_sq/NAME), written by hyperslab: every
// element by exactly one rank (one replica of each block). Beside them, as attributes of the
// root: the format and its version, the step, the tokens and training windows consumed, AdamW's
// step count, the layout at save time and the resolved config text. Every dataset carries a
// layout-independent checksum (an XOR of per-element hashes of index and bits), so any layout
// can verify what it reads.
#pragma once

#include <bit>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/metadata.h"
#include "configs/moetron.pb.h"
#include "models/params.h"
#include "parallel/grad_sync.h"
#include "parallel/process_groups.h"

namespace moetron::checkpoint {

// A dataset's checksum is the XOR over its elements of element_hash(row-major index, value):
// the same whichever ranks wrote which blocks. One multiply-xorshift round: any single changed
// or moved value changes it, and it is cheap enough to hash every element of a checkpoint.
inline uint64_t element_hash(uint64_t index, float value) {
  uint64_t x = (index * 0x9E3779B97F4A7C15ull) ^ std::bit_cast<uint32_t>(value);
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 31);
}

// AdamW's state (trainer/optimizer.h): the moments of the element ranges this rank owns, range
// after range, and its step count. Tensors are handles: loading writes through them.
struct OptimizerState {
  std::vector<ElementRange> owned;
  Tensor exp_avg, exp_avg_sq;
  int64_t step = 0;
};

// Writes a checkpoint to `path` on every rank of `groups` together: into `path`.partial, closed
// and fsynced, then renamed (rank 0), so `path` is complete or absent. `config_text` is the
// resolved config. An `optimizer` without moment tensors (OptimizerState{}, on every rank) saves
// the weights alone. Throws CollectiveError on failure (every rank alike), after removing the
// partial file.
void save(const std::filesystem::path& path, const ParamTable& params,
          const OptimizerState& optimizer, const TrainState& state, const std::string& config_text,
          const ProcessGroups& groups);

// Reads a checkpoint into this rank's parameters and (unless null: the weights alone, for
// inference and export) optimizer state, whatever layout wrote it. Checks, and names the first
// problem: the file and its metadata (CheckpointReader), the model config against `cfg` (the
// field and both values), missing or extra tensors, shapes, dtypes and checksums. Writes
// nothing to disk. Throws CollectiveError.
TrainState load(const std::filesystem::path& path, ParamTable& params, OptimizerState* optimizer,
                const config::RunConfig& cfg, const ProcessGroups& groups);

// The run config a checkpoint was saved with (its resolved text), checked as CheckpointReader
// checks it, e.g. to build the model before loading it. Throws Error naming the file.
config::RunConfig saved_config(const std::filesystem::path& path);

// The first difference between the model configs, as "model.hidden_size: the checkpoint has 128,
// the config 256", or "" when they describe the same model.
std::string model_difference(const config::ModelConfig& checkpoint,
                             const config::ModelConfig& config);

}  // namespace moetron::checkpoint
