// A small RAII layer over the HDF5 C API: the file (serial, or parallel through MPI-IO), groups,
// f32 datasets read and written by hyperslab, string and integer attributes. Every failure is
// an Error naming the file and the object.
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace moetron::checkpoint {

// Closes one HDF5 identifier with the matching H5*close.
class H5Id {
 public:
  H5Id() = default;
  H5Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5Id() { reset(); }
  H5Id(H5Id&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  // Gives up ownership without closing.
  hid_t release() { return std::exchange(id_, -1); }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// A block of a 2-D (or 1-D) dataset in global coordinates: rows [row, row + rows) x columns
// [col, col + cols). A flat range of a row-major block is a union of at most three of these.
struct Rect {
  uint64_t row = 0, col = 0, rows = 0, cols = 0;
};

// Call first in main(), before anything touches HDF5: HDF5 closes at exit whatever files are
// still open, and one whose close already failed (a write that hit a full disk or `ulimit -f`,
// leaving no room for the metadata) crashes it there. moetron closes or abandons every file
// itself, so the exit handler has nothing to do.
void disable_hdf5_exit_handler();

class H5File {
 public:
  enum class Mode { create, read };
  // comm = MPI_COMM_NULL: serial (this process alone). Otherwise every rank of comm opens it
  // together (MPI-IO), and dataset and attribute creation are collective.
  H5File(const std::string& path, Mode mode, MPI_Comm comm = MPI_COMM_NULL);
  // Closes; close() reports errors, the destructor cannot. A file being written that was not
  // closed (a write failed) is abandoned: emptied, then closed.
  ~H5File();
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  void close();
  // Gives up a file being written: truncates it to nothing and closes it, ignoring errors, so
  // that a failed write (a full disk) cannot make the close fail. Collective when parallel.
  void abandon();
  const std::string& path() const { return path_; }

  // The file's size in bytes when it was opened for reading.
  uint64_t bytes() const { return bytes_; }

  // Attributes of the root group: scalars only (anything else is an error naming the attribute);
  // a string longer than `max_bytes` is refused before it is read.
  void set_attr(const std::string& name, const std::string& value);
  void set_attr(const std::string& name, int64_t value);
  bool has_attr(const std::string& name) const;
  std::string string_attr(const std::string& name, size_t max_bytes = size_t{1} << 20) const;
  int64_t int_attr(const std::string& name) const;
  // Names of the root's attributes, sorted.
  std::vector<std::string> attr_names() const;

  // Datasets of f32, with an optional u64 attribute each (the checksum).
  void create_dataset(const std::string& path, std::span<const uint64_t> shape);
  bool has(const std::string& path) const;
  // What a dataset declares and holds: its shape (rank 0 for a scalar), whether its type is f32,
  // whether it is stored contiguously (as moetron writes it), and the bytes of storage the file
  // gives it (a declared shape the file does not hold has less).
  struct DatasetInfo {
    std::vector<uint64_t> shape;
    bool f32 = false, contiguous = false;
    uint64_t storage_bytes = 0;
  };
  DatasetInfo info(const std::string& path) const;
  std::vector<uint64_t> shape(const std::string& path) const { return info(path).shape; }
  // Writes `data` (row-major, the rectangles one after the other) into the rectangles; with no
  // rectangles it still takes part in a collective write (this process writes nothing).
  void write(const std::string& path, std::span<const Rect> rects, std::span<const float> data);
  void read(const std::string& path, std::span<const Rect> rects, std::span<float> data) const;
  void set_dataset_attr(const std::string& path, const std::string& name, uint64_t value);
  uint64_t dataset_u64_attr(const std::string& path, const std::string& name) const;
  // Names of the datasets under the group `group` ("/params"), sorted.
  std::vector<std::string> list(const std::string& group) const;

 private:
  [[noreturn]] void fail(const std::string& what) const;
  H5Id open_dataset(const std::string& path) const;
  // The dataset, its selected rectangles and a flat memory space of their element count.
  struct Transfer {
    H5Id dataset, file_space, mem_space;
  };
  Transfer transfer(const std::string& path, std::span<const Rect> rects) const;

  std::string path_;
  bool parallel_ = false, writing_ = false;
  uint64_t bytes_ = 0;
  H5Id file_;
};

}  // namespace moetron::checkpoint
