// bf16 precision at the layers' seam (docs/precision.md): a projection with a bf16 weight is the
// fp32-accumulated GEMM of the bf16-rounded operands, forward and backward, for single and
// grouped (expert) weights; the parameter table keeps bf16 copies of the hidden matrices only.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "configs/moetron.pb.h"
#include "core/bf16.h"
#include "core/check.h"
#include "core/ops.h"
#include "models/decoder.h"
#include "models/linear.h"
#include "models/model.h"
#include "models/params.h"
#include "tests/random_values.h"

namespace moetron {
namespace {

Tensor random_tensor(Shape shape, uint32_t seed) {
  Tensor t = Tensor::empty(std::move(shape));
  const std::vector<float> v = test::random_values(static_cast<size_t>(t.numel()), seed);
  std::copy(v.begin(), v.end(), t.span<float>().begin());
  return t;
}

Tensor to_bf16(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), DType::bf16);
  ops::cast(x, out);
  return out;
}

// The values a bf16 GEMM multiplies: x rounded to bf16, as doubles.
std::vector<double> rounded(const Tensor& x) {
  std::vector<double> out;
  for (float v : x.span<float>()) out.push_back(from_bf16(moetron::to_bf16(v)));
  return out;
}

// sum_k a[i, k] b[j, k] (a [m, k], b [n, k], row-major): x W^T in doubles.
std::vector<double> times_transposed(const std::vector<double>& a, const std::vector<double>& b,
                                     int64_t m, int64_t n, int64_t k) {
  std::vector<double> c(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += a[i * k + p] * b[j * k + p];
      c[i * n + j] = s;
    }
  return c;
}

std::vector<double> transposed(const std::vector<double>& a, int64_t rows, int64_t cols) {
  std::vector<double> t(a.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = a[i * cols + j];
  return t;
}

// Within atol + rtol |want| everywhere.
::testing::AssertionResult near(std::span<const float> got, const std::vector<double>& want,
                                double rtol, double atol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < got.size(); ++i)
    if (std::abs(got[i] - want[i]) > atol + rtol * std::abs(want[i]))
      return ::testing::AssertionFailure()
             << "element " << i << ": " << got[i] << " against " << want[i];
  return ::testing::AssertionSuccess();
}

TEST(Precision, ABf16ProjectionIsTheGemmOfTheRoundedOperands) {
  const int64_t rows = 37, in = 48, out = 40;
  const Tensor x = random_tensor({rows, in}, 1), w = random_tensor({out, in}, 2);
  const Tensor dy = random_tensor({rows, out}, 3), dw0 = random_tensor({out, in}, 4);
  const Tensor w16 = to_bf16(w);
  const std::vector<double> rx = rounded(x), rw = rounded(w), rdy = rounded(dy);

  Tensor y = Tensor::empty({rows, out}), y32 = Tensor::empty({rows, out});
  linear_forward(x, w16, y);
  linear_forward(x, w, y32);
  EXPECT_TRUE(near(y.span<float>(), times_transposed(rx, rw, rows, out, in), 1e-5, 1e-5));
  // Against fp32: two roundings of 2^-9 per product, about 2^-8 sqrt(in) of the terms' size.
  std::vector<double> fp32(y32.span<float>().begin(), y32.span<float>().end());
  EXPECT_TRUE(near(y.span<float>(), fp32, 2e-2, 2e-2 * std::sqrt(in)));

  // dw += r(dy)^T r(x); dx = r(dy) r(w).
  Tensor dw = Tensor::empty(dw0.shape()), dx = Tensor::empty({rows, in});
  ops::copy(dw0, dw);
  linear_backward(dy, x, w16, dw, dx);
  std::vector<double> want_dw =
      times_transposed(transposed(rdy, rows, out), transposed(rx, rows, in), out, in, rows);
  for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] += dw0.span<float>()[i];
  EXPECT_TRUE(near(dw.span<float>(), want_dw, 1e-5, 1e-5));
  EXPECT_TRUE(near(dx.span<float>(), times_transposed(rdy, transposed(rw, out, in), rows, in, out),
                   1e-5, 1e-5));
  // An fp32 weight keeps the fp32 GEMM: the same call, no rounding.
  Tensor dw32 = Tensor::zeros(dw0.shape()), dx32 = Tensor::empty({rows, in});
  linear_backward(dy, x, w, dw32, dx32);
  const std::vector<double> exact_dx = times_transposed(
      std::vector<double>(dy.span<float>().begin(), dy.span<float>().end()),
      transposed(std::vector<double>(w.span<float>().begin(), w.span<float>().end()), out, in),
      rows, in, out);
  EXPECT_TRUE(near(dx32.span<float>(), exact_dx, 1e-5, 1e-5));
}

TEST(Precision, Bf16ExpertsAreGroupedGemmsOfTheRoundedOperands) {
  const int64_t in = 24, out = 16;
  const std::vector<int64_t> offsets{0, 5, 5, 17};  // expert 1 receives no row
  const int64_t rows = offsets.back();
  const Tensor x = random_tensor({rows, in}, 5), dy = random_tensor({rows, out}, 6);
  std::vector<Tensor> ws, ws16, dws;
  for (uint32_t e = 0; e < 3; ++e) {
    ws.push_back(random_tensor({out, in}, 10 + e));
    ws16.push_back(to_bf16(ws.back()));
    dws.push_back(Tensor::zeros({out, in}));
  }
  const Tensor off = ops::from_host(std::span<const int64_t>(offsets));
  Tensor y = Tensor::empty({rows, out}), dx = Tensor::empty({rows, in});
  experts_forward(x, ws16, off, y);
  experts_backward(dy, x, ws16, off, dws, dx);
  const std::vector<double> rx = rounded(x), rdy = rounded(dy);
  for (size_t e = 0; e < 3; ++e) {
    const int64_t begin = offsets[e], n = offsets[e + 1] - begin;
    const std::vector<double> xe(rx.begin() + begin * in, rx.begin() + (begin + n) * in),
        dye(rdy.begin() + begin * out, rdy.begin() + (begin + n) * out), rw = rounded(ws[e]);
    const auto rows_of = [&](const Tensor& t, int64_t cols) {
      return t.span<float>().subspan(static_cast<size_t>(begin * cols),
                                     static_cast<size_t>(n * cols));
    };
    EXPECT_TRUE(near(rows_of(y, out), times_transposed(xe, rw, n, out, in), 1e-5, 1e-5)) << e;
    EXPECT_TRUE(near(rows_of(dx, in), times_transposed(dye, transposed(rw, out, in), n, in, out),
                     1e-5, 1e-5))
        << e;
    const std::vector<double> want_dw =
        n == 0 ? std::vector<double>(static_cast<size_t>(out * in))
               : times_transposed(transposed(dye, n, out), transposed(xe, n, in), out, in, n);
    EXPECT_TRUE(near(dws[e].span<float>(), want_dw, 1e-5, 1e-5)) << e;
  }
}

TEST(Precision, TheTableKeepsBf16CopiesOfTheHiddenMatricesOnly) {
  const auto table = [](DType compute) {
    ParamTable t;
    t.add("model.embed_tokens.weight", {11, 8}, ParamKind::embedding);
    t.add("model.layers.0.self_attn.q_proj.weight", {8, 8}, ParamKind::matrix);
    t.add("model.layers.0.self_attn.k_proj.weight", {4, 8}, ParamKind::matrix);
    t.add("model.norm.weight", {8}, ParamKind::norm);
    t.add("lm_head.weight", {11, 8}, ParamKind::matrix);
    t.allocate({}, {}, compute);
    t.init(7, 0.5f);
    return t;
  };
  ParamTable fp32 = table(DType::f32), bf16 = table(DType::bf16);
  const ParamRef q(&bf16, bf16.find("model.layers.0.self_attn.q_proj.weight")),
      k(&bf16, bf16.find("model.layers.0.self_attn.k_proj.weight"));
  const int head = bf16.find("lm_head.weight");

  EXPECT_EQ(fp32.compute_dtype(), DType::f32);
  EXPECT_EQ(fp32.weight_copies_numel(), 0);
  EXPECT_EQ(fp32.weight(head).raw_data(), fp32.value(head).raw_data());  // weight() is value()
  EXPECT_EQ(bf16.compute_dtype(), DType::bf16);
  EXPECT_EQ(bf16.weight_copies_numel(), 8 * 8 + 4 * 8);  // q and k; not the embedding or head
  EXPECT_THROW((void)bf16.weight(head), Error);
  EXPECT_THROW((void)bf16.weight(bf16.find("model.norm.weight")), Error);

  bf16.cast_weights();
  const Tensor fused = bf16.fused_weight(q, k);
  EXPECT_EQ(fused.dtype(), DType::bf16);
  EXPECT_EQ(fused.shape(), (Shape{12, 8}));
  const Tensor values = bf16.fused_value(q, k);
  for (int64_t i = 0; i < values.numel(); ++i) {
    uint16_t got = 0;
    std::memcpy(&got, static_cast<const uint16_t*>(fused.raw_data()) + i, sizeof got);
    EXPECT_EQ(got, moetron::to_bf16(values.span<float>()[static_cast<size_t>(i)])) << i;
  }
  // The copies follow the masters only when cast again (once per step).
  Tensor qv = q.value();
  ops::scale(qv, 2.0f);
  const auto first = [](const Tensor& t) {
    uint16_t v = 0;
    std::memcpy(&v, t.raw_data(), sizeof v);
    return v;
  };
  EXPECT_EQ(first(q.weight()), moetron::to_bf16(qv.span<float>()[0] / 2.0f));
  bf16.cast_weights();
  EXPECT_EQ(first(q.weight()), moetron::to_bf16(qv.span<float>()[0]));
}

// Decoding multiplies by the fp32 masters (generate builds its model in fp32): a model built for
// bf16 GEMMs is refused, not decoded with copies nothing refreshes.
TEST(Precision, TheDecoderRefusesAModelBuiltForBf16) {
  config::ModelConfig cfg;
  cfg.set_vocab_size(32);
  cfg.set_hidden_size(16);
  cfg.set_num_hidden_layers(1);
  cfg.set_num_attention_heads(2);
  cfg.set_intermediate_size(32);
  Runtime rt;
  rt.compute = DType::bf16;
  Model bf16(cfg, 1, 1, rt), fp32(cfg, 1, 1);
  try {
    Decoder d(bf16, 8);
    ADD_FAILURE() << "a bf16 model was decoded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decodes in fp32"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(Decoder(fp32, 8));
}

}  // namespace
}  // namespace moetron
