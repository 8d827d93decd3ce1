#include "checkpoint/h5.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"
#include "data/file_io.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;

// HDF5 prints its error stack by default; failures here become exceptions instead.
void quiet() {
  static const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)once;
}

// The cause of the last HDF5 failure, from its error stack: the system's message where a system
// call failed ("No space left on device"), else the innermost description. Clears the stack.
std::string last_cause() {
  struct Found {
    std::string innermost, system;
  } found;
  auto visit = [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
    auto& f = *static_cast<Found*>(data);
    const std::string desc = e->desc ? e->desc : "";
    if (f.innermost.empty()) f.innermost = desc;
    // POSIX drivers: "..., errno = 28, error message = 'No space left on device', ..."; MPI-IO:
    // "..., MPI error string is 'No space left on device'" or similar.
    for (const char* key : {"error message = '", "error string is '"})
      if (const size_t at = desc.find(key); f.system.empty() && at != std::string::npos) {
        const size_t from = at + std::strlen(key), to = desc.find('\'', from);
        f.system = desc.substr(from, to == std::string::npos ? std::string::npos : to - from);
      }
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, visit, &found);
  H5Eclear2(H5E_DEFAULT);
  return found.system.empty() ? found.innermost : found.system;
}

H5Id plist(hid_t cls) {
  return {H5Pcreate(cls), H5Pclose};
}

// The selection of `rects` in the dataspace of a dataset of rank 1 or 2.
void select(hid_t space, int rank, std::span<const Rect> rects) {
  H5Sselect_none(space);
  for (const Rect& r : rects) {
    const hsize_t start2[2] = {r.row, r.col}, count2[2] = {r.rows, r.cols};
    const hsize_t start1[1] = {r.col}, count1[1] = {r.cols};
    H5Sselect_hyperslab(space, H5S_SELECT_OR, rank == 2 ? start2 : start1, nullptr,
                        rank == 2 ? count2 : count1, nullptr);
  }
}

uint64_t elements(std::span<const Rect> rects) {
  uint64_t n = 0;
  for (const Rect& r : rects) n += r.rows * r.cols;
  return n;
}

}  // namespace

void disable_hdf5_exit_handler() {
  H5dont_atexit();
}

H5File::H5File(const std::string& path, Mode mode, MPI_Comm comm)
    : path_(path), parallel_(comm != MPI_COMM_NULL) {
  quiet();
  // A regular file we may read, checked first: HDF5 would block on a FIFO and call a missing,
  // unreadable and corrupt file all the same.
  if (mode == Mode::read) {
    const data::Fd fd = data::open_regular_file(path, "checkpoint");
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0) bytes_ = static_cast<uint64_t>(st.st_size);
  }
  H5Id fapl = plist(H5P_FILE_ACCESS);
  if (parallel_) H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL);
  // Large datasets start on 64 KiB boundaries: whole-page writes, in big runs.
  H5Pset_alignment(fapl.get(), 1 << 16, 1 << 16);
  H5Pset_meta_block_size(fapl.get(), 1 << 20);
  const hid_t id = mode == Mode::create
                       ? H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get())
                       : H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0)
    fail(mode == Mode::create ? "cannot create the file"
                              : "is not an HDF5 file, or it is truncated (not a checkpoint)");
  file_ = H5Id(id, H5Fclose);
  writing_ = mode == Mode::create;
}

H5File::~H5File() {
  if (writing_ && file_.valid()) abandon();
  file_.reset();
}

void H5File::close() {
  if (!file_.valid()) return;
  if (H5Fflush(file_.get(), H5F_SCOPE_LOCAL) < 0) fail("flushing failed");
  if (H5Fclose(file_.release()) < 0) fail("closing failed");
}

void H5File::abandon() {
  // HDF5 flushes what it has cached when it closes a file; where the write failed (a full disk)
  // that fails again, and HDF5 keeps the half-closed file in its tables and crashes on it at
  // exit. Emptying the file first gives the flush the room it needs; the content is lost anyway.
  void* handle = nullptr;
  if (H5Fget_vfd_handle(file_.get(), H5P_DEFAULT, &handle) >= 0 && handle != nullptr) {
    if (parallel_)
      MPI_File_set_size(*static_cast<MPI_File*>(handle), 0);
    else [[maybe_unused]]
      const int rc = ::ftruncate(*static_cast<int*>(handle), 0);
  }
  H5Fclose(file_.release());
  H5Eclear2(H5E_DEFAULT);
}

void H5File::fail(const std::string& what) const {
  const std::string cause = last_cause();
  throw Error(concat(path_, ": ", what, cause.empty() ? "" : " (" + cause + ")"));
}

void H5File::set_attr(const std::string& name, const std::string& value) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<size_t>(value.size(), 1));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(
      H5Acreate2(file_.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
      H5Aclose);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), padded.data()) < 0)
    fail("cannot write attribute " + name);
}

void H5File::set_attr(const std::string& name, int64_t value) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(
      H5Acreate2(file_.get(), name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
      H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0)
    fail("cannot write attribute " + name);
}

bool H5File::has_attr(const std::string& name) const {
  return H5Aexists(file_.get(), name.c_str()) > 0;
}

namespace {

// An attribute of `object` that holds one value (a scalar or one-element dataspace): reading
// anything larger into one value would overrun it.
H5Id open_scalar_attr(hid_t object, const std::string& name,
                      const std::function<void(const std::string&)>& fail) {
  if (H5Aexists(object, name.c_str()) <= 0) fail("attribute \"" + name + "\" is missing");
  H5Id attr(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) fail("cannot open attribute \"" + name + "\"");
  H5Id space(H5Aget_space(attr.get()), H5Sclose);
  if (!space.valid() || H5Sget_simple_extent_npoints(space.get()) != 1)
    fail("attribute \"" + name + "\" is not a single value");
  return attr;
}

}  // namespace

std::string H5File::string_attr(const std::string& name, size_t max_bytes) const {
  const H5Id attr = open_scalar_attr(file_.get(), name, [this](const std::string& w) { fail(w); });
  H5Id type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0)
    fail("attribute \"" + name + "\" is not a fixed-length string");
  const size_t size = H5Tget_size(type.get());
  if (size > max_bytes)
    fail(concat("attribute \"", name, "\" holds ", size, " bytes, more than the ", max_bytes,
                " it may hold"));
  std::string out(size, '\0');
  if (H5Aread(attr.get(), type.get(), out.data()) < 0) fail("cannot read attribute " + name);
  out.resize(std::strlen(out.c_str()));
  return out;
}

int64_t H5File::int_attr(const std::string& name) const {
  const H5Id attr = open_scalar_attr(file_.get(), name, [this](const std::string& w) { fail(w); });
  H5Id type(H5Aget_type(attr.get()), H5Tclose);
  int64_t v = 0;
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0)
    fail("attribute \"" + name + "\" is not an integer");
  return v;
}

std::vector<std::string> H5File::attr_names() const {
  std::vector<std::string> names;
  auto collect = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
  };
  hsize_t at = 0;
  H5Aiterate2(file_.get(), H5_INDEX_NAME, H5_ITER_INC, &at, collect, &names);
  std::sort(names.begin(), names.end());
  return names;
}

void H5File::create_dataset(const std::string& path, std::span<const uint64_t> shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id lcpl = plist(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  H5Id ds(H5Dcreate2(file_.get(), path.c_str(), H5T_IEEE_F32LE, space.get(), lcpl.get(),
                     H5P_DEFAULT, H5P_DEFAULT),
          H5Dclose);
  if (!ds.valid()) fail("cannot create dataset " + path);
}

bool H5File::has(const std::string& path) const {
  // H5Lexists needs every parent to exist.
  size_t at = 0;
  while ((at = path.find('/', at + 1)) != std::string::npos)
    if (H5Lexists(file_.get(), path.substr(0, at).c_str(), H5P_DEFAULT) <= 0) return false;
  return H5Lexists(file_.get(), path.c_str(), H5P_DEFAULT) > 0;
}

H5Id H5File::open_dataset(const std::string& path) const {
  if (!has(path)) fail("dataset " + path + " is missing");
  H5Id ds(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) fail("cannot open dataset " + path);
  return ds;
}

H5File::DatasetInfo H5File::info(const std::string& path) const {
  const H5Id ds = open_dataset(path);
  DatasetInfo out;
  H5Id space(H5Dget_space(ds.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail("cannot read the shape of dataset " + path);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  out.shape.assign(dims.begin(), dims.end());
  H5Id type(H5Dget_type(ds.get()), H5Tclose);
  out.f32 = H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_size(type.get()) == 4;
  H5Id dcpl(H5Dget_create_plist(ds.get()), H5Pclose);
  out.contiguous = dcpl.valid() && H5Pget_layout(dcpl.get()) == H5D_CONTIGUOUS;
  out.storage_bytes = H5Dget_storage_size(ds.get());
  return out;
}

H5File::Transfer H5File::transfer(const std::string& path, std::span<const Rect> rects) const {
  Transfer t{open_dataset(path), {}, {}};
  t.file_space = H5Id(H5Dget_space(t.dataset.get()), H5Sclose);
  select(t.file_space.get(), H5Sget_simple_extent_ndims(t.file_space.get()), rects);
  const hsize_t n = elements(rects);
  t.mem_space = H5Id(H5Screate_simple(1, &n, nullptr), H5Sclose);
  return t;
}

void H5File::write(const std::string& path, std::span<const Rect> rects,
                   std::span<const float> data) {
  MOETRON_CHECK(elements(rects) == data.size(), "write ", path, ": ", data.size(), " values for ",
                elements(rects), " elements");
  if (rects.empty()) return;  // independent transfers: nothing to take part in
  const Transfer t = transfer(path, rects);
  if (H5Dwrite(t.dataset.get(), H5T_NATIVE_FLOAT, t.mem_space.get(), t.file_space.get(),
               H5P_DEFAULT, data.data()) < 0)
    fail("writing dataset " + path + " failed");
}

void H5File::read(const std::string& path, std::span<const Rect> rects,
                  std::span<float> data) const {
  MOETRON_CHECK(elements(rects) == data.size(), "read ", path, ": ", data.size(), " values for ",
                elements(rects), " elements");
  if (rects.empty()) return;
  const Transfer t = transfer(path, rects);
  if (H5Dread(t.dataset.get(), H5T_NATIVE_FLOAT, t.mem_space.get(), t.file_space.get(), H5P_DEFAULT,
              data.data()) < 0)
    fail("reading dataset " + path + " failed (truncated or corrupt file?)");
}

void H5File::set_dataset_attr(const std::string& path, const std::string& name, uint64_t value) {
  const H5Id ds = open_dataset(path);
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(
      H5Acreate2(ds.get(), name.c_str(), H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
      H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), H5T_NATIVE_UINT64, &value) < 0)
    fail("cannot write attribute " + name + " of " + path);
}

uint64_t H5File::dataset_u64_attr(const std::string& path, const std::string& name) const {
  const H5Id ds = open_dataset(path);
  const H5Id attr =
      open_scalar_attr(ds.get(), name, [&](const std::string& w) { fail(path + ": " + w); });
  H5Id type(H5Aget_type(attr.get()), H5Tclose);
  uint64_t v = 0;
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Aread(attr.get(), H5T_NATIVE_UINT64, &v) < 0)
    fail("cannot read " + name + " of " + path);
  return v;
}

std::vector<std::string> H5File::list(const std::string& group) const {
  std::vector<std::string> names;
  if (!has(group)) return names;
  H5Id g(H5Gopen2(file_.get(), group.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) fail("cannot open group " + group);
  auto collect = [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
  };
  H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace moetron::checkpoint
