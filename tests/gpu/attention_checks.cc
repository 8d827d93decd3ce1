#include "tests/gpu/attention_checks.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/cuda/attention_graph.h"
#include "core/cuda/device.h"
#include "tests/bf16_values.h"
#include "tests/compare.h"
#include "tests/gpu/attention_reference.h"
#include "tests/random_values.h"

namespace moetron::gpu {
namespace {

// Random values already on the bf16 grid, so device and reference read the same inputs.
std::vector<float> bf16_values(size_t n, uint32_t seed) {
  return test::on_bf16_grid(test::random_values(n, seed));
}

struct Case {
  const char* name;
  cuda::AttentionShape shape;
};

// One case's forward and backward against the double reference, its rows added to `out`.
void check_case(const cuda::CudnnHandle& handle, const cuda::AttentionShape& s,
                const std::string& name, std::vector<KernelCheck>& out) {
  const size_t nq = s.batch * s.seq * s.heads * s.head_dim;
  const size_t nk = s.batch * s.seq * s.kv_heads * s.head_dim;
  const size_t nv = s.batch * s.seq * s.kv_heads * s.value_dim;
  const size_t no = s.batch * s.seq * s.heads * s.value_dim;
  const size_t nstat = s.batch * s.heads * s.seq;
  const std::vector<float> q = bf16_values(nq, 21), k = bf16_values(nk, 22),
                           v = bf16_values(nv, 23), dout = bf16_values(no, 24);
  const AttentionResult want = attention_reference(s, q, k, v);
  const AttentionGrads grads = attention_reference_backward(s, q, k, v, dout);

  const cuda::AttentionGraphs graphs(handle, s);
  cuda::DeviceArray<uint16_t> d_q(test::bf16_words(q)), d_k(test::bf16_words(k)),
      d_v(test::bf16_words(v)), d_dout(test::bf16_words(dout));
  cuda::DeviceArray<uint16_t> d_out(no), d_dq(nq), d_dk(nk), d_dv(nv);
  cuda::DeviceFloats d_lse(nstat), d_max(nstat);
  cuda::DeviceArray<uint8_t> workspace(std::max<size_t>(graphs.workspace_bytes(), 1));
  graphs.forward(d_q.get(), d_k.get(), d_v.get(), d_out.get(), d_lse.get(),
                 s.row_max ? d_max.get() : nullptr, workspace.get());
  graphs.backward(d_q.get(), d_k.get(), d_v.get(), d_out.get(), d_dout.get(), d_lse.get(),
                  d_dq.get(), d_dk.get(), d_dv.get(), workspace.get());
  // Bounds: bf16 outputs (2^-9 per element) from fp32 accumulation over bf16 probabilities;
  // the fp32 statistics only see the bf16 inputs' products. First guesses until a GPU run.
  out.push_back(
      {name + " out", test::relative_to_largest(test::widened(d_out.to_host()), want.out), 1e-2});
  out.push_back({name + " lse", test::relative_to_largest(d_lse.to_host(), want.lse), 1e-4});
  if (s.row_max)
    out.push_back(
        {name + " row_max", test::relative_to_largest(d_max.to_host(), want.row_max), 1e-4});
  out.push_back(
      {name + " dq", test::relative_to_largest(test::widened(d_dq.to_host()), grads.dq), 2e-2});
  out.push_back(
      {name + " dk", test::relative_to_largest(test::widened(d_dk.to_host()), grads.dk), 2e-2});
  out.push_back(
      {name + " dv", test::relative_to_largest(test::widened(d_dv.to_host()), grads.dv), 2e-2});
}

}  // namespace

std::vector<KernelCheck> run_attention_checks(int scale) {
  const int64_t seq = std::max<int64_t>(128 / scale, 16);
  const Case cases[] = {
      {"gqa 8/2 d64", {2, seq, 8, 2, 64, 64, 0.125f, false}},
      {"mla 4 heads 192/128 row_max", {1, seq, 4, 4, 192, 128, 1.0f / std::sqrt(192.0f), true}},
  };
  const cuda::CudnnHandle handle;
  std::vector<KernelCheck> out;
  for (const Case& c : cases) {
    const std::string name = std::string("attention ") + c.name;
    try {  // a case cuDNN cannot build or run fails alone; the others still report
      check_case(handle, c.shape, name, out);
    } catch (const std::exception& e) {
      std::printf("cuDNN attention %s: %s\n", c.name, e.what());
      out.push_back({name + " (cuDNN error above)", INFINITY, 0});
    }
  }
  return out;
}

}  // namespace moetron::gpu
