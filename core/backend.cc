#include "core/backend.h"

#include <mutex>

#include "core/check.h"
#if MOETRON_HAVE_CUDA
#include "core/cuda/device.h"
#endif

namespace moetron {
namespace {

// The backends of this process: the CPU's from the start, others as they register. A backend
// is never removed, so a reference to one stays valid.
struct Registry {
  std::mutex mutex;
  std::vector<std::unique_ptr<Backend>> backends;
  Registry() {
    backends.push_back(make_cpu_backend());
#if MOETRON_HAVE_CUDA
    if (cuda::device_count() > 0) backends.push_back(make_cuda_backend());
#endif
  }
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

Backend& backend(Device device) {
  Registry& r = registry();
  if (device == Device{}) return *r.backends.front();  // no lock on the hot path
  if (device.kind == DeviceKind::meta) return meta_backend();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& b : r.backends)
    if (b->device() == device) return *b;
  throw Error("device " + device_name(device) +
              " has no backend in this process (this build or this machine has no such device)");
}

Backend& backend_of(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Device device = (*tensors.begin())->device();
  for (const Tensor* t : tensors)
    MOETRON_CHECK(!t->defined() || t->device() == device, op, ": a tensor on ",
                  device_name(t->device()), " beside one on ", device_name(device));
  return backend(device);
}

std::vector<Backend*> backends() {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<Backend*> out;
  for (const auto& b : r.backends) out.push_back(b.get());
  return out;
}

void register_backend(std::unique_ptr<Backend> b) {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& existing : r.backends)
    MOETRON_CHECK(existing->device() != b->device(), "a second backend for ",
                  device_name(b->device()));
  r.backends.push_back(std::move(b));
}

}  // namespace moetron
