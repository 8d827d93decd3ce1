// A warp of 32 lanes as the shared kernel math sees it: a lane handles the columns lane,
// lane + 32, ... of a row, and a butterfly (xor 16, 8, 4, 2, 1) combines the lanes' partial
// results so that every lane holds the row's. The device runs it with __shfl_xor_sync
// (core/cuda/kernels.cu); the host emulation runs the same steps over an array of the 32
// partials, so the result has the same bits on both (each step is a commutative op of two
// values: op(a, b) == op(b, a)).
#pragma once

#include "core/kernels/hd.h"

namespace moetron::kernels {

inline constexpr int kWarp = 32;

template <typename Op>
void host_butterfly(float (&v)[kWarp], Op op) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    float next[kWarp];
    for (int l = 0; l < kWarp; ++l) next[l] = op(v[l], v[l ^ o]);
    for (int l = 0; l < kWarp; ++l) v[l] = next[l];
  }
}

// The ops, called as op(own, other) on both sides.
struct Sum {
  MT_HD float operator()(float a, float b) const { return a + b; }
};
struct Max {
  MT_HD float operator()(float a, float b) const { return a > b ? a : b; }
};

}  // namespace moetron::kernels
