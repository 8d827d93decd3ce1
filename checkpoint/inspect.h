// `moetron inspect`: what a checkpoint holds, read one block of rows at a time and verified as
// it is shown.
#pragma once

#include <filesystem>
#include <iosfwd>

#include "core/stop.h"

namespace moetron::checkpoint {

// Prints the format, the step and tokens, the layout at save time, the model, a table of every
// tensor (shape, L2 norm; the optimizer moments with `moments`) and, for each MoE layer, the
// spread of its router biases. Every tensor and moment is checked against its checksum as it is
// read, whether shown or not; a mismatch is marked in the table and, after it, throws Error
// naming the tensors. Structural problems (CheckpointReader) throw before anything is printed.
void inspect(const std::filesystem::path& path, std::ostream& out, bool moments = false,
             const StopToken& stop = {});

}  // namespace moetron::checkpoint
