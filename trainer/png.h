// A minimal PNG encoder for the run's TensorBoard images (the expert-load heatmap): 8-bit
// grayscale or RGB, unfiltered scanlines in stored (uncompressed) deflate blocks, with the
// CRC-32 and Adler-32 the format requires; any PNG reader decodes it.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace moetron {

// pixels: height rows of width x channels bytes (channels 1 or 3).
std::string encode_png(std::span<const uint8_t> pixels, int width, int height, int channels);

}  // namespace moetron
