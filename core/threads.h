// The one CPU thread pool (OpenMP's), shared by our kernels and oneDNN's GEMM.
#pragma once

namespace moetron {

// The most compute threads a run may ask for (configs and --threads are checked against it):
// far more than any machine moetron runs on has cores, and few enough that the thread pool's
// stacks always fit (100000 threads crash libgomp).
inline constexpr int kMaxThreads = 1024;

// Sets the compute threads (0 means one per available core); `threads` in [0, kMaxThreads].
void set_compute_threads(int threads);
int compute_threads();

}  // namespace moetron
