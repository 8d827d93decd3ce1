// Damaging a checkpoint on purpose: a copy of it changed through the HDF5 C API, as a damaged or
// hostile file would be changed.
#pragma once

#include <hdf5.h>

#include <filesystem>
#include <functional>

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

}  // namespace moetron::test
