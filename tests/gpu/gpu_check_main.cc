// The GPU check's kernel step (launch/gpu_check.sh): the CUDA kernels against the host launchers
// of the same math, cuBLASLt against the host GEMM, cuDNN's attention against a double reference
// and NCCL with one rank (where built), a table on stdout and, with --json FILE, the results as
// JSON. Built by the CUDA-only build mode (-DMOETRON_CUDA_ONLY=ON), which needs nothing but the
// CUDA toolkit, CMake and a compiler. Exit 0: every check passed; 1: one failed; 2: no GPU, or a
// usage error.
//   moetron_gpu_check [--small] [--kernels-only] [--json FILE]
// --kernels-only leaves the libraries' checks out (cuBLASLt, cuDNN, NCCL) for racecheck: their
// kernels are the libraries' own, and their shared-memory traffic makes the tool slow.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda/blas_lt.h"
#include "core/cuda/device.h"
#include "tests/gpu/kernel_checks.h"
#if MOETRON_HAVE_CUDNN
#include "core/cuda/attention_graph.h"
#include "tests/gpu/attention_checks.h"
#endif
#if MOETRON_HAVE_NCCL
#include "core/cuda/nccl.h"
#include "tests/gpu/nccl_checks.h"
#endif

int main(int argc, char** argv) {
  using namespace moetron;
  int scale = 1;
  std::string json;
  bool libraries = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--small") == 0) {
      scale = 10;  // for compute-sanitizer, which runs kernels far slower
    } else if (std::strcmp(argv[i], "--kernels-only") == 0) {
      libraries = false;
    } else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--small] [--kernels-only] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  try {
    if (cuda::device_count() == 0) {
      std::printf("no CUDA device visible: nothing to check\n");
      return 2;
    }
    const std::string device = cuda::device_description(0);
    // The libraries this process loaded, as the wheels' can differ from the toolkit's headers.
    std::printf("device: %s\nlibraries: cuBLASLt %zu", device.c_str(), cuda::blas_lt_version());
#if MOETRON_HAVE_CUDNN
    std::printf(", cuDNN %zu", cuda::cudnn_version());
#else
    std::printf(", cuDNN not built");
#endif
#if MOETRON_HAVE_NCCL
    std::printf(", NCCL %d", cuda::nccl_version());
#else
    std::printf(", NCCL not built");
#endif
    std::printf("\n%-26s %14s %10s  result\n", "kernel", "max relative", "bound");
    bool all = true;
    std::string rows;
    std::vector<gpu::KernelCheck> checks = gpu::run_kernel_checks(scale, libraries);
#if MOETRON_HAVE_CUDNN
    try {  // a graph cuDNN cannot build fails its check, not the whole run
      if (libraries)
        for (gpu::KernelCheck& c : gpu::run_attention_checks(scale)) checks.push_back(std::move(c));
    } catch (const std::exception& e) {
      std::printf("cuDNN attention: %s\n", e.what());
      checks.push_back({"attention (cuDNN error above)", INFINITY, 0});
    }
#else
    std::printf("cuDNN attention: not built (no cuDNN or no frontend headers)\n");
#endif
#if MOETRON_HAVE_NCCL
    try {
      if (libraries)
        for (gpu::KernelCheck& c : gpu::run_nccl_checks()) checks.push_back(std::move(c));
    } catch (const std::exception& e) {
      std::printf("NCCL: %s\n", e.what());
      checks.push_back({"nccl (error above)", INFINITY, 0});
    }
#else
    std::printf("NCCL: not built (no NCCL found)\n");
#endif
    for (const gpu::KernelCheck& c : checks) {
      all = all && c.passed();
      std::printf("%-26s %14.3g %10.3g  %s\n", c.name.c_str(), c.max_relative, c.bound,
                  c.passed() ? "pass" : "FAIL");
      rows += std::string(rows.empty() ? "" : ",\n") + "    {\"kernel\": \"" + c.name +
              "\", \"max_relative\": " +
              (std::isfinite(c.max_relative) ? std::to_string(c.max_relative) : "null") +
              ", \"bound\": " + std::to_string(c.bound) +
              ", \"passed\": " + (c.passed() ? "true" : "false") + "}";
    }
    if (!json.empty()) {
      std::ofstream f(json);
      f << "{\n  \"device\": \"" << device << "\",\n  \"scale\": " << scale
        << ",\n  \"kernels\": [\n"
        << rows << "\n  ]\n}\n";
      if (!f) {
        std::fprintf(stderr, "cannot write %s\n", json.c_str());
        return 2;
      }
    }
    return all ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu check: %s\n", e.what());
    return 1;
  }
}
