// Opening a checkpoint file as untrusted input (docs/checkpoint.md, "Trust"). Everything a
// reader could be misled by is checked before any value is read or anything of the size the
// file declares is allocated: the metadata (checksummed, in range, the config valid), then the
// tensors against the model that config describes, counted in closed form first, so a config
// claiming a model far larger than the file is refused before its tensor list is even built;
// every tensor present, of its shape, f32, stored whole and contiguously inside the file. The
// values are verified against their checksums as they are read.
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/h5.h"
#include "checkpoint/metadata.h"
#include "checkpoint/model_tensors.h"

namespace moetron::checkpoint {

// The optimizer state groups a checkpoint may hold (checkpoint.h, StateSlot), in the order
// inspect shows them: AdamW's moments, Muon's momentum.
inline constexpr std::array<const char*, 3> kStateGroups = {"exp_avg", "exp_avg_sq",
                                                            "muon_momentum"};

class CheckpointReader {
 public:
  // Opens `path` (every rank of `comm` together, MPI-IO, unless MPI_COMM_NULL) and checks it.
  // Throws Error naming the file and its first problem.
  explicit CheckpointReader(const std::filesystem::path& path, MPI_Comm comm = MPI_COMM_NULL);

  const Metadata& metadata() const { return metadata_; }
  const config::RunConfig& config() const { return metadata_.config; }
  const H5File& file() const { return file_; }
  H5File& file() { return file_; }
  // The model's tensors (/params), in model order.
  const std::vector<ModelTensor>& tensors() const { return tensors_; }
  // Whether tensor `name` has optimizer state in `group` (one of kStateGroups, e.g. "exp_avg")
  // in the file.
  bool has_state(const std::string& group, const std::string& name) const;

  // Reads dataset `path` in blocks of whole rows (a multiple of `unit` rows, at most
  // `max_bytes` where a unit fits), calling `visit(first_row, values)` for each, and checks the
  // values against the dataset's checksum. Returns whether they matched.
  bool read_rows(
      const std::string& path, uint64_t unit, uint64_t max_bytes,
      const std::function<void(uint64_t first_row, std::span<const float>)>& visit) const;

 private:
  // The dataset at `path` must be f32 of `shape`, stored whole and contiguously; returns its
  // bytes.
  uint64_t check_dataset(const std::string& path, const std::vector<uint64_t>& shape) const;

  H5File file_;
  Metadata metadata_;
  std::vector<ModelTensor> tensors_;
  std::map<std::string, std::vector<std::string>> state_;  // tensors of each state group, sorted
};

}  // namespace moetron::checkpoint
