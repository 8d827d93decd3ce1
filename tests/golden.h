// Reader for the HDF5 goldens written by tests/reference/gen_goldens.py (layout in
// tests/reference/README.md), and a float comparison helper for GoogleTest.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace moetron::test {

// One golden file, open read-only for the object's lifetime. Dataset and group names are HDF5
// paths ("/params/weight" or "params/weight"). Every failure throws std::runtime_error naming
// the file and the dataset or attribute.
class Golden {
 public:
  explicit Golden(const std::string& path);
  ~Golden();
  Golden(const Golden&) = delete;
  Golden& operator=(const Golden&) = delete;
  Golden(Golden&& other) noexcept;
  Golden& operator=(Golden&& other) noexcept;

  // The whole dataset converted to float / int32 (row-major); a scalar dataset gives 1 value.
  std::vector<float> floats(const std::string& dataset) const;
  std::vector<int32_t> ints(const std::string& dataset) const;
  // Dimensions; empty for a scalar dataset.
  std::vector<size_t> shape(const std::string& dataset) const;
  // True when the path exists and is a dataset.
  bool has(const std::string& dataset) const;
  // Root-group attributes: a numeric one (any integer or float type) or a string one.
  bool has_attr(const std::string& name) const;
  double attr_num(const std::string& name) const;
  std::string attr_str(const std::string& name) const;
  // Names of the members of a group, sorted ("/" is the root).
  std::vector<std::string> names(const std::string& group) const;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int64_t file_ = -1;  // hid_t
};

// MOETRON_SOURCE_DIR "/tests/reference/goldens/" + file.
std::string golden_path(const std::string& file);

// |actual - expected| <= atol + rtol * |expected| elementwise (NaN never matches); on failure
// reports the number of mismatches, the worst index and its values.
::testing::AssertionResult all_close(std::span<const float> actual, std::span<const float> expected,
                                     float rtol, float atol);

}  // namespace moetron::test
