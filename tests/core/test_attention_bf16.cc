// Causal attention with bf16 operands (ops::attention_forward / attention_backward with
// operands = bf16, the dtype plan of docs/precision.md): the CPU against a double reference of
// that plan, and every backend present against the CPU. On the CUDA backend this is cuDNN's
// fused attention where the build has cuDNN; on cpu:1 the device backend's own kernels on
// rounded copies.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/bf16.h"
#include "core/ops.h"
#include "tests/core/op_harness.h"
#include "tests/host_kernels.h"

namespace moetron {
namespace {

using namespace op_harness;  // NOLINT(google-build-using-namespace): the harness itself

struct Dims {
  std::string name;
  int64_t batch, seq, heads, kv_heads, head_dim, value_dim;
  float scale;
};

// T = 70 spans two of the CPU's query blocks; MLA's shape has values narrower than keys.
const std::vector<Dims> kDims = {{"gqa", 2, 70, 4, 2, 8, 8, 0.35355339f},
                                 {"mla", 1, 70, 4, 4, 12, 6, 0.37f}};

double round_bf16(double x) {
  return from_bf16(to_bf16(static_cast<float>(x)));
}
Values rounded(const Tensor& t) {
  Values r = to_double(t);
  for (double& x : r) x = round_bf16(x);
  return r;
}

struct Reference {
  Values out, lse, dq, dk, dv;
};

// The plan in double: attention of r(q), r(k), r(v); backward with dO = r(dout) and D =
// rowsum(dO * O) from `out` as the op wrote it. Unrounded results: the test allows the rounding.
Reference reference(const Dims& d, const Values& q, const Values& k, const Values& v,
                    const Values& dout, const Values& out) {
  const int64_t T = d.seq, H = d.heads, KV = d.kv_heads, hd = d.head_dim, dv = d.value_dim;
  Reference r{Values(out.size(), 0.0), Values(static_cast<size_t>(d.batch * H * T)),
              Values(q.size(), 0.0), Values(k.size(), 0.0), Values(v.size(), 0.0)};
  auto qi = [&](int64_t b, int64_t t, int64_t h) { return ((b * T + t) * H + h) * hd; };
  auto ki = [&](int64_t b, int64_t t, int64_t g) { return ((b * T + t) * KV + g) * hd; };
  auto vi = [&](int64_t b, int64_t t, int64_t g) { return ((b * T + t) * KV + g) * dv; };
  auto oi = [&](int64_t b, int64_t t, int64_t h) { return ((b * T + t) * H + h) * dv; };
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int64_t i = 0; i < T; ++i) {
        Values p(static_cast<size_t>(i + 1));
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t c = 0; c < hd; ++c) s += q[qi(b, i, h) + c] * k[ki(b, j, g) + c];
          p[j] = s * d.scale;
          mx = std::max(mx, p[j]);
        }
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (double& x : p) x /= sum;
        r.lse[(b * H + h) * T + i] = mx + std::log(sum);
        double dsum = 0;
        for (int64_t c = 0; c < dv; ++c) {
          for (int64_t j = 0; j <= i; ++j) r.out[oi(b, i, h) + c] += p[j] * v[vi(b, j, g) + c];
          dsum += dout[oi(b, i, h) + c] * out[oi(b, i, h) + c];
        }
        for (int64_t j = 0; j <= i; ++j) {
          double dp = 0;
          for (int64_t c = 0; c < dv; ++c) {
            dp += dout[oi(b, i, h) + c] * v[vi(b, j, g) + c];
            r.dv[vi(b, j, g) + c] += p[j] * dout[oi(b, i, h) + c];
          }
          const double ds = p[j] * (dp - dsum) * d.scale;
          for (int64_t c = 0; c < hd; ++c) {
            r.dq[qi(b, i, h) + c] += ds * k[ki(b, j, g) + c];
            r.dk[ki(b, j, g) + c] += ds * q[qi(b, i, h) + c];
          }
        }
      }
    }
  return r;
}

// q, k, v and an upstream gradient, N(0, 1).
std::pair<std::vector<Tensor>, Tensor> inputs(const Dims& d, unsigned seed) {
  std::mt19937 gen(seed);
  std::vector<Tensor> in{random_tensor({d.batch, d.seq, d.heads, d.head_dim}, gen),
                         random_tensor({d.batch, d.seq, d.kv_heads, d.head_dim}, gen),
                         random_tensor({d.batch, d.seq, d.kv_heads, d.value_dim}, gen)};
  Tensor dout = random_tensor({d.batch, d.seq, d.heads, d.value_dim}, gen);
  return {std::move(in), std::move(dout)};
}

struct Results {
  Tensor out, lse, dq, dk, dv;
};

Results run(const Dims& d, const std::vector<Tensor>& in, const Tensor& dout, DType operands,
            Device device) {
  const OnDevice on(device);
  const Tensor q = ops::to_device(in[0], device), k = ops::to_device(in[1], device),
               v = ops::to_device(in[2], device), dy = ops::to_device(dout, device);
  Results r{poisoned(dout.shape()), poisoned({d.batch, d.heads, d.seq}), poisoned(q.shape()),
            poisoned(k.shape()), poisoned(v.shape())};
  ops::attention_forward(q, k, v, d.scale, r.out, r.lse, nullptr, operands);
  ops::attention_backward(dy, q, k, v, d.scale, r.out, r.lse, r.dq, r.dk, r.dv, operands);
  for (Tensor* t : {&r.out, &r.lse, &r.dq, &r.dk, &r.dv}) *t = ops::to_device(*t, Device{});
  return r;
}

double largest(const Values& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// A bf16 result within one bf16 step of the exact value (2^-7 of it: the rounding's half step
// plus the fp32 sums' error, which may carry it across a rounding boundary) and on the bf16 grid.
void expect_bf16_of(const Tensor& got, const Values& exact, const char* what) {
  for (float x : got.span<float>()) ASSERT_EQ(x, from_bf16(to_bf16(x))) << what << " off the grid";
  EXPECT_TRUE(close(got.span<float>(), exact, 1.0 / 128, 1e-6 * largest(exact))) << what;
}

TEST(Bf16Attention, TheCpuIsThePlanInDouble) {
  for (const Dims& d : kDims) {
    SCOPED_TRACE(d.name);
    const auto [in, dout] = inputs(d, 7);
    const Results got = run(d, in, dout, DType::bf16, Device{});
    const Reference want = reference(d, rounded(in[0]), rounded(in[1]), rounded(in[2]),
                                     rounded(dout), to_double(got.out));
    expect_bf16_of(got.out, want.out, "out");
    EXPECT_TRUE(close(got.lse.span<float>(), want.lse, 1e-5, 1e-6)) << "lse";
    expect_bf16_of(got.dq, want.dq, "dq");
    expect_bf16_of(got.dk, want.dk, "dk");
    expect_bf16_of(got.dv, want.dv, "dv");
    // The fp32 operands give other results: the dtype is not ignored.
    const Results f32 = run(d, in, dout, DType::f32, Device{});
    EXPECT_FALSE(close(f32.out.span<float>(), to_double(got.out), 0, 0));
    EXPECT_FALSE(close(f32.dq.span<float>(), to_double(got.dq), 0, 0));
  }
}

// cpu:1 runs the fp32 kernels on rounded copies, as the CPU does, in its own summation order:
// a result may round the other way, one bf16 step. The CUDA backend runs cuDNN, which also rounds
// the probabilities to bf16 before they multiply V: held to 2e-2 of each tensor's largest, a
// first estimate until a GPU has run it (docs/gpu.md).
TEST(Bf16Attention, EveryBackendMatchesTheCpu) {
  const Device host_kernels = test::host_kernels_device();
  const std::vector<Backend*> all = backends();
  ASSERT_TRUE(
      std::any_of(all.begin(), all.end(), [&](Backend* b) { return b->device() == host_kernels; }));
  for (const Dims& d : kDims) {
    const auto [in, dout] = inputs(d, 11);
    const Results cpu = run(d, in, dout, DType::bf16, Device{});
    for (Backend* b : all) {
      if (b->device() == Device{}) continue;
      SCOPED_TRACE(d.name + " on " + b->name());
      const Results got = run(d, in, dout, DType::bf16, b->device());
      const bool host = b->device().kind == DeviceKind::cpu;
      const auto expect_matches = [&](const Tensor& g, const Tensor& want, const char* what) {
        const Values w = to_double(want);
        EXPECT_TRUE(host ? close(g.span<float>(), w, 1.0 / 128, 1e-6 * largest(w))
                         : close(g.span<float>(), w, 0, 2e-2 * largest(w)))
            << what;
      };
      expect_matches(got.out, cpu.out, "out");
      EXPECT_TRUE(close(got.lse.span<float>(), to_double(cpu.lse), 1e-5, 1e-5)) << "lse";
      expect_matches(got.dq, cpu.dq, "dq");
      expect_matches(got.dk, cpu.dk, "dk");
      expect_matches(got.dv, cpu.dv, "dv");
    }
  }
}

}  // namespace
}  // namespace moetron
