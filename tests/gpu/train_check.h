// The GPU check's training run (launch/gpu_check.sh, docs/gpu.md): a model trained step by step
// on one device, the same on every device, so a GPU's losses can be held to the CPU's. It needs
// no Protobuf, MPI or HDF5 (the GPU machine has none): the model comes as ModelDims, the data
// is a synthetic token stream, and the step is the trainer's on one rank with one micro-batch
// (zero the gradients, forward and backward, the global norm, AdamW with clipping, the router
// biases) at a constant learning rate. The full build writes a config's run, with the CPU's
// losses, to a reference file (tests/gpu/gpu_reference_main.cc); the CUDA-only build's
// moetron_gpu_train reads it back.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "data/json.h"
#include "models/dims.h"
#include "models/runtime.h"
#include "trainer/adamw.h"

namespace moetron::gpu {

struct TrainSpec {
  ModelDims dims;  // at the micro-batch shape
  AdamWSettings adamw;
  double lr = 0;         // constant
  float mtp_weight = 0;  // lambda
  uint64_t seed = 0;     // the weights' initialisation and the token stream
  float init_std = 0;    // ParamTable::init's
  int64_t steps = 0;     // the reference's length
  // The bf16 dense peak of the GPU its figures are for (FLOP/s; trainer/plan.cc's device_spec),
  // for the benchmark's MFU; 0 where none was named.
  double peak_flops = 0;
};

struct StepRecord {
  double loss = 0;       // the main head's mean cross-entropy
  double grad_norm = 0;  // before clipping
};

// Fills `windows` (windows of `window` ids) with step `step`'s tokens: each window walks a fixed
// random chain in which every token has four successors, drawn 8:4:2:1 (about 1.1 nats per
// token to learn), from a start of its own. A pure function of its arguments.
void synthetic_windows(uint64_t seed, int64_t vocab, int64_t window, int64_t step,
                       std::span<int32_t> windows);

// Trains spec.dims on rt (device and compute dtype; one rank) for `steps` steps from the
// initialisation, calling on_step(step, record) after each (step counts from 1). Throws if a
// loss or norm is not finite.
std::vector<StepRecord> train(const TrainSpec& spec, const Runtime& rt, int64_t steps,
                              const std::function<void(int64_t, const StepRecord&)>& on_step = {});

// The reference file: {"spec": {...}, "runs": {"<name>": {"loss": [...], "grad_norm": [...]}}}.
// Every ModelDims field is written, doubles to 17 significant digits.
std::string spec_json(const TrainSpec& spec);
TrainSpec spec_from_json(const data::JsonValue& spec);
std::string reference_json(
    const TrainSpec& spec,
    const std::vector<std::pair<std::string, std::vector<StepRecord>>>& runs);
std::vector<StepRecord> run_from_json(const data::JsonValue& reference, const std::string& name);

}  // namespace moetron::gpu
