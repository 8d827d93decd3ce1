// `moetron inspect`: what a checkpoint holds, read one tensor at a time.
#pragma once

#include <filesystem>
#include <iosfwd>

namespace moetron::checkpoint {

// Prints the format, the step and tokens, the layout at save time, the model, a table of every
// tensor (shape, L2 norm; the optimizer moments with `moments`) and, for each MoE layer, the
// spread of its router biases. Throws Error naming the file.
void inspect(const std::filesystem::path& path, std::ostream& out, bool moments = false);

}  // namespace moetron::checkpoint
