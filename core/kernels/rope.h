// Rotary position embedding, one (a, b) pair at a time, host and device alike: the CPU
// backend's rope (core/cpu/rope.cc) and the CUDA kernel (a thread per pair) run this function,
// so they agree bit for bit. Each output is one explicit fmaf of a product: both compilers
// would otherwise fuse a * c - b * s into an FMA wherever they like (nvcc always; g++ too, as
// -ffp-contract=fast is its default for C++, and differently in vectorised loops).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron::kernels {

// Rotates (xa, xb) by the angle whose cosine is c and sine s (s negated for the inverse).
MT_HD void rope_pair(float& xa, float& xb, float c, float s) {
  const float a = xa, b = xb;
  xa = fmaf(a, c, -(b * s));
  xb = fmaf(b, c, a * s);
}

struct RopeShape {
  int64_t seq, heads, head_dim, half;  // half: the rotated pairs per head (head_dim / 2: all)
  bool interleaved;                    // pairs (2j, 2j + 1); else rotate-half, (j, j + half)
  float sign;                          // -1 for the inverse rotation
};

// Pair p of x [batch, seq, heads, head_dim] (p over batch * seq * heads * half); cos and sin are
// [seq, half].
MT_HD void rope_at(float* x, const float* cos, const float* sin, const RopeShape& r, int64_t p) {
  const int64_t half = r.half, j = p % half, row = p / half;  // row: (b, t, h)
  const int64_t t = (row / r.heads) % r.seq;
  float* xh = x + row * r.head_dim;
  const int64_t a = r.interleaved ? 2 * j : j, b = r.interleaved ? 2 * j + 1 : j + half;
  rope_pair(xh[a], xh[b], cos[t * half + j], r.sign * sin[t * half + j]);
}

}  // namespace moetron::kernels
