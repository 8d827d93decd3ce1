// Tensor: contiguous storage + dtype + shape + device. Views share storage (offset + shape);
// there are no strides beyond contiguous, so every kernel sees plain row-major memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"

namespace moetron {

enum class DType : uint8_t { f32, bf16, f16, i32, i64, u8, f64 };
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::u8;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}

// meta: tensors with a shape and no memory, for planning (core/meta_backend.cc): a model built
// on it counts what it would allocate and runs nothing.
enum class DeviceKind : uint8_t { cpu, cuda, meta };
struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
};
std::string device_name(Device device);
// The device a name gives: "cpu", "cuda" (= "cuda:0"), "cuda:N", "cpu:N" (cpu:1 is the device
// backend's code on the host, core/backend.h); throws Error naming `name` and what is valid.
// Whether this build and machine have its backend is backend()'s to say.
Device parse_device(std::string_view name);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// Owns one allocation; freed when the last Tensor viewing it goes away.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype = DType::f32, Device device = {});
  static Tensor zeros(Shape shape, DType dtype = DType::f32, Device device = {});

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device{}; }
  // The 2-D view every matrix op uses: leading dims flattened into rows.
  int64_t cols() const { return shape_.empty() ? 1 : shape_.back(); }
  int64_t rows() const { return shape_.empty() ? 1 : (cols() == 0 ? 0 : numel() / cols()); }

  // A view of `shape` starting `offset` elements into this tensor.
  Tensor view(int64_t offset, Shape shape) const;
  Tensor reshape(Shape shape) const { return view(0, std::move(shape)); }
  // Rows [begin, end) along dim 0.
  Tensor slice(int64_t begin, int64_t end) const;

  template <typename T>
  T* data() const {
    MOETRON_CHECK(dtype_of<T>() == dtype_, "tensor is ", dtype_name(dtype_));
    return reinterpret_cast<T*>(static_cast<char*>(storage_->data()) +
                                offset_ * static_cast<int64_t>(dtype_size(dtype_)));
  }
  // The first byte, whatever the dtype (for code that moves bytes: communication, I/O).
  void* raw_data() const {
    return static_cast<char*>(storage_->data()) +
           offset_ * static_cast<int64_t>(dtype_size(dtype_));
  }
  template <typename T>
  std::span<T> span() const {
    return {data<T>(), static_cast<size_t>(numel())};
  }

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::f32;
};

}  // namespace moetron
