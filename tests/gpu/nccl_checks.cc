#include "tests/gpu/nccl_checks.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/comm_parts.h"
#include "core/cuda/device.h"
#include "core/cuda/nccl.h"
#include "tests/random_values.h"

namespace moetron::gpu {

std::vector<KernelCheck> run_nccl_checks() {
  cuda::NcclComm comm(cuda::nccl_unique_id(), 1, 0);
  const std::vector<float> x = test::random_values(4099, 41);
  const std::vector<int64_t> one{static_cast<int64_t>(x.size())};
  const CommParts whole = comm_parts(one);
  std::vector<KernelCheck> out;
  const auto same = [&](const std::vector<float>& got) { return got == x ? 0.0 : INFINITY; };
  {
    cuda::DeviceFloats d(x);
    comm.all_reduce(d.get(), static_cast<int64_t>(x.size()), CommType::f32, false);
    out.push_back({"nccl all_reduce (1 rank)", same(d.to_host()), 0});
  }
  {
    cuda::DeviceFloats d(x);
    comm.reduce_scatter(d.get(), whole);
    comm.all_gather(d.get(), whole);
    out.push_back({"nccl reduce_scatter, all_gather (1 rank)", same(d.to_host()), 0});
  }
  {
    cuda::DeviceFloats send(x), recv(x.size());
    comm.all_to_all_v(send.get(), whole, recv.get(), whole, CommType::f32);
    comm.broadcast(recv.get(), static_cast<int64_t>(x.size()), CommType::f32, 0);
    out.push_back({"nccl all_to_all_v, broadcast (1 rank)", same(recv.to_host()), 0});
  }
  return out;
}

}  // namespace moetron::gpu
