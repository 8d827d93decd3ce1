// The one CPU thread pool (OpenMP's), shared by our kernels and oneDNN's GEMM.
#pragma once

namespace moetron {

// Sets the compute threads; 0 means one per available core.
void set_compute_threads(int threads);
int compute_threads();

}  // namespace moetron
