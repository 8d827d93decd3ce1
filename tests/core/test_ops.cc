// The op-conformance harness. Every op case runs on every backend present and is compared with
// an independent double-precision reference written here; its gradient mode checks each op's
// backward against central finite differences of L = sum(forward(x) * dy). Adding an op means
// adding one case to kCases, not a new test.
#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cpu/kernels.h"
#include "core/ops.h"
#include "core/ops_decode.h"
#include "core/threads.h"
#include "tests/core/op_harness.h"
#include "tests/host_kernels.h"
#include "tests/rope_tables.h"

namespace moetron {
namespace {

using namespace op_harness;  // NOLINT(google-build-using-namespace): the harness itself

// ---------------------------------------------------------------------------------------------
// Double references of the gradient cases' forwards (written from the definitions in
// docs/model.md and core/ops.h, not from the kernels).

Values dref_matmul(const Values& a, bool ta, const Values& b, bool tb, int64_t m, int64_t n,
                   int64_t k) {
  Values c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        c[i * n + j] += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
  return c;
}

Values dref_rmsnorm(const Values& x, const Values& w, int64_t rows, double eps) {
  const int64_t d = static_cast<int64_t>(w.size());
  Values y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t c = 0; c < d; ++c) ms += x[r * d + c] * x[r * d + c];
    const double inv = 1.0 / std::sqrt(ms / static_cast<double>(d) + eps);
    for (int64_t c = 0; c < d; ++c) y[r * d + c] = x[r * d + c] * inv * w[c];
  }
  return y;
}

// x [B, T, H, hd]; pair j is (j, j + hd/2) or (2j, 2j + 1); angle = t / theta^(2j / hd).
Values dref_rope(const Values& x, int64_t B, int64_t T, int64_t H, int64_t hd, double theta,
                 bool interleaved) {
  Values y = x;
  const int64_t half = hd / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < half; ++j) {
          const double angle = static_cast<double>(t) / std::pow(theta, 2.0 * j / hd);
          const int64_t base = ((b * T + t) * H + h) * hd;
          const int64_t ia = base + (interleaved ? 2 * j : j);
          const int64_t ib = base + (interleaved ? 2 * j + 1 : j + half);
          y[ia] = x[ia] * std::cos(angle) - x[ib] * std::sin(angle);
          y[ib] = x[ib] * std::cos(angle) + x[ia] * std::sin(angle);
        }
  return y;
}

// q, k [B, T, H or KV, hd], v [B, T, KV, dv] -> [B, T, H, dv]; scores scale * q.k.
Values dref_attention(const Values& q, const Values& k, const Values& v, int64_t B, int64_t T,
                      int64_t H, int64_t KV, int64_t hd, int64_t dv, double scale) {
  Values out(static_cast<size_t>(B * T * H * dv));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int64_t i = 0; i < T; ++i) {
        Values s(static_cast<size_t>(i + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t c = 0; c < hd; ++c)
            d += q[((b * T + i) * H + h) * hd + c] * k[((b * T + j) * KV + g) * hd + c];
          s[j] = d * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));
        for (int64_t c = 0; c < dv; ++c) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j) o += s[j] / sum * v[((b * T + j) * KV + g) * dv + c];
          out[((b * T + i) * H + h) * dv + c] = o;
        }
      }
    }
  return out;
}
Values dref_attention(const Values& q, const Values& k, const Values& v, int64_t B, int64_t T,
                      int64_t H, int64_t KV, int64_t hd) {
  return dref_attention(q, k, v, B, T, H, KV, hd, hd, 1.0 / std::sqrt(static_cast<double>(hd)));
}

// The references on the fp32 tensors of the forward tests.
Values ref_matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, int64_t m, int64_t n,
                  int64_t k) {
  return dref_matmul(to_double(a), ta, to_double(b), tb, m, n, k);
}
// out [B,T,H,hd] of causal attention with GQA.
Values ref_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  return dref_attention(to_double(q), to_double(k), to_double(v), q.dim(0), q.dim(1), q.dim(2),
                        k.dim(2), q.dim(3));
}

// Mean over rows of -log softmax(logits)[target], logits [rows, vocab].
double dref_mean_ce(const Values& logits, std::span<const int32_t> targets, int64_t vocab) {
  double total = 0;
  const auto rows = static_cast<int64_t>(targets.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t c = 0; c < vocab; ++c) mx = std::max(mx, logits[r * vocab + c]);
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(logits[r * vocab + c] - mx);
    total += std::log(sum) + mx - logits[r * vocab + targets[static_cast<size_t>(r)]];
  }
  return total / static_cast<double>(rows);
}

constexpr float kScale8 = 0.35355339f;  // 1 / sqrt(8)

std::vector<GradCase> grad_cases() {
  std::vector<GradCase> cases;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const std::string name = std::string("matmul_") + (ta ? "T" : "N") + (tb ? "T" : "N");
      cases.push_back({name,
                       [=](std::mt19937& g) {
                         return std::vector<Tensor>{
                             random_tensor(ta ? Shape{7, 5} : Shape{5, 7}, g),
                             random_tensor(tb ? Shape{9, 7} : Shape{7, 9}, g)};
                       },
                       [=](const std::vector<Tensor>& in) {
                         Tensor c = poisoned({5, 9});
                         ops::matmul(in[0], ta, in[1], tb, c);
                         return c;
                       },
                       [=](const std::vector<Tensor>& in, const Tensor& dy) {
                         Tensor da = poisoned(in[0].shape()), db = poisoned(in[1].shape());
                         // d(op(A)) = dy op(B)^T ; d(op(B)) = op(A)^T dy, transposed back where
                         // needed.
                         if (ta)
                           ops::matmul(in[1], tb, dy, true, da);
                         else
                           ops::matmul(dy, false, in[1], !tb, da);
                         if (tb)
                           ops::matmul(dy, true, in[0], ta, db);
                         else
                           ops::matmul(in[0], !ta, dy, false, db);
                         return std::vector<Tensor>{da, db};
                       }});
      cases.back().reference = [=](const std::vector<Values>& in) {
        return dref_matmul(in[0], ta, in[1], tb, 5, 9, 7);
      };
    }
  cases.push_back({"rmsnorm",
                   [](std::mt19937& g) {
                     Tensor w = random_tensor({24}, g, 0.3f);
                     for (float& x : w.span<float>()) x += 1.0f;
                     return std::vector<Tensor>{random_tensor({6, 24}, g), w};
                   },
                   [](const std::vector<Tensor>& in) {
                     Tensor y = poisoned(in[0].shape()), r = poisoned({6});
                     ops::rmsnorm_forward(in[0], in[1], 1e-5f, y, r);
                     return y;
                   },
                   [](const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor y = poisoned(in[0].shape()), r = poisoned({6});
                     ops::rmsnorm_forward(in[0], in[1], 1e-5f, y, r);
                     Tensor dx = poisoned(in[0].shape()), dw = zeros({24});
                     ops::rmsnorm_backward(dy, in[0], in[1], r, dx, dw, false);
                     return std::vector<Tensor>{dx, dw};
                   }});
  cases.back().reference = [](const std::vector<Values>& in) {
    return dref_rmsnorm(in[0], in[1], 6, 1e-5);
  };
  for (auto style : {ops::RopeStyle::rotate_half, ops::RopeStyle::interleaved}) {
    const std::string name =
        style == ops::RopeStyle::rotate_half ? "rope_rotate_half" : "rope_interleaved";
    auto fwd = [=](const std::vector<Tensor>& in) {
      Tensor cos = poisoned({5, 4}), sin = poisoned({5, 4});
      test::plain_rope_tables(8, 10000.0f, cos, sin);
      Tensor y = poisoned(in[0].shape());
      ops::copy(in[0], y);
      ops::rope(y, cos, sin, style, false);
      return y;
    };
    cases.push_back({name,
                     [](std::mt19937& g) {
                       return std::vector<Tensor>{random_tensor({2, 5, 3, 8}, g)};
                     },
                     fwd,
                     [=](const std::vector<Tensor>&, const Tensor& dy) {
                       Tensor cos = poisoned({5, 4}), sin = poisoned({5, 4});
                       test::plain_rope_tables(8, 10000.0f, cos, sin);
                       Tensor dx = poisoned(dy.shape());
                       ops::copy(dy, dx);
                       ops::rope(dx, cos, sin, style, true);
                       return std::vector<Tensor>{dx};
                     }});
    cases.back().reference = [=](const std::vector<Values>& in) {
      return dref_rope(in[0], 2, 5, 3, 8, 10000.0, style == ops::RopeStyle::interleaved);
    };
  }
  for (int64_t kv : {4, 2, 1}) {
    // T = 70 spans two query blocks with a ragged edge.
    auto make = [=](std::mt19937& g) {
      return std::vector<Tensor>{random_tensor({2, 70, 4, 8}, g), random_tensor({2, 70, kv, 8}, g),
                                 random_tensor({2, 70, kv, 8}, g)};
    };
    auto fwd = [](const std::vector<Tensor>& in) {
      Tensor out = poisoned(in[0].shape()), lse = poisoned({2, 4, 70});
      ops::attention_forward(in[0], in[1], in[2], kScale8, out, lse);
      return out;
    };
    cases.push_back({"attention_kv" + std::to_string(kv), make, fwd,
                     [=](const std::vector<Tensor>& in, const Tensor& dy) {
                       Tensor out = poisoned(in[0].shape()), lse = poisoned({2, 4, 70});
                       ops::attention_forward(in[0], in[1], in[2], kScale8, out, lse);
                       Tensor dq = poisoned(in[0].shape()), dk = poisoned(in[1].shape()),
                              dv = poisoned(in[2].shape());
                       ops::attention_backward(dy, in[0], in[1], in[2], kScale8, out, lse, dq, dk,
                                               dv);
                       return std::vector<Tensor>{dq, dk, dv};
                     }});
    cases.back().reference = [=](const std::vector<Values>& in) {
      return dref_attention(in[0], in[1], in[2], 2, 70, 4, kv, 8);
    };
  }
  {
    // MLA's shape: values narrower than the keys (dv 6, hd 12) and a scale of its own.
    constexpr float scale = 0.37f;
    auto make = [](std::mt19937& g) {
      return std::vector<Tensor>{random_tensor({2, 70, 4, 12}, g), random_tensor({2, 70, 4, 12}, g),
                                 random_tensor({2, 70, 4, 6}, g)};
    };
    auto fwd = [](const std::vector<Tensor>& in) {
      Tensor out = poisoned({2, 70, 4, 6}), lse = poisoned({2, 4, 70});
      ops::attention_forward(in[0], in[1], in[2], scale, out, lse);
      return out;
    };
    cases.push_back(
        {"attention_dv_scale", make, fwd, [](const std::vector<Tensor>& in, const Tensor& dy) {
           Tensor out = poisoned({2, 70, 4, 6}), lse = poisoned({2, 4, 70});
           ops::attention_forward(in[0], in[1], in[2], scale, out, lse);
           Tensor dq = poisoned(in[0].shape()), dk = poisoned(in[1].shape()),
                  dv = poisoned(in[2].shape());
           ops::attention_backward(dy, in[0], in[1], in[2], scale, out, lse, dq, dk, dv);
           return std::vector<Tensor>{dq, dk, dv};
         }});
    cases.back().reference = [](const std::vector<Values>& in) {
      return dref_attention(in[0], in[1], in[2], 2, 70, 4, 4, 12, 6, scale);
    };
  }
  for (const bool broadcast : {false, true}) {
    // concat_heads (b of one head broadcast: MLA's shared key); its gradient is split_heads.
    const int64_t hb = broadcast ? 1 : 3;
    cases.push_back(
        {broadcast ? "concat_heads_broadcast" : "concat_heads",
         [=](std::mt19937& g) {
           return std::vector<Tensor>{random_tensor({5, 3, 4}, g), random_tensor({5, hb, 2}, g)};
         },
         [](const std::vector<Tensor>& in) {
           Tensor y = poisoned({5, 3, 6});
           ops::concat_heads(in[0], in[1], y);
           return y;
         },
         [=](const std::vector<Tensor>&, const Tensor& dy) {
           Tensor da = poisoned({5, 3, 4}), db = poisoned({5, hb, 2});
           ops::split_heads(dy, da, db);
           return std::vector<Tensor>{da, db};
         }});
    cases.back().reference = [=](const std::vector<Values>& in) {
      Values y(5 * 3 * 6);
      for (int64_t i = 0; i < 5; ++i)
        for (int64_t h = 0; h < 3; ++h)
          for (int64_t c = 0; c < 6; ++c)
            y[(i * 3 + h) * 6 + c] = c < 4 ? in[0][(i * 3 + h) * 4 + c]
                                           : in[1][(i * hb + (broadcast ? 0 : h)) * 2 + c - 4];
      return y;
    };
  }
  cases.push_back({"transpose01",
                   [](std::mt19937& g) {
                     return std::vector<Tensor>{random_tensor({4, 3, 5}, g)};
                   },
                   [](const std::vector<Tensor>& in) {
                     Tensor y = poisoned({3, 4, 5});
                     ops::transpose01(in[0], y);
                     return y;
                   },
                   [](const std::vector<Tensor>&, const Tensor& dy) {
                     Tensor dx = poisoned({4, 3, 5});
                     ops::transpose01(dy, dx);
                     return std::vector<Tensor>{dx};
                   }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y(60);
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t c = 0; c < 5; ++c) y[(j * 4 + i) * 5 + c] = in[0][(i * 3 + j) * 5 + c];
    return y;
  };
  cases.push_back({"swiglu",
                   [](std::mt19937& g) {
                     return std::vector<Tensor>{random_tensor({5, 2 * 12}, g, 2.0f)};
                   },
                   [](const std::vector<Tensor>& in) {
                     Tensor y = poisoned({5, 12});
                     ops::swiglu_forward(in[0], y);
                     return y;
                   },
                   [](const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor d = poisoned(in[0].shape());
                     ops::swiglu_backward(dy, in[0], d);
                     return std::vector<Tensor>{d};
                   }});
  cases.back().reference = [](const std::vector<Values>& in) {
    Values y(5 * 12);
    for (int64_t r = 0; r < 5; ++r)
      for (int64_t c = 0; c < 12; ++c) {
        const double g = in[0][r * 24 + c], u = in[0][r * 24 + 12 + c];
        y[r * 12 + c] = g / (1 + std::exp(-g)) * u;
      }
    return y;
  };
  {
    // 300 rows x 37 vocab: several chunks never align with the row count.
    static const std::vector<int32_t> targets = [] {
      std::vector<int32_t> t(300);
      for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 7 + 3) % 37);
      return t;
    }();
    auto loss_tensor = [](const std::vector<Tensor>& in, Tensor* dh, Tensor* dw, float scale) {
      Tensor ws = poisoned({ops::ce_workspace_size(300, 37, t_case_device)});
      // The mean keeps the float objective precise enough for finite differences.
      const double l = summed([&](Tensor& sum) {
        ops::head_cross_entropy(in[0], in[1], i32(targets), scale / 300, dh, dw, ws, sum);
      });
      return scalar(l / 300);
    };
    cases.push_back(
        {"head_cross_entropy",
         [](std::mt19937& g) {
           return std::vector<Tensor>{random_tensor({300, 16}, g),
                                      random_tensor({37, 16}, g, 0.5f)};
         },
         [=](const std::vector<Tensor>& in) { return loss_tensor(in, nullptr, nullptr, 0); },
         [=](const std::vector<Tensor>& in, const Tensor& dy) {
           Tensor dh = poisoned(in[0].shape()), dw = zeros(in[1].shape());
           loss_tensor(in, &dh, &dw, value_of(dy));
           return std::vector<Tensor>{dh, dw};
         },
         2e-2, 1e-3});
    cases.back().reference = [](const std::vector<Values>& in) {
      return Values{dref_mean_ce(dref_matmul(in[0], false, in[1], true, 300, 37, 16), targets, 37)};
    };
  }
  {
    // A tensor-parallel block of the embedding: rows for ids 3..8 of a vocabulary of 10, the
    // last row padding; ids of other blocks give zero rows and no gradient.
    static const std::vector<int32_t> ids{0, 3, 8, 9, 5, 3, 2};
    const ops::VocabShard shard{3, 6, 10};
    cases.push_back({"embedding_shard",
                     [](std::mt19937& g) {
                       return std::vector<Tensor>{random_tensor({7, 4}, g)};
                     },
                     [=](const std::vector<Tensor>& in) {
                       Tensor y = poisoned({7, 4});
                       ops::embedding_forward(i32(ids), in[0], y, shard);
                       return y;
                     },
                     [=](const std::vector<Tensor>& in, const Tensor& dy) {
                       Tensor d = zeros(in[0].shape());
                       ops::embedding_backward(i32(ids), dy, d, shard);
                       return std::vector<Tensor>{d};
                     }});
    cases.back().reference = [](const std::vector<Values>& in) {
      Values y(7 * 4, 0.0);  // rows of ids 3..8 of the block; others zero
      for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] >= 3 && ids[i] < 9)
          for (int64_t c = 0; c < 4; ++c) y[i * 4 + c] = in[0][(ids[i] - 3) * 4 + c];
      return y;
    };
  }
  {
    // Vocabulary-parallel cross-entropy over two blocks of 4 columns of a vocabulary of 7 (the
    // second block has one padding column), against finite differences of the mean loss.
    static const std::vector<int32_t> targets{0, 6, 3, 4, 1};
    auto blocks = [](const Tensor& logits) {
      return std::array<Tensor, 2>{logits.view(0, {5, 4}), logits.view(20, {5, 4})};
    };
    const std::array<ops::VocabShard, 2> shards{ops::VocabShard{0, 4, 7}, ops::VocabShard{4, 3, 7}};
    auto loss = [=](const Tensor& logits, Tensor& lse) {
      Tensor all = poisoned({2, 5, 3});
      for (int b = 0; b < 2; ++b) {
        Tensor stats = all.view(b * 15, {5, 3});
        ops::ce_shard_stats(blocks(logits)[b], i32(targets), shards[b], stats);
      }
      return summed([&](Tensor& sum) { ops::ce_combine_stats(all, lse, sum); });
    };
    cases.push_back(
        {"vocab_parallel_ce",
         // The input holds both blocks one after the other: [2 blocks x 5 rows x 4 columns].
         [](std::mt19937& g) { return std::vector<Tensor>{random_tensor({40}, g, 2.0f)}; },
         [=](const std::vector<Tensor>& in) {
           Tensor lse = poisoned({5});
           return scalar(loss(in[0], lse) / 5);
         },
         [=](const std::vector<Tensor>& in, const Tensor& dy) {
           Tensor lse = poisoned({5}), d = poisoned({40});
           loss(in[0], lse);
           ops::copy(in[0], d);
           for (int b = 0; b < 2; ++b) {
             Tensor block = blocks(d)[b];
             ops::ce_shard_backward(block, i32(targets), shards[b], lse, value_of(dy) / 5);
           }
           return std::vector<Tensor>{d};
         },
         2e-2, 1e-3});
    cases.back().reference = [](const std::vector<Values>& in) {
      Values logits(5 * 7);  // block 0 is columns 0-3, block 1 columns 4-6 (its 4th is padding)
      for (int64_t r = 0; r < 5; ++r)
        for (int64_t c = 0; c < 7; ++c)
          logits[r * 7 + c] = c < 4 ? in[0][r * 4 + c] : in[0][20 + r * 4 + (c - 4)];
      return Values{dref_mean_ce(logits, targets, 7)};
    };
  }
  for (GradCase& c : linear_attention_cases()) cases.push_back(std::move(c));
  return cases;
}

class OpGradient : public ::testing::TestWithParam<GradCase> {};

TEST_P(OpGradient, BackwardMatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  std::mt19937 gen(42);
  std::vector<Tensor> in = c.make_inputs(gen);
  const Tensor y = c.forward(in);
  const Tensor dy = random_tensor(y.shape(), gen);
  const std::vector<Tensor> grads = c.backward(in, dy);
  ASSERT_EQ(grads.size(), in.size());
  auto objective = [&] {
    const Tensor out = c.forward(in);
    double s = 0;
    for (int64_t i = 0; i < out.numel(); ++i)
      s += static_cast<double>(out.span<float>()[i]) * dy.span<float>()[i];
    return s;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    if (!grads[i].defined()) continue;
    const auto x = in[i].span<float>();
    // Up to 40 coordinates per input, spread over the tensor.
    const int64_t n = in[i].numel(), stride = std::max<int64_t>(1, n / 40);
    double max_grad = 0;
    for (float gval : grads[i].span<float>()) max_grad = std::max(max_grad, std::abs(double{gval}));
    for (int64_t j = 0; j < n; j += stride) {
      const float orig = x[j];
      const float h = 1e-2f * std::max(1.0f, std::abs(orig));
      x[j] = orig + h;
      const double up = objective();
      x[j] = orig - h;
      const double down = objective();
      x[j] = orig;
      const double fd = (up - down) / (2.0 * static_cast<double>(h));
      const double an = grads[i].span<float>()[j];
      EXPECT_NEAR(an, fd, c.atol + c.rtol * std::max(std::abs(fd), 0.1 * max_grad))
          << c.name << " input " << i << " element " << j;
    }
  }
}

// The same backward against the exact gradient: central differences of the double reference
// (h = 1e-4: truncation error about 1e-9 of the gradient), every element within 1e-4 relative
// or 1e-5 of the largest gradient of its input (seen: within 2e-7 of the largest).
TEST_P(OpGradient, BackwardMatchesTheDoubleReference) {
  const GradCase& c = GetParam();
  ASSERT_TRUE(c.reference) << c.name << " has no double reference";
  std::mt19937 gen(42);
  std::vector<Tensor> in = c.make_inputs(gen);
  const Tensor y = c.forward(in);
  const Tensor dy = random_tensor(y.shape(), gen);
  const std::vector<Tensor> grads = c.backward(in, dy);
  std::vector<Values> x;
  x.reserve(in.size());
  for (const Tensor& t : in) x.push_back(to_double(t));
  const Values dyd = to_double(dy);
  auto objective = [&] {
    const Values out = c.reference(x);
    EXPECT_EQ(out.size(), dyd.size()) << c.name;
    double s = 0;
    for (size_t i = 0; i < out.size() && i < dyd.size(); ++i) s += out[i] * dyd[i];
    return s;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    if (!grads[i].defined()) continue;
    const auto n = static_cast<int64_t>(x[i].size()), stride = std::max<int64_t>(1, n / 40);
    double max_grad = 0;
    for (float g : grads[i].span<float>()) max_grad = std::max(max_grad, std::abs(double{g}));
    for (int64_t j = 0; j < n; j += stride) {
      const double orig = x[i][j], h = 1e-4 * std::max(1.0, std::abs(orig));
      x[i][j] = orig + h;
      const double up = objective();
      x[i][j] = orig - h;
      const double down = objective();
      x[i][j] = orig;
      const double exact = (up - down) / (2 * h), an = grads[i].span<float>()[j];
      EXPECT_NEAR(an, exact, 1e-4 * std::abs(exact) + 1e-5 * max_grad)
          << c.name << " input " << i << " element " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpGradient, ::testing::ValuesIn(grad_cases()),
                         [](const auto& info) { return info.param.name; });

// The backend axis: every case on every backend this process has (backends(): the CPU's, the
// CUDA backend where the build and the machine have a GPU, and cpu:1, the CUDA backend's code on
// the host launchers, registered here), forward and backward, against the same case on the
// CPU, which the tests above hold to the double references. On the CPU itself the results must
// be bitwise the CPU's (the same kernels; the path through the backend table and the device
// copies is what is under test); on another backend within 1e-4 relative plus 1e-5 of the
// largest element.
std::vector<Backend*> harness_backends() {
  test::host_kernels_device();
  return backends();
}

class OpBackends : public ::testing::TestWithParam<GradCase> {};

TEST_P(OpBackends, EveryCaseOnEveryBackendMatchesTheCpu) {
  const GradCase& c = GetParam();
  std::mt19937 gen(42);
  const std::vector<Tensor> in = c.make_inputs(gen);
  const Tensor y = c.forward(in);
  const Tensor dy = random_tensor(y.shape(), gen);
  const std::vector<Tensor> grads = c.backward(in, dy);
  const std::vector<Backend*> all = harness_backends();
  ASSERT_TRUE(std::any_of(all.begin(), all.end(), [](Backend* b) {
    return b->device() == Device{DeviceKind::cpu, 1};
  }));
  for (Backend* b : all) {
    const Device device = b->device();
    SCOPED_TRACE(c.name + " on " + b->name());
    const OnDevice on(device);
    std::vector<Tensor> din;
    din.reserve(in.size());
    for (const Tensor& t : in) din.push_back(ops::to_device(t, device));
    const Tensor dyd = ops::to_device(dy, device);
    const Tensor yd = c.forward(din);
    const std::vector<Tensor> gd = c.backward(din, dyd);
    auto expect_matches = [&](const Tensor& got_device, const Tensor& want,
                              const std::string& what) {
      ASSERT_EQ(got_device.device(), device) << what << " left the device";
      const Tensor got = ops::to_device(got_device, Device{});
      if (device == Device{}) {
        EXPECT_TRUE(std::equal(got.span<float>().begin(), got.span<float>().end(),
                               want.span<float>().begin()))
            << what << " differs from the CPU's";
        return;
      }
      double largest = 0;
      for (float v : want.span<float>()) largest = std::max(largest, std::abs(double{v}));
      EXPECT_TRUE(close(got.span<float>(), to_double(want), 1e-4, 1e-5 * largest)) << what;
    };
    expect_matches(yd, y, "forward");
    ASSERT_EQ(gd.size(), grads.size());
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i].defined()) expect_matches(gd[i], grads[i], "gradient " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpBackends, ::testing::ValuesIn(grad_cases()),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------------
// Forward conformance against the double references, over shape classes.

TEST(OpForward, MatmulAllTransposesAndShapes) {
  std::mt19937 gen(1);
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {3, 5, 7}, {64, 48, 33}, {129, 65, 257}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, gen);
        const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, gen);
        Tensor c = random_tensor({m, n}, gen);
        std::vector<double> expect = ref_matmul(a, ta, b, tb, m, n, k);
        const std::vector<double> c0 = to_double(c);
        for (size_t i = 0; i < expect.size(); ++i) expect[i] = 0.5 * expect[i] + 2.0 * c0[i];
        ops::matmul(a, ta, b, tb, c, 0.5f, 2.0f);
        EXPECT_TRUE(close(c.span<float>(), expect, 1e-4, 1e-4))
            << m << "x" << n << "x" << k << " ta=" << ta << " tb=" << tb;
      }
}

// bf16 operands: against the double product of the values bf16 holds (what the GEMM was given)
// to fp32 accumulation, and against the fp32 operands they were rounded from to bf16's 8 bits.
TEST(OpForward, Bf16MatmulAllTransposesAndShapes) {
  std::mt19937 gen(3);
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {3, 5, 7}, {64, 48, 33}, {129, 65, 257}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, gen);
        const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, gen);
        Tensor a16 = Tensor::empty(a.shape(), DType::bf16),
               b16 = Tensor::empty(b.shape(), DType::bf16);
        ops::cast(a, a16);
        ops::cast(b, b16);
        Tensor ar = Tensor::empty(a.shape()), br = Tensor::empty(b.shape());
        ops::cast(a16, ar);
        ops::cast(b16, br);
        Tensor c = random_tensor({m, n}, gen);
        const std::vector<double> c0 = to_double(c);
        std::vector<double> held = ref_matmul(ar, ta, br, tb, m, n, k);
        std::vector<double> exact = ref_matmul(a, ta, b, tb, m, n, k);
        for (size_t i = 0; i < held.size(); ++i) {
          held[i] = 0.5 * held[i] + 2.0 * c0[i];
          exact[i] = 0.5 * exact[i] + 2.0 * c0[i];
        }
        ops::matmul(a16, ta, b16, tb, c, 0.5f, 2.0f);
        const std::string what = std::to_string(m) + "x" + std::to_string(n) + "x" +
                                 std::to_string(k) + (ta ? " ta" : "") + (tb ? " tb" : "");
        EXPECT_TRUE(close(c.span<float>(), held, 1e-4, 1e-4)) << what;
        // Each product carries two roundings of 2^-9: about 2^-8 sqrt(k) of the terms' size.
        EXPECT_TRUE(close(c.span<float>(), exact, 2e-2, 2e-2 * std::sqrt(k))) << what;
      }
}

TEST(OpForward, CastRoundsToNearestEvenAndWidensExactly) {
  const std::vector<float> values{1.0f,
                                  std::bit_cast<float>(0x3f808000u),  // a tie: even below
                                  std::bit_cast<float>(0x3f818000u),  // a tie: even above
                                  std::bit_cast<float>(0x3f808001u),  // just above the tie
                                  -std::bit_cast<float>(0x3f808001u),
                                  std::numeric_limits<float>::max(),  // rounds to infinity
                                  -std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::denorm_min()};
  const std::vector<uint16_t> expect{0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf81, 0x7f80, 0xff80, 0};
  const Tensor x = ops::from_host(std::span<const float>(values));
  Tensor h = Tensor::empty(x.shape(), DType::bf16), back = Tensor::empty(x.shape());
  ops::cast(x, h);
  ops::cast(h, back);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t got = static_cast<const uint16_t*>(h.raw_data())[i];
    EXPECT_EQ(got, expect[i]) << i;
    EXPECT_EQ(std::bit_cast<uint32_t>(back.span<float>()[i]), uint32_t{expect[i]} << 16) << i;
  }
  Tensor wrong = Tensor::empty(x.shape(), DType::i32);
  EXPECT_THROW(ops::cast(x, wrong), Error);
}

#if MOETRON_HAVE_OPENBLAS  // not in the CUDA-only build
TEST(OpForward, OneDnnAgreesWithOpenBlas) {
  std::mt19937 gen(2);
  const Tensor a = random_tensor({100, 70}, gen), b = random_tensor({70, 90}, gen);
  Tensor c1 = Tensor::empty({100, 90}), c2 = Tensor::empty({100, 90});
  cpu::sgemm(false, false, 100, 90, 70, 1.0f, a.data<float>(), 70, b.data<float>(), 90, 0.0f,
             c1.data<float>(), 90);
  cpu::sgemm_openblas(false, false, 100, 90, 70, 1.0f, a.data<float>(), 70, b.data<float>(), 90,
                      0.0f, c2.data<float>(), 90);
  EXPECT_TRUE(close(c1.span<float>(), to_double(c2), 1e-5, 1e-5)) << cpu::gemm_backend();
}
#endif

TEST(OpForward, MatmulBatched) {
  std::mt19937 gen(3);
  const Tensor a = random_tensor({3, 4, 6}, gen), b = random_tensor({3, 5, 6}, gen);
  Tensor c = Tensor::empty({3, 4, 5});
  ops::matmul_batched(a, false, b, true, c);
  for (int64_t i = 0; i < 3; ++i) {
    const auto expect = ref_matmul(a.slice(i, i + 1), false, b.slice(i, i + 1), true, 4, 5, 6);
    EXPECT_TRUE(close(c.slice(i, i + 1).span<float>(), expect, 1e-5, 1e-5)) << "batch " << i;
  }
}

TEST(OpForward, AttentionMatchesNaiveAcrossBlockEdges) {
  std::mt19937 gen(4);
  for (auto [t, h, kv] : {std::tuple{1, 2, 1}, {63, 4, 2}, {64, 2, 2}, {65, 4, 1}, {200, 2, 1}}) {
    const Tensor q = random_tensor({2, t, h, 16}, gen), k = random_tensor({2, t, kv, 16}, gen),
                 v = random_tensor({2, t, kv, 16}, gen);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({2, h, t});
    ops::attention_forward(q, k, v, 0.25f, out, lse);
    EXPECT_TRUE(close(out.span<float>(), ref_attention(q, k, v), 1e-4, 1e-5))
        << "T=" << t << " H=" << h << " KV=" << kv;
  }
}

TEST(OpForward, CrossEntropyMatchesLogSoftmax) {
  std::mt19937 gen(5);
  const Tensor h = random_tensor({10, 8}, gen), w = random_tensor({50, 8}, gen, 3.0f);
  std::vector<int32_t> targets(10);
  for (int i = 0; i < 10; ++i) targets[i] = i * 5;
  Tensor ws = Tensor::empty({ops::ce_workspace_size(10, 50)});
  const double got = summed([&](Tensor& sum) {
    ops::head_cross_entropy(h, w, i32(targets), 0.0f, nullptr, nullptr, ws, sum);
  });
  const auto logits = ref_matmul(h, false, w, true, 10, 50, 8);
  double expect = 0;
  for (int r = 0; r < 10; ++r) {
    double mx = -1e300, s = 0;
    for (int c = 0; c < 50; ++c) mx = std::max(mx, logits[r * 50 + c]);
    for (int c = 0; c < 50; ++c) s += std::exp(logits[r * 50 + c] - mx);
    expect += std::log(s) + mx - logits[r * 50 + targets[r]];
  }
  EXPECT_NEAR(got, expect, 1e-4 * std::abs(expect));
}

TEST(OpForward, VocabParallelCrossEntropyEqualsTheWholeVocabulary) {
  // Three blocks of 5 rows of a 13-token vocabulary (the last block has 2 padding rows): the
  // combined statistics give the fused kernel's loss.
  std::mt19937 gen(3);
  const Tensor h = random_tensor({9, 6}, gen), w = random_tensor({13, 6}, gen);
  std::vector<int32_t> targets{0, 12, 5, 9, 4, 10, 1, 7, 11};
  Tensor ws = Tensor::empty({ops::ce_workspace_size(9, 13)});
  const double whole = summed([&](Tensor& sum) {
    ops::head_cross_entropy(h, w, i32(targets), 0.0f, nullptr, nullptr, ws, sum);
  });
  Tensor all = poisoned({3, 9, 3}), lse = poisoned({9});
  for (int b = 0; b < 3; ++b) {
    Tensor block = Tensor::zeros({5, 6});
    const int64_t valid = std::min<int64_t>(5, 13 - 5 * b);
    Tensor rows = block.view(0, {valid, 6});
    ops::copy(w.view(5 * b * 6, {valid, 6}), rows);
    Tensor logits = poisoned({9, 5}), stats = all.view(b * 27, {9, 3});
    ops::matmul(h, false, block, true, logits);
    ops::ce_shard_stats(logits, i32(targets), {5 * b, valid, 13}, stats);
  }
  EXPECT_NEAR(summed([&](Tensor& sum) { ops::ce_combine_stats(all, lse, sum); }), whole,
              1e-5 * whole);
}

// The decoding ops (core/ops_decode.h): the training ops' results, and rows computed alike
// whatever rows come with them.
TEST(OpForward, DecodingOpsMatchTheTrainingOpsRowForRow) {
  std::mt19937 gen(9);
  const Tensor x = random_tensor({7, 33}, gen), w = random_tensor({19, 33}, gen);
  Tensor wt = poisoned({33, 19}), y = poisoned({7, 19}), ref = poisoned({7, 19});
  ops::transpose(w, wt);
  ops::linear_rows(x, wt, y);
  ops::matmul(x, false, w, true, ref);
  EXPECT_TRUE(close(y.span<float>(), to_double(ref), 1e-5, 1e-5));
  for (int64_t r = 0; r < 7; ++r) {  // alone, the same bits
    Tensor one = poisoned({1, 19});
    ops::linear_rows(x.slice(r, r + 1), wt, one);
    EXPECT_TRUE(std::equal(one.span<float>().begin(), one.span<float>().end(),
                           y.slice(r, r + 1).span<float>().begin()))
        << "row " << r;
  }
  // Attention over a cache filled position by position equals causal attention of the whole.
  const int64_t T = 9, H = 4, KV = 2, hd = 8;
  const Tensor q = random_tensor({1, T, H, hd}, gen), k = random_tensor({1, T, KV, hd}, gen),
               v = random_tensor({1, T, KV, hd}, gen);
  Tensor full = poisoned({1, T, H, hd}), lse = poisoned({1, H, T});
  ops::attention_forward(q, k, v, kScale8, full, lse);
  Tensor keys_t = poisoned({KV, hd, T}), values = poisoned({T, KV, hd});
  ops::copy(v.reshape({T, KV, hd}), values);
  for (int64_t t = 0; t < T; ++t) {
    ops::store_keys(k.reshape({T, KV, hd}).slice(t, t + 1), t, keys_t);
    Tensor out = poisoned({1, H, hd});
    ops::attention_decode(q.reshape({T, H, hd}).slice(t, t + 1), keys_t, values, t, out);
    EXPECT_TRUE(
        close(out.span<float>(), to_double(full.reshape({T, H, hd}).slice(t, t + 1)), 1e-5, 1e-5))
        << "position " << t;
  }
}

// Absorbed MLA decoding: attention over a latent cache whose rows are the keys and whose first
// dv columns are the values equals causal attention with one kv head of those keys and values.
TEST(OpForward, LatentDecodingMatchesCausalAttention) {
  std::mt19937 gen(10);
  const int64_t T = 11, H = 3, dk = 10, dv = 6;
  const float scale = 0.3f;
  const Tensor cache = random_tensor({T, dk}, gen), q = random_tensor({1, T, H, dk}, gen);
  Tensor values = poisoned({1, T, 1, dv});
  std::array<Tensor, 2> parts{values.reshape({T, dv}), poisoned({T, dk - dv})};
  ops::split_cols(cache, parts);
  Tensor full = poisoned({1, T, H, dv}), lse = poisoned({1, H, T});
  ops::attention_forward(q, cache.reshape({1, T, 1, dk}), values, scale, full, lse);
  Tensor qh = poisoned({H, T, dk});
  ops::transpose01(q.reshape({T, H, dk}), qh);
  for (const int64_t chunk : {int64_t{1}, int64_t{4}, T}) {
    Tensor got = poisoned({H, T, dv});
    for (int64_t start = 0; start < T; start += chunk) {
      const int64_t n = std::min(chunk, T - start);
      Tensor qs = poisoned({H, n, dk}), out = poisoned({H, n, dv});
      for (int64_t h = 0; h < H; ++h) {
        Tensor dst = qs.view(h * n * dk, {n, dk});
        ops::copy(qh.view((h * T + start) * dk, {n, dk}), dst);
      }
      ops::attention_decode_latent(qs, cache, start, scale, out);
      for (int64_t h = 0; h < H; ++h) {
        Tensor dst = got.view((h * T + start) * dv, {n, dv});
        ops::copy(out.view(h * n * dv, {n, dv}), dst);
      }
    }
    Tensor want = poisoned({H, T, dv});
    ops::transpose01(full.reshape({T, H, dv}), want);
    EXPECT_TRUE(close(got.span<float>(), to_double(want), 1e-5, 1e-6)) << "chunk " << chunk;
  }
}

TEST(OpForward, AdamWMatchesTheFormula) {
  Tensor p = Tensor::empty({3}), g = Tensor::empty({3}), m = Tensor::zeros({3}),
         v = Tensor::zeros({3});
  std::vector<double> P{1.0, -2.0, 0.5}, G{0.1, -0.3, 2.0}, M(3, 0), V(3, 0);
  for (int i = 0; i < 3; ++i)
    p.span<float>()[i] = static_cast<float>(P[i]), g.span<float>()[i] = static_cast<float>(G[i]);
  const double lr = 0.01, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw(p, g, m, v, {static_cast<float>(lr), 0.9f, 0.95f, 1e-8f, 0.1f, step});
    for (int i = 0; i < 3; ++i) {
      P[i] *= 1 - lr * wd;
      M[i] = b1 * M[i] + (1 - b1) * G[i];
      V[i] = b2 * V[i] + (1 - b2) * G[i] * G[i];
      const double mhat = M[i] / (1 - std::pow(b1, step)), vhat = V[i] / (1 - std::pow(b2, step));
      P[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  EXPECT_TRUE(close(p.span<float>(), P, 1e-5, 1e-6));
}

TEST(OpForward, ElementwiseAndReductions) {
  std::mt19937 gen(6);
  const int64_t n = 100003;  // odd, larger than the parallel threshold
  Tensor a = random_tensor({n}, gen), b = random_tensor({n}, gen), c = Tensor::empty({n});
  ops::add(a, b, c);
  std::vector<double> expect(n);
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    expect[i] = double{a.span<float>()[i]} + b.span<float>()[i];
    ss += double{a.span<float>()[i]} * a.span<float>()[i];
  }
  EXPECT_TRUE(close(c.span<float>(), expect, 1e-6, 1e-6));
  // The sum adds to what the scalar holds: the gradient norm sums several ranges into one.
  EXPECT_NEAR(summed([&](Tensor& sum) {
                ops::sum_squares(a, sum);
                ops::sum_squares(a, sum);
              }),
              2 * ss, 2e-9 * ss);
  a.span<float>()[n - 1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(summed([&](Tensor& sum) { ops::sum_squares(a, sum); })));
  ops::axpy(2.0f, b, c);
  for (int64_t i = 0; i < n; i += 997)
    EXPECT_NEAR(c.span<float>()[i], expect[i] + 2.0 * b.span<float>()[i], 1e-5);
}

TEST(OpForward, ColumnsSplitAndConcatRoundTrip) {
  std::mt19937 gen(7);
  const Tensor src = random_tensor({4, 10}, gen);
  std::array<Tensor, 2> parts{Tensor::empty({4, 3}), Tensor::empty({4, 7})};
  ops::split_cols(src, parts);
  EXPECT_EQ(parts[1].span<float>()[0], src.span<float>()[3]);
  Tensor back = Tensor::empty({4, 10});
  ops::concat_cols(std::span<const Tensor>(parts), back);
  EXPECT_TRUE(close(back.span<float>(), to_double(src), 0, 0));
}

TEST(OpErrors, ShapeMismatchAndBadIdsAreReported) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5}), c = Tensor::zeros({2, 5});
  EXPECT_THROW(ops::matmul(a, false, b, false, c), Error);
  const Tensor table = Tensor::zeros({10, 4});
  Tensor out = Tensor::zeros({1, 4});
  const std::vector<int32_t> ids{10};
  try {
    ops::embedding_forward(i32(ids), table, out);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 10"), std::string::npos) << e.what();
  }
}

TEST(OpDeterminism, SameInputsGiveBitwiseSameAttentionGradients) {
  std::mt19937 gen(8);
  const Tensor q = random_tensor({2, 130, 4, 16}, gen), k = random_tensor({2, 130, 2, 16}, gen),
               v = random_tensor({2, 130, 2, 16}, gen), dy = random_tensor(q.shape(), gen);
  auto run = [&] {
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({2, 4, 130});
    ops::attention_forward(q, k, v, 0.25f, out, lse);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
           dv = Tensor::empty(v.shape());
    ops::attention_backward(dy, q, k, v, 0.25f, out, lse, dq, dk, dv);
    return std::vector<float>(dk.span<float>().begin(), dk.span<float>().end());
  };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace moetron

namespace moetron {
namespace {

TEST(OpRouter, GroupsOfOneExpertRankByTheirOnlyScore) {
  // 4 experts in 4 groups, 2 groups kept, top-2: the two best experts, best first.
  Tensor logits = Tensor::empty({1, 4}), bias = Tensor::zeros({4});
  const float u[4] = {0.1f, 2.0f, -1.0f, 1.0f};
  std::copy(u, u + 4, logits.span<float>().begin());
  Tensor scores = Tensor::empty({1, 4}), idx = Tensor::empty({1, 2}, DType::i32),
         gates = Tensor::empty({1, 2});
  ops::RouterConfig rc;
  rc.experts = 4;
  rc.k = 2;
  rc.n_group = 4;
  rc.topk_group = 2;
  ops::router_forward(logits, bias, rc, scores, idx, gates);
  EXPECT_EQ(idx.span<int32_t>()[0], 1);
  EXPECT_EQ(idx.span<int32_t>()[1], 3);
  EXPECT_NEAR(gates.span<float>()[0] + gates.span<float>()[1], 1.0f, 1e-6f);
}

}  // namespace
}  // namespace moetron

namespace moetron {
namespace {

TEST(OpDeterminism, AttentionGradientsDoNotDependOnTheThreadCount) {
  // Batch 1 with one kv head: the work is split over key and query blocks, not heads.
  std::mt19937 gen(9);
  const Tensor q = random_tensor({1, 200, 2, 16}, gen), k = random_tensor({1, 200, 1, 16}, gen),
               v = random_tensor({1, 200, 1, 16}, gen), dy = random_tensor(q.shape(), gen);
  auto grads = [&](int threads) {
    set_compute_threads(threads);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({1, 2, 200});
    ops::attention_forward(q, k, v, 0.25f, out, lse);
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
           dv = Tensor::empty(v.shape());
    ops::attention_backward(dy, q, k, v, 0.25f, out, lse, dq, dk, dv);
    std::vector<float> all;
    for (const Tensor* t : {&dq, &dk, &dv})
      all.insert(all.end(), t->span<float>().begin(), t->span<float>().end());
    return all;
  };
  const std::vector<float> one = grads(1), two = grads(2);
  set_compute_threads(0);
  EXPECT_EQ(one, two);
}

}  // namespace
}  // namespace moetron
