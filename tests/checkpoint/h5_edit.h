// Damaging a checkpoint on purpose: a copy of it changed through the HDF5 C API, as a damaged or
// hostile file would be changed.
#pragma once

#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "configs/config.h"
#include "tests/data/test_util.h"
#include "trainer/checkpoint_names.h"
#include "trainer/trainer.h"

namespace moetron::test {

inline std::filesystem::path copy_and_edit(const std::filesystem::path& from,
                                           const std::filesystem::path& to,
                                           const std::function<void(hid_t file)>& edit) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
  const hid_t f = H5Fopen(to.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  edit(f);
  H5Fclose(f);
  return to;
}

// A suite's good checkpoint, the last of a run of Suite::run_config(run directory, kSteps)
// trained once for the suite, and copies of it changed by the tests.
template <class Suite>
class TrainedCheckpoint : public ::testing::Test {
 protected:
  static constexpr int kSteps = 2;

  static void SetUpTestSuite() {
    dir_ = std::make_unique<data::testing::TempDir>();
    std::ostringstream log;
    train(Suite::run_config(*dir_ / "run", kSteps), log);
    good_ = *dir_ / "run" / "checkpoints" / checkpoint_name(kSteps);
  }
  static void TearDownTestSuite() {
    good_.reset();
    dir_.reset();
  }

  // A copy of the good checkpoint, changed by `edit` through the HDF5 API.
  static std::filesystem::path copy_with(const std::string& name,
                                         const std::function<void(hid_t)>& edit) {
    return copy_and_edit(*good_, *dir_ / name, edit);
  }

  static inline std::unique_ptr<data::testing::TempDir> dir_;
  static inline std::optional<std::filesystem::path> good_;
};

}  // namespace moetron::test
