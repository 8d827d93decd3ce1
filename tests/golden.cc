#include "tests/golden.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

#ifndef MOETRON_SOURCE_DIR
#error "MOETRON_SOURCE_DIR must be defined (string literal, the source tree root)"
#endif

namespace moetron::test {
namespace {

// Closes an HDF5 handle with the matching H5*close on scope exit.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle& operator=(Handle&&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Turns off HDF5's automatic error-stack printing once: failures are reported by exceptions.
void quiet_hdf5() {
  static const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)once;
}

[[noreturn]] void fail(const std::string& file, const std::string& what, const std::string& why) {
  throw std::runtime_error("golden " + file + ": " + what + ": " + why);
}

// True when every prefix of the path exists as a link (H5Lexists needs its parents to exist).
bool link_exists(hid_t file, const std::string& path) {
  const bool absolute = !path.empty() && path[0] == '/';
  std::string prefix;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) {
      if (!prefix.empty() || absolute) prefix += '/';
      prefix += path.substr(start, end - start);
      if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    start = end + 1;
  }
  return true;
}

template <typename T>
std::vector<T> read_all(hid_t file, const std::string& fname, const std::string& dataset,
                        hid_t mem_type, const char* kind) {
  if (!link_exists(file, dataset)) fail(fname, dataset, "no such dataset");
  Handle ds(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) fail(fname, dataset, "cannot open dataset");
  Handle type(H5Dget_type(ds.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const bool want_float = mem_type == H5T_NATIVE_FLOAT;
  if (want_float ? cls != H5T_FLOAT : cls != H5T_INTEGER)
    fail(fname, dataset, std::string("is not ") + kind + " data");
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0) fail(fname, dataset, "cannot read its dataspace");
  std::vector<T> out(static_cast<size_t>(n));
  if (n > 0 && H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail(fname, dataset, "H5Dread failed");
  return out;
}

Handle open_root_attr(hid_t file, const std::string& fname, const std::string& name) {
  if (H5Aexists(file, name.c_str()) <= 0) fail(fname, "attribute " + name, "missing");
  Handle attr(H5Aopen(file, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) fail(fname, "attribute " + name, "cannot open");
  return attr;
}

}  // namespace

Golden::Golden(const std::string& path) : path_(path) {
  quiet_hdf5();
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file_ < 0) fail(path_, "file", "cannot open (missing, or not HDF5)");
}

Golden::~Golden() {
  if (file_ >= 0) H5Fclose(file_);
}

Golden::Golden(Golden&& other) noexcept
    : path_(std::move(other.path_)), file_(std::exchange(other.file_, -1)) {}

Golden& Golden::operator=(Golden&& other) noexcept {
  if (this != &other) {
    if (file_ >= 0) H5Fclose(file_);
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, -1);
  }
  return *this;
}

std::vector<float> Golden::floats(const std::string& dataset) const {
  return read_all<float>(file_, path_, dataset, H5T_NATIVE_FLOAT, "float");
}

std::vector<int32_t> Golden::ints(const std::string& dataset) const {
  return read_all<int32_t>(file_, path_, dataset, H5T_NATIVE_INT32, "integer");
}

std::vector<size_t> Golden::shape(const std::string& dataset) const {
  if (!link_exists(file_, dataset)) fail(path_, dataset, "no such dataset");
  Handle ds(H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) fail(path_, dataset, "cannot open dataset");
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail(path_, dataset, "cannot read its dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<size_t>(dims.begin(), dims.end());
}

bool Golden::has(const std::string& dataset) const {
  if (!link_exists(file_, dataset)) return false;
  Handle obj(H5Oopen(file_, dataset.c_str(), H5P_DEFAULT), H5Oclose);
  return obj.ok() && H5Iget_type(obj.get()) == H5I_DATASET;
}

bool Golden::has_attr(const std::string& name) const {
  return H5Aexists(file_, name.c_str()) > 0;
}

double Golden::attr_num(const std::string& name) const {
  Handle attr = open_root_attr(file_, path_, name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_INTEGER && cls != H5T_FLOAT) fail(path_, "attribute " + name, "is not a number");
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    fail(path_, "attribute " + name, "is not a single value");
  double v = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v) < 0)
    fail(path_, "attribute " + name, "H5Aread failed");
  return v;
}

std::string Golden::attr_str(const std::string& name) const {
  Handle attr = open_root_attr(file_, path_, name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) fail(path_, "attribute " + name, "is not a string");
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    fail(path_, "attribute " + name, "is not a single string");
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* s = nullptr;
    if (H5Aread(attr.get(), mem.get(), &s) < 0) fail(path_, "attribute " + name, "H5Aread failed");
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  const size_t size = H5Tget_size(type.get());
  std::string buf(size, '\0');
  Handle mem(H5Tcopy(type.get()), H5Tclose);
  if (H5Aread(attr.get(), mem.get(), buf.data()) < 0)
    fail(path_, "attribute " + name, "H5Aread failed");
  buf.resize(std::min(buf.find('\0'), buf.size()));
  while (!buf.empty() && buf.back() == ' ') buf.pop_back();  // space-padded strings
  return buf;
}

std::vector<std::string> Golden::names(const std::string& group) const {
  const std::string g = group.empty() ? "/" : group;
  if (!link_exists(file_, g)) fail(path_, g, "no such group");
  Handle grp(H5Gopen2(file_, g.c_str(), H5P_DEFAULT), H5Gclose);
  if (!grp.ok()) fail(path_, g, "is not a group");
  H5G_info_t info;
  if (H5Gget_info(grp.get(), &info) < 0) fail(path_, g, "H5Gget_info failed");
  std::vector<std::string> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len =
        H5Lget_name_by_idx(grp.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail(path_, g, "H5Lget_name_by_idx failed");
    std::string name(static_cast<size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(grp.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<size_t>(len));
    out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string golden_path(const std::string& file) {
  return std::string(MOETRON_SOURCE_DIR) + "/tests/reference/goldens/" + file;
}

::testing::AssertionResult all_close(std::span<const float> actual, std::span<const float> expected,
                                     float rtol, float atol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: actual " << actual.size() << " vs expected " << expected.size();
  }
  size_t bad = 0, worst = 0;
  double worst_excess = -INFINITY;  // |a - e| - tol, largest over all elements (NaN: +inf)
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    const double tol = atol + rtol * std::fabs(e);
    const double diff = std::fabs(a - e);
    if (!(diff <= tol)) ++bad;  // NaN never matches
    const double excess = std::isnan(diff) ? INFINITY : diff - tol;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream msg;
  msg.precision(9);
  msg << bad << " of " << actual.size() << " elements differ (rtol " << rtol << ", atol " << atol
      << "); worst at index " << worst << ": actual " << actual[worst] << ", expected "
      << expected[worst] << ", |diff| " << std::fabs(double(actual[worst]) - expected[worst]);
  return ::testing::AssertionFailure() << msg.str();
}

}  // namespace moetron::test
