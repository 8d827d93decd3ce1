// Training checkpoints: one HDF5 file each, written collectively through MPI-IO and readable
// into any parallel layout (docs/checkpoint.md).
//
// Each dataset is one logical, unsharded tensor under its Hugging Face name (/params/NAME, and
// each optimizer state tensor under its slot's name: AdamW's moments /exp_avg/NAME and
// /exp_avg_sq/NAME, Muon's momentum /muon_momentum/NAME), written by hyperslab: every element
// by exactly one rank (one replica of each block). Beside them, as attributes of the root: the
// format and its version, the step, the tokens and training windows consumed, the optimizer's
// step count, the layout at save time and the resolved config text. Every dataset carries a
// layout-independent checksum (an XOR of per-element hashes of index and bits), so any layout
// can verify what it reads.
#pragma once

#include <bit>
#include <cstdint>
#include <filesystem>
#include <functional>
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

// One tensor of optimizer state per element of the parameters it holds (trainer/optimizer.h):
// saved as /NAME/<parameter> for every trained parameter `holds` accepts (a rule on names and
// kinds, so that every rank agrees on the datasets, experts it does not hold included); this
// rank's part is `values`, laid out over `ranges` (element ranges of the flat buffers,
// ascending) range after range. How the ranks split a slot (`split`): AdamW's moments are this
// rank's ZeRO-1 share under ZeRO-1 and replicated like the values otherwise; Muon's momentum is
// held by each matrix's owner alone. Each element is written by the rank that holds it (of
// replicated state, by the one replica that writes the values).
struct StateSlot {
  std::string name;  // "exp_avg", "exp_avg_sq", "muon_momentum"
  std::function<bool(const std::string& name, ParamKind kind)> holds;
  std::vector<ElementRange> ranges;
  Tensor values;  // a handle: loading writes through it
  enum class Split { zero1, by_owner };
  Split split = Split::zero1;
};

// The optimizer's state: its slots and its step count. No slots: the weights alone.
struct OptimizerState {
  std::vector<StateSlot> slots;
  int64_t step = 0;
};

// Writes a checkpoint to `path` on every rank of `groups` together: into `path`.partial, closed
// and fsynced, then renamed (rank 0), so `path` is complete or absent. `config_text` is the
// resolved config. An `optimizer` without slots (OptimizerState{}, on every rank) saves the
// weights alone. Throws CollectiveError on failure (every rank alike), after removing the
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
