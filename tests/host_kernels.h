// cpu:1, the CUDA backend's code on the host launchers (make_host_kernels_backend in
// core/backend.h), registered once per test process on first use.
#pragma once

#include "core/backend.h"

namespace moetron::test {

inline Device host_kernels_device() {
  static const Device device = [] {
    std::unique_ptr<Backend> b = make_host_kernels_backend();
    const Device d = b->device();
    register_backend(std::move(b));
    return d;
  }();
  return device;
}

}  // namespace moetron::test
