// The op harness's cases for linear attention (core/ops_linear_attention.h), the sigmoid gate
// and partial RoPE, each with a double reference written from the definitions (the gated delta
// rule's is the naive recurrence, so the chunked backward is held to the exact gradient of the
// recurrence).
#include <cmath>
#include <vector>

#include "core/ops.h"
#include "core/ops_linear_attention.h"
#include "tests/core/op_harness.h"
#include "tests/rope_tables.h"

namespace moetron::op_harness {
namespace {

double dsigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}
double dsoftplus(double x) {
  return x > 20.0 ? x : std::log1p(std::exp(x));
}

// The gated delta rule's test sizes: three chunks, the last partial (a gradient crosses two chunk
// edges, through a non-zero state); two value heads per key head.
constexpr int64_t kB = 2, kT = 140, kHk = 1, kHv = 2, kDk = 4, kDv = 3;
const Shape kQ{kB, kT, kHk, kDk}, kV{kB, kT, kHv, kDv}, kG{kB, kT, kHv};

// Per value head, S [dk, dv] from zero: S <- e^g S; S += k (beta (v - S^T k))^T; o = S^T q.
Values dref_gated_delta(const Values& q, const Values& k, const Values& v, const Values& g,
                        const Values& beta) {
  Values out(static_cast<size_t>(kB * kT * kHv * kDv));
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t h = 0; h < kHv; ++h) {
      const int64_t hk = h / (kHv / kHk);
      Values s(static_cast<size_t>(kDk * kDv), 0.0);
      for (int64_t t = 0; t < kT; ++t) {
        const double* qt = &q[static_cast<size_t>(((b * kT + t) * kHk + hk) * kDk)];
        const double* kt = &k[static_cast<size_t>(((b * kT + t) * kHk + hk) * kDk)];
        const double* vt = &v[static_cast<size_t>(((b * kT + t) * kHv + h) * kDv)];
        const double alpha = std::exp(g[(b * kT + t) * kHv + h]), bt = beta[(b * kT + t) * kHv + h];
        for (double& x : s) x *= alpha;
        for (int64_t n = 0; n < kDv; ++n) {
          double sk = 0;
          for (int64_t m = 0; m < kDk; ++m) sk += s[m * kDv + n] * kt[m];
          const double u = bt * (vt[n] - sk);
          for (int64_t m = 0; m < kDk; ++m) s[m * kDv + n] += kt[m] * u;
        }
        for (int64_t n = 0; n < kDv; ++n) {
          double o = 0;
          for (int64_t m = 0; m < kDk; ++m) o += s[m * kDv + n] * qt[m];
          out[static_cast<size_t>(((b * kT + t) * kHv + h) * kDv + n)] = o;
        }
      }
    }
  return out;
}

// Unit-norm keys (what the layer feeds the rule), beta in (0.1, 0.9), and decays near 1 (g in
// (-0.05, -0.002)), so that a chunk's state still matters a chunk later (e^{G} over 64 steps
// about 0.2; strong decays would hide the gradient that crosses the chunk edge).
std::vector<Tensor> delta_inputs(std::mt19937& gen) {
  Tensor q = random_tensor(kQ, gen, 0.5f), k = random_tensor(kQ, gen);
  for (int64_t r = 0; r < k.numel() / kDk; ++r) {
    float* row = k.data<float>() + r * kDk;
    float ss = 0;
    for (int64_t m = 0; m < kDk; ++m) ss += row[m] * row[m];
    for (int64_t m = 0; m < kDk; ++m) row[m] /= std::sqrt(ss);
  }
  Tensor v = random_tensor(kV, gen), g = Tensor::empty(kG), beta = Tensor::empty(kG);
  std::uniform_real_distribution<float> decay(0.002f, 0.05f), write(0.1f, 0.9f);
  for (float& x : g.span<float>()) x = -decay(gen);
  for (float& x : beta.span<float>()) x = write(gen);
  return {q, k, v, g, beta};
}

Shape states_shape() {
  return {kB, kHv, (kT + ops::kGatedDeltaChunk - 1) / ops::kGatedDeltaChunk + 1, kDk, kDv};
}

void add_gated_delta(std::vector<GradCase>& cases) {
  auto fwd = [](const std::vector<Tensor>& in) {
    Tensor out = poisoned(kV), states = poisoned(states_shape());
    ops::gated_delta_forward(in[0], in[1], in[2], in[3], in[4], out, states);
    return out;
  };
  cases.push_back({"gated_delta_chunked", delta_inputs, fwd,
                   [](const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor out = poisoned(kV), states = poisoned(states_shape());
                     ops::gated_delta_forward(in[0], in[1], in[2], in[3], in[4], out, states);
                     std::vector<Tensor> d{poisoned(kQ), poisoned(kQ), poisoned(kV), poisoned(kG),
                                           poisoned(kG)};
                     ops::gated_delta_backward(dy, in[0], in[1], in[2], in[3], in[4], states, d[0],
                                               d[1], d[2], d[3], d[4]);
                     return d;
                   }});
  cases.back().reference = [](const std::vector<Values>& in) {
    return dref_gated_delta(in[0], in[1], in[2], in[3], in[4]);
  };
}

// x [2, 6, 5], w [5, 3]: pre[t, c] = sum_j w[c, j] x[t - 2 + j, c], y = silu(pre).
void add_conv(std::vector<GradCase>& cases) {
  constexpr int64_t B = 2, T = 6, C = 5, K = 3;
  auto fwd = [](const std::vector<Tensor>& in) {
    Tensor pre = poisoned(in[0].shape()), y = poisoned(in[0].shape());
    ops::conv_silu_forward(in[0], in[1], pre, y);
    return y;
  };
  cases.push_back(
      {"conv_silu",
       [](std::mt19937& g) {
         return std::vector<Tensor>{random_tensor({B, T, C}, g), random_tensor({C, K}, g, 0.7f)};
       },
       fwd,
       [](const std::vector<Tensor>& in, const Tensor& dy) {
         Tensor pre = poisoned(in[0].shape()), y = poisoned(in[0].shape());
         ops::conv_silu_forward(in[0], in[1], pre, y);
         Tensor dx = poisoned(in[0].shape()), dw = zeros(in[1].shape());
         ops::conv_silu_backward(dy, in[0], in[1], pre, dx, dw);
         return std::vector<Tensor>{dx, dw};
       }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y(static_cast<size_t>(B * T * C));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) {
          double p = 0;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t src = t - (K - 1) + j;
            if (src >= 0) p += in[1][c * K + j] * in[0][(b * T + src) * C + c];
          }
          y[static_cast<size_t>((b * T + t) * C + c)] = p * dsigmoid(p);
        }
    return y;
  };
}

void add_l2norm(std::vector<GradCase>& cases) {
  constexpr float kScale = 0.35f;
  cases.push_back({"l2norm",
                   [](std::mt19937& g) {
                     return std::vector<Tensor>{random_tensor({6, 8}, g)};
                   },
                   [](const std::vector<Tensor>& in) {
                     Tensor y = poisoned(in[0].shape()), r = poisoned({6});
                     ops::l2norm_forward(in[0], 1e-6f, kScale, y, r);
                     return y;
                   },
                   [](const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor y = poisoned(in[0].shape()), r = poisoned({6});
                     ops::l2norm_forward(in[0], 1e-6f, kScale, y, r);
                     Tensor dx = poisoned(in[0].shape());
                     ops::l2norm_backward(dy, in[0], r, kScale, dx);
                     return std::vector<Tensor>{dx};
                   }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y(in[0].size());
    for (int64_t r = 0; r < 6; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < 8; ++c) ss += in[0][r * 8 + c] * in[0][r * 8 + c];
      for (int64_t c = 0; c < 8; ++c)
        y[r * 8 + c] = kScale * in[0][r * 8 + c] / std::sqrt(ss + 1e-6);
    }
    return y;
  };
}

// Both gates in one output [2, rows, H]: g, then beta.
void add_gates(std::vector<GradCase>& cases) {
  constexpr int64_t R = 5, H = 3;
  auto run = [](const std::vector<Tensor>& in, Tensor& both) {
    Tensor g = both.view(0, {R, H}), beta = both.view(R * H, {R, H});
    ops::gdn_gates_forward(in[0], in[1], in[2], in[3], g, beta);
  };
  cases.push_back(
      {"gdn_gates",
       [](std::mt19937& g) {
         return std::vector<Tensor>{random_tensor({R, H}, g), random_tensor({R, H}, g),
                                    random_tensor({H}, g, 0.5f), random_tensor({H}, g, 0.5f)};
       },
       [=](const std::vector<Tensor>& in) {
         Tensor both = poisoned({2, R, H});
         run(in, both);
         return both;
       },
       [=](const std::vector<Tensor>& in, const Tensor& dy) {
         Tensor both = poisoned({2, R, H});
         run(in, both);
         const Tensor beta = both.view(R * H, {R, H});
         Tensor da = poisoned({R, H}), db = poisoned({R, H}), dlog = zeros({H}), ddt = zeros({H});
         ops::gdn_gates_backward(dy.view(0, {R, H}), dy.view(R * H, {R, H}), in[0], in[2], in[3],
                                 beta, da, db, dlog, ddt);
         return std::vector<Tensor>{da, db, dlog, ddt};
       }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y(static_cast<size_t>(2 * R * H));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        y[r * H + h] = -std::exp(in[2][h]) * dsoftplus(in[0][r * H + h] + in[3][h]);
        y[R * H + r * H + h] = dsigmoid(in[1][r * H + h]);
      }
    return y;
  };
}

void add_gated_rmsnorm(std::vector<GradCase>& cases) {
  constexpr int64_t R = 6, D = 8;
  constexpr float kEps = 1e-5f;
  auto fwd = [](const std::vector<Tensor>& in) {
    Tensor y = poisoned(in[0].shape()), r = poisoned({R});
    ops::gated_rmsnorm_forward(in[0], in[1], in[2], kEps, y, r);
    return y;
  };
  cases.push_back(
      {"gated_rmsnorm",
       [](std::mt19937& g) {
         Tensor w = random_tensor({D}, g, 0.3f);
         for (float& x : w.span<float>()) x += 1.0f;
         return std::vector<Tensor>{random_tensor({R, D}, g), random_tensor({R, D}, g), w};
       },
       fwd,
       [](const std::vector<Tensor>& in, const Tensor& dy) {
         Tensor y = poisoned(in[0].shape()), r = poisoned({R});
         ops::gated_rmsnorm_forward(in[0], in[1], in[2], kEps, y, r);
         Tensor dx = poisoned(in[0].shape()), dz = poisoned(in[1].shape()), dw = zeros({D});
         ops::gated_rmsnorm_backward(dy, in[0], in[1], in[2], r, dx, dz, dw);
         return std::vector<Tensor>{dx, dz, dw};
       }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y(in[0].size());
    for (int64_t r = 0; r < R; ++r) {
      double ms = 0;
      for (int64_t c = 0; c < D; ++c) ms += in[0][r * D + c] * in[0][r * D + c];
      const double inv = 1.0 / std::sqrt(ms / D + kEps);
      for (int64_t c = 0; c < D; ++c) {
        const double z = in[1][r * D + c];
        y[r * D + c] = in[0][r * D + c] * inv * in[2][c] * z * dsigmoid(z);
      }
    }
    return y;
  };
}

void add_sigmoid_gate(std::vector<GradCase>& cases) {
  for (const int64_t width : {int64_t{7}, int64_t{1}}) {
    auto fwd = [](const std::vector<Tensor>& in) {
      Tensor y = poisoned(in[0].shape());
      ops::sigmoid_gate(in[0], in[1], y);
      return y;
    };
    cases.push_back(
        {width == 1 ? "sigmoid_gate_per_row" : "sigmoid_gate",
         [=](std::mt19937& g) {
           return std::vector<Tensor>{random_tensor({4, 7}, g), random_tensor({4, width}, g)};
         },
         fwd,
         [](const std::vector<Tensor>& in, const Tensor& dy) {
           Tensor dx = poisoned(in[0].shape()), dg = poisoned(in[1].shape());
           ops::sigmoid_gate_backward(dy, in[0], in[1], dx, dg);
           return std::vector<Tensor>{dx, dg};
         }});
    cases.back().reference = [=](const std::vector<Values>& in) {
      Values y(in[0].size());
      for (int64_t r = 0; r < 4; ++r)
        for (int64_t c = 0; c < 7; ++c)
          y[r * 7 + c] = in[0][r * 7 + c] * dsigmoid(in[1][r * width + (width == 1 ? 0 : c)]);
      return y;
    };
  }
}

// Partial RoPE: the first 4 of 8 dims of each head turn (rotate-half within them), the rest pass.
void add_partial_rope(std::vector<GradCase>& cases) {
  auto tables = [](Tensor& cos, Tensor& sin) { test::plain_rope_tables(4, 10000.0f, cos, sin); };
  cases.push_back({"rope_partial",
                   [](std::mt19937& g) {
                     return std::vector<Tensor>{random_tensor({2, 5, 3, 8}, g)};
                   },
                   [=](const std::vector<Tensor>& in) {
                     Tensor cos = poisoned({5, 2}), sin = poisoned({5, 2});
                     tables(cos, sin);
                     Tensor y = poisoned(in[0].shape());
                     ops::copy(in[0], y);
                     ops::rope(y, cos, sin, ops::RopeStyle::rotate_half, false);
                     return y;
                   },
                   [=](const std::vector<Tensor>&, const Tensor& dy) {
                     Tensor cos = poisoned({5, 2}), sin = poisoned({5, 2});
                     tables(cos, sin);
                     Tensor dx = poisoned(dy.shape());
                     ops::copy(dy, dx);
                     ops::rope(dx, cos, sin, ops::RopeStyle::rotate_half, true);
                     return std::vector<Tensor>{dx};
                   }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y = in[0];
    for (int64_t row = 0; row < 2 * 5 * 3; ++row) {
      const int64_t t = (row / 3) % 5;
      for (int64_t j = 0; j < 2; ++j) {
        const double angle = static_cast<double>(t) / std::pow(10000.0, 2.0 * j / 4);
        const int64_t a = row * 8 + j, b = row * 8 + j + 2;
        y[a] = in[0][a] * std::cos(angle) - in[0][b] * std::sin(angle);
        y[b] = in[0][b] * std::cos(angle) + in[0][a] * std::sin(angle);
      }
    }
    return y;
  };
}

}  // namespace

std::vector<GradCase> linear_attention_cases() {
  std::vector<GradCase> cases;
  add_gated_delta(cases);
  add_conv(cases);
  add_l2norm(cases);
  add_gates(cases);
  add_gated_rmsnorm(cases);
  add_sigmoid_gate(cases);
  add_partial_rope(cases);
  return cases;
}

}  // namespace moetron::op_harness

namespace moetron::op_harness {
namespace {

// The recurrent (decoding) form against the chunked (training) form: three chunks, the last
// partial, fed to the recurrence in two pieces that cross a chunk edge.
TEST(OpForward, GatedDeltaRecurrentFormMatchesTheChunkedForm) {
  constexpr int64_t B = 2, T = 150, Hk = 2, Hv = 4, Dk = 8, Dv = 6, kSplit = 97;
  std::mt19937 gen(5);
  Tensor q = random_tensor({B, T, Hk, Dk}, gen, 0.3f),
         k = random_tensor({B, T, Hk, Dk}, gen, 0.35f);
  Tensor v = random_tensor({B, T, Hv, Dv}, gen), g = Tensor::empty({B, T, Hv}),
         beta = Tensor::empty({B, T, Hv});
  std::uniform_real_distribution<float> decay(0.01f, 0.3f), write(0.1f, 0.9f);
  for (float& x : g.span<float>()) x = -decay(gen);
  for (float& x : beta.span<float>()) x = write(gen);
  const int64_t chunks = (T + ops::kGatedDeltaChunk - 1) / ops::kGatedDeltaChunk;
  Tensor out = poisoned({B, T, Hv, Dv}), states = poisoned({B, Hv, chunks + 1, Dk, Dv});
  ops::gated_delta_forward(q, k, v, g, beta, out, states);
  for (int64_t b = 0; b < B; ++b) {
    Tensor state = zeros({Hv, Dk, Dv}), step_out = poisoned({T, Hv, Dv});
    for (const auto& [t0, t1] : {std::pair<int64_t, int64_t>{0, kSplit}, {kSplit, T}}) {
      auto rows = [&](const Tensor& x, int64_t heads, int64_t width) {
        return x.view((b * T + t0) * heads * width, {t1 - t0, heads, width});
      };
      Tensor o = step_out.view(t0 * Hv * Dv, {t1 - t0, Hv, Dv});
      ops::gated_delta_step(rows(q, Hk, Dk), rows(k, Hk, Dk), rows(v, Hv, Dv),
                            g.view((b * T + t0) * Hv, {t1 - t0, Hv}),
                            beta.view((b * T + t0) * Hv, {t1 - t0, Hv}), state, o);
    }
    EXPECT_TRUE(close(step_out.span<float>(), to_double(out.view(b * T * Hv * Dv, {T * Hv * Dv})),
                      1e-5, 1e-6))
        << "outputs, batch " << b;
    for (int64_t h = 0; h < Hv; ++h) {
      const Tensor final_state =
          states.view(((b * Hv + h) * (chunks + 1) + chunks) * Dk * Dv, {Dk * Dv});
      EXPECT_TRUE(close(state.view(h * Dk * Dv, {Dk * Dv}).span<float>(), to_double(final_state),
                        1e-5, 1e-6))
          << "final state, batch " << b << " head " << h;
    }
  }
}

TEST(OpForward, ConvStepMatchesTheTrainingConv) {
  constexpr int64_t T = 9, C = 7, K = 4;
  std::mt19937 gen(6);
  const Tensor x = random_tensor({1, T, C}, gen), w = random_tensor({C, K}, gen);
  Tensor pre = poisoned({1, T, C}), y = poisoned({1, T, C});
  ops::conv_silu_forward(x, w, pre, y);
  Tensor state = zeros({K - 1, C}), ys = poisoned({T, C});
  for (const auto& [t0, t1] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}, {3, T}}) {
    Tensor yo = ys.view(t0 * C, {t1 - t0, C});
    ops::conv_silu_step(x.view(t0 * C, {t1 - t0, C}), w, state, yo);
  }
  EXPECT_TRUE(close(ys.span<float>(), to_double(y), 1e-6, 1e-7));
}

}  // namespace
}  // namespace moetron::op_harness
