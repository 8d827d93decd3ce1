// The one spelling of a function that runs on the host and on a CUDA device. The per-element and
// per-row math of the CUDA kernels is written once with it (core/kernels/*.h): nvcc builds it
// into the __global__ kernels of core/cuda/, and g++ into the host launchers of
// core/kernels/host.h, so CI runs the very code the GPU runs against the CPU backend. Multiply-
// adds that must round alike on both are explicit fmaf: otherwise each compiler contracts
// a * b + c into an FMA where it likes (nvcc by default; g++ too, its default for C++ being
// -ffp-contract=fast, and differently in vectorised loops).
#pragma once

#if defined(__CUDACC__)
#define MT_HD __host__ __device__ __forceinline__
#else
#define MT_HD inline
#endif
