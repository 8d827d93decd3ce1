// The meta device's communicator (torch's fake process group is the model): a group of `size`
// ranks seen from rank 0 whose collectives move nothing, so layers built on the meta device
// (core/meta_backend.cc) take the paths and allocate the buffers of a parallel layout without
// the processes. Host tensors it is asked to fill (the counts an expert dispatch exchanges) get
// zeros; the plan sizes what depends on them itself (trainer/plan.h).
#pragma once

#include <cstring>
#include <memory>
#include <span>

#include "core/communicator.h"

namespace moetron {

class MetaCommunicator final : public Communicator {
 public:
  MetaCommunicator(std::string name, int size) : Communicator(std::move(name)), size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }

  void all_reduce(Tensor&, ReduceOp) override {}
  void all_gather(const Tensor&, Tensor& out) override { zero_host(out); }
  void all_to_all(const Tensor&, Tensor& recv) override { zero_host(recv); }
  void all_to_all_v(const Tensor&, std::span<const int64_t>, Tensor& recv,
                    std::span<const int64_t>) override {
    zero_host(recv);
  }
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  std::unique_ptr<CommRequest> all_reduce_async(Tensor&) override { return done(); }
  std::unique_ptr<CommRequest> reduce_scatter_async(Tensor&, std::span<const int64_t>) override {
    return done();
  }
  std::unique_ptr<CommRequest> all_gather_async(Tensor&, std::span<const int64_t>) override {
    return done();
  }

 private:
  struct Done final : CommRequest {
    void wait() override {}
    bool test() override { return true; }
  };
  static std::unique_ptr<CommRequest> done() { return std::make_unique<Done>(); }
  static void zero_host(Tensor& t) {
    if (t.defined() && t.device().kind == DeviceKind::cpu) std::memset(t.raw_data(), 0, t.bytes());
  }

  int size_;
};

}  // namespace moetron
