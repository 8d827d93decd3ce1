// bf16 <-> fp32 on the host. fp32 -> bf16 rounds to nearest, ties to even, as PyTorch's
// .to(torch.bfloat16) does; NaN stays NaN (quiet), infinities stay, a value past the largest
// finite bf16 becomes an infinity. bf16 -> fp32 is exact. MT_HD: the CUDA cast kernels run
// these very functions (core/cuda/kernels.cu), so the device rounds as the CPU does.
#pragma once

#include <bit>
#include <cstdint>

#include "core/kernels/hd.h"

namespace moetron {

MT_HD uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  return std::bit_cast<uint32_t>(v);
#endif
}

MT_HD float bits_float(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(v);
#else
  return std::bit_cast<float>(v);
#endif
}

MT_HD uint16_t to_bf16(float v) {
  const uint32_t bits = float_bits(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u)  // NaN: keep the sign, force a quiet NaN
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  // Adding 0x7fff plus the lowest kept bit rounds to nearest with ties to even; a carry into the
  // exponent is the correct rounding up (to infinity past the largest finite bf16).
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

MT_HD float from_bf16(uint16_t v) {
  return bits_float(uint32_t{v} << 16);
}

}  // namespace moetron
