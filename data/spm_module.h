// Finds and loads the SentencePiece shim module once per process (see spm_shim.h for why it is a
// separate module). Search order: $MOETRON_SPM_SHIM, libmoetron_spm.so beside the running
// executable, then the path the build wrote it to.
#pragma once

#include "data/spm_shim.h"

namespace moetron::data {

// Throws Error listing the paths tried when the module cannot be loaded.
const moetron_spm_api& spm_api();

}  // namespace moetron::data
