#include "core/tensor.h"

#include "core/backend.h"

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>

namespace moetron {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 4;
    case DType::bf16:
    case DType::f16:
      return 2;
    case DType::i32:
      return 4;
    case DType::i64:
    case DType::f64:
      return 8;
    case DType::u8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::f64:
      return "f64";
    case DType::u8:
      return "u8";
  }
  return "?";
}

std::string device_name(Device device) {
  switch (device.kind) {
    case DeviceKind::cpu:  // cpu:1 is the device backend's code on the host (core/backend.h)
      return device.index == 0 ? "cpu" : "cpu:" + std::to_string(device.index);
    case DeviceKind::cuda:
      return "cuda:" + std::to_string(device.index);
    case DeviceKind::meta:
      return "meta";
  }
  return "?";
}

Device parse_device(std::string_view name) {
  const auto indexed = [&](std::string_view kind, DeviceKind k) -> std::optional<Device> {
    if (name == kind) return Device{k, 0};
    if (!name.starts_with(kind) || name.size() <= kind.size() + 1 || name[kind.size()] != ':')
      return std::nullopt;
    int index = 0;
    const char* first = name.data() + kind.size() + 1;
    const auto [end, ec] = std::from_chars(first, name.data() + name.size(), index);
    if (ec != std::errc() || end != name.data() + name.size() || index < 0) return std::nullopt;
    return Device{k, index};
  };
  if (const auto d = indexed("cpu", DeviceKind::cpu)) return *d;
  if (const auto d = indexed("cuda", DeviceKind::cuda)) return *d;
  throw Error(detail::concat("device \"", name, "\" (valid: cpu, cuda, cuda:N)"));
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Storage::Storage(size_t bytes, Device device)
    : data_(backend(device).allocate(bytes)), bytes_(bytes), device_(device) {}

Storage::~Storage() {
  backend(device_).release(data_, bytes_);
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  for (int64_t d : shape) MOETRON_CHECK(d >= 0, "negative dim in ", shape_str(shape));
  Tensor t;
  t.storage_ = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  backend(device).zero_bytes(t.storage_->data(), t.bytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  MOETRON_CHECK(i >= 0 && i < n, "dim ", i, " of a ", n, "-d tensor");
  return shape_[i];
}

Tensor Tensor::view(int64_t offset, Shape shape) const {
  MOETRON_CHECK(defined(), "view of an undefined tensor");
  MOETRON_CHECK(offset >= 0 && offset + shape_numel(shape) <= numel(), "view at ", offset, " of ",
                shape_str(shape), " exceeds ", shape_str(shape_));
  Tensor t = *this;
  t.offset_ = offset_ + offset;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  MOETRON_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "slice [", begin,
                ", ", end, ") of ", shape_str(shape_));
  Shape s = shape_;
  s[0] = end - begin;
  return view(begin * (numel() / std::max<int64_t>(shape_[0], 1)), std::move(s));
}

}  // namespace moetron
