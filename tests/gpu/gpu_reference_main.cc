// Writes the GPU check's reference file for a config (tests/gpu/train_check.h): the config's
// model at its micro-batch shape, its AdamW settings, learning rate, first MTP weight, seed and
// init, and the CPU's losses and gradient norms of `steps` steps in fp32 and bf16, as JSON on
// stdout. The CUDA-only build, which cannot read the config, trains from that file.
//   moetron_gpu_reference CONFIG STEPS [--device-spec h200] > tests/reference/gpu/NAME.json
// STEPS 0: the spec alone (the benchmark's). --device-spec names the GPU whose peak the
// benchmark's MFU is taken against (moetron plan's devices).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "configs/config.h"
#include "tests/gpu/train_config.h"

int main(int argc, char** argv) {
  using namespace moetron;
  if (argc != 3 && !(argc == 5 && std::strcmp(argv[3], "--device-spec") == 0)) {
    std::fprintf(stderr, "usage: %s CONFIG STEPS [--device-spec NAME]\n", argv[0]);
    return 2;
  }
  try {
    const gpu::TrainSpec spec =
        gpu::train_spec(load_config(argv[1], {}), std::stoll(argv[2]), argc == 5 ? argv[4] : "");
    std::vector<std::pair<std::string, std::vector<gpu::StepRecord>>> runs;
    for (const DType compute : {DType::f32, DType::bf16}) {
      if (spec.steps == 0) break;
      Runtime rt;
      rt.compute = compute;
      runs.emplace_back(compute == DType::bf16 ? "bf16" : "f32", gpu::train(spec, rt, spec.steps));
    }
    std::cout << gpu::reference_json(spec, runs);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moetron_gpu_reference: %s\n", e.what());
    return 1;
  }
}
