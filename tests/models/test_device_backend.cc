// The whole model on cpu:1, the CUDA backend's code on the host launchers (core/backend.h),
// against the PyTorch goldens with the CPU's tolerances and against the same run on the CPU:
// three clipped AdamW steps of a dense MTP model and of a MoE model with bias updates. Every
// op a training step makes goes through the device backend's text, so its wiring (shapes,
// scratch, the dispatch plan read back, the offsets of the expert GEMMs, the device scalars the
// step reads once) is checked here without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "configs/config.h"
#include "core/backend.h"
#include "core/ops.h"
#include "models/model.h"
#include "models/moe.h"
#include "parallel/process_groups.h"
#include "tests/host_kernels.h"
#include "tests/models/bf16_bounds.h"
#include "tests/models/golden_config.h"
#include "tests/models/layer_check.h"
#include "trainer/train_step.h"

namespace moetron {
namespace {

using test::Golden;
using test::golden_path;

struct TrainedRun {
  std::vector<double> total, norms;
  std::vector<std::vector<int64_t>> counts;  // per step, every MoE layer's in order
  std::vector<std::vector<float>> params;    // after the steps, per parameter, on the host
  std::vector<int64_t> host_reads;           // per step: the device's copies to the host
  std::vector<int64_t> host_writes;          // per step: the host's copies to the device
  int64_t moe_layers = 0;
  int64_t uploads = 0;  // what a step should copy to the device (below)
};

TrainedRun train_on(const Golden& g, Device device, DType compute = DType::f32) {
  const auto batch = static_cast<int64_t>(g.attr_num("batch"));
  const auto seq = static_cast<int64_t>(g.attr_num("seq_len"));
  const auto lambda = static_cast<float>(g.attr_num("mtp_loss_weight"));
  Runtime rt;
  rt.device = device;
  rt.compute = compute;
  Model model(test::model_config(g), batch, seq, rt);
  test::load_params(model.params(), g, "/params");
  const ProcessGroups alone;
  TrainStep train(model, test::optimizer_config(g), alone, 1);
  const std::vector<int32_t> tokens = g.ints("/tokens");
  const size_t per_step = static_cast<size_t>(batch * model.dims().window());
  TrainedRun out;
  for (int step = 0; step < 3; ++step) {
    const int64_t reads = backend(device).host_reads();
    const int64_t writes = backend(device).host_writes();
    const StepResult r =
        train.run(step, g.attr_num("lr"), lambda, test::feed(tokens, step * per_step));
    out.host_reads.push_back(backend(device).host_reads() - reads);
    out.host_writes.push_back(backend(device).host_writes() - writes);
    out.total.push_back(r.losses.total);
    out.norms.push_back(r.grad_norm);
    std::vector<int64_t> counts;
    for (const MoeStepStats& m : r.moe)
      counts.insert(counts.end(), m.counts.begin(), m.counts.end());
    out.counts.push_back(counts);
    out.moe_layers = static_cast<int64_t>(r.moe.size());
  }
  // Each head's ids and targets at the step's start, and with bias updates each MoE layer's
  // expert counts after the step's read.
  const ModelDims& d = model.dims();
  out.uploads = 2 * (d.mtp_depth + 1) + (d.moe.bias_update_speed > 0 ? out.moe_layers : 0);
  for (int id = 0; id < static_cast<int>(model.params().infos().size()); ++id)
    out.params.push_back(ops::to_host<float>(model.params().value(id)));
  // The run's tensors were that device's (an op given tensors of two devices throws).
  EXPECT_GT(backend(device).memory_use().live, 0) << device_name(device);
  return out;
}

class DeviceBackendModel : public ::testing::TestWithParam<const char*> {};

TEST_P(DeviceBackendModel, ThreeAdamWStepsMatchTheReferenceAndTheCpu) {
  const Golden g(golden_path(GetParam()));
  const TrainedRun cpu = train_on(g, Device{});
  const TrainedRun dev = train_on(g, test::host_kernels_device());
  const std::vector<float> total = g.floats("/losses/total"), norms = g.floats("/grad_norm");
  for (size_t step = 0; step < 3; ++step) {
    EXPECT_NEAR(dev.total[step], total[step], 2e-5 * total[step]) << "step " << step;
    EXPECT_NEAR(dev.total[step], cpu.total[step], 1e-5 * cpu.total[step]) << "step " << step;
    EXPECT_NEAR(dev.norms[step], norms[step], 1e-4 * norms[step]) << "step " << step;
    EXPECT_NEAR(dev.norms[step], cpu.norms[step], 1e-5 * cpu.norms[step]) << "step " << step;
    EXPECT_EQ(dev.counts[step], cpu.counts[step]) << "step " << step;
    // What a step reads back (docs/gpu.md, "Host copies a step makes"): each MoE layer its plan
    // once, the step its losses and norm once; the ids and targets are counted on the device
    // into the sums, so no head reads anything back.
    EXPECT_EQ(dev.host_reads[step], dev.moe_layers + 1) << "step " << step;
    // And what it copies to the device, each a wait for the device's work before it on a GPU
    // (from pageable memory): none inside the forward or backward.
    EXPECT_EQ(dev.host_writes[step], dev.uploads) << "step " << step;
  }
  const test::AdamCheck adam = test::golden_adam_check(g, 3);
  const Model layout(test::model_config(g), 1, 8);  // the parameters' names and kinds
  for (int id = 0; id < static_cast<int>(layout.params().infos().size()); ++id) {
    const ParamInfo& p = layout.params().info(id);
    const std::vector<float>& v = dev.params[static_cast<size_t>(id)];
    if (p.kind == ParamKind::buffer) {  // the balancing bias: its last update
      const std::vector<float> hist = g.floats("/bias/" + p.name);
      EXPECT_TRUE(test::all_close(std::span<const float>(v),
                                  std::span<const float>(hist).subspan(3 * v.size(), v.size()), 0,
                                  1e-6f))
          << "bias " << p.name;
      continue;
    }
    adam.expect_close(v, g.floats("/params_final/" + p.name), p.name, g.attr_num("lr"));
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DeviceBackendModel,
                         ::testing::Values("model_mtp.h5", "model_moe.h5"));

// bf16 precision on cpu:1 (the bf16 copies cast on the device, the GEMMs of bf16 operands, the
// attention on rounded copies) against the reference's emulation of the plan, to the bounds the
// CPU's bf16 run is held to (tests/models/bf16_bounds.h, as
// Model.Bf16ThreeAdamWStepsMatchTheReferencesEmulation).
TEST(DeviceBackendModelBf16, ThreeAdamWStepsMatchTheReferencesEmulation) {
  const Golden g(golden_path("model_mtp_bf16.h5"));
  const TrainedRun dev = train_on(g, test::host_kernels_device(), DType::bf16);
  const std::vector<float> total = g.floats("/losses/total"), norms = g.floats("/grad_norm");
  for (size_t step = 0; step < 3; ++step) {
    const double loss_rtol =
        step == 0 ? test::bf16_bounds::kLossStep0 : test::bf16_bounds::kLossLater;
    const double norm_rtol =
        step == 0 ? test::bf16_bounds::kNormStep0 : test::bf16_bounds::kNormLater;
    EXPECT_NEAR(dev.total[step], total[step], loss_rtol * total[step]) << "step " << step;
    EXPECT_NEAR(dev.norms[step], norms[step], norm_rtol * norms[step]) << "step " << step;
  }
  const double lr = g.attr_num("lr");
  const Model layout(test::model_config(g), 1, 8);
  for (int id = 0; id < static_cast<int>(layout.params().infos().size()); ++id) {
    const ParamInfo& p = layout.params().info(id);
    EXPECT_LT(test::bf16_bounds::rms_difference(dev.params[static_cast<size_t>(id)],
                                                g.floats("/params_final/" + p.name)),
              test::bf16_bounds::kWeightsRmsInLr * lr)
        << p.name;
  }
}

// A MoE layer's training forward and backward on cpu:1 read the device back once: plan_dispatch
// brings the kept and dropped counts, the loads and the experts' row ranges in one copy, and
// the expert GEMMs loop over the dispatcher's offsets, which are on the host (docs/gpu.md, "Host
// copies a step makes"). The same layer's output is the CPU's.
TEST(DeviceBackendMoe, ATrainingStepReadsTheDeviceBackOncePerLayer) {
  const Golden g(golden_path("moe_sigmoid_grouped.h5"));
  ModelDims d;
  d.batch = static_cast<int64_t>(g.attr_num("batch"));
  d.seq = static_cast<int64_t>(g.attr_num("seq_len"));
  d.hidden = static_cast<int64_t>(g.attr_num("hidden_size"));
  d.moe = test::moe_dims(g);
  std::vector<std::vector<float>> outputs;
  for (const Device device : {Device{}, test::host_kernels_device()}) {
    SCOPED_TRACE(device_name(device));
    Runtime rt;
    rt.device = device;
    ParamTable params;
    MoE moe(params, "", d, rt);
    params.allocate({}, device);
    test::load_params(params, g, "/params");
    const Tensor x =
        ops::to_device(test::tensor_from(g, "/inputs/x", {d.rows(), d.hidden}), device);
    const Tensor dy =
        ops::to_device(test::tensor_from(g, "/inputs/dy", {d.rows(), d.hidden}), device);
    Tensor y = Tensor::empty({d.rows(), d.hidden}, DType::f32, device);
    Tensor dx = Tensor::empty({d.rows(), d.hidden}, DType::f32, device);
    moe.set_balance_sums(Tensor::zeros({ops::kBalanceSums}, DType::f64, device));
    const int64_t before = backend(device).host_reads();
    moe.forward(x, y);
    moe.backward(dy, x, dx);
    if (device != Device{}) {
      EXPECT_EQ(backend(device).host_reads() - before, 1);
    }
    outputs.push_back(ops::to_host<float>(y));
  }
  EXPECT_TRUE(test::all_close(outputs[1], outputs[0], 1e-5f, 1e-6f));
}

// A token outside the vocabulary in the data (a shard tokenized for a larger vocabulary): the
// device counts it into the step's sums, so the step raises at its one read, before the update,
// on every rank alike, having read nothing else back.
TEST(DeviceBackendModelData, ATokenOutsideTheVocabularyStopsTheStepBeforeTheUpdate) {
  const Golden g(golden_path("model_mtp.h5"));
  const auto batch = static_cast<int64_t>(g.attr_num("batch"));
  const auto seq = static_cast<int64_t>(g.attr_num("seq_len"));
  for (const Device device : {Device{}, test::host_kernels_device()}) {
    SCOPED_TRACE(device_name(device));
    Runtime rt;
    rt.device = device;
    Model model(test::model_config(g), batch, seq, rt);
    test::load_params(model.params(), g, "/params");
    const std::vector<float> before = ops::to_host<float>(model.params().flat_values());
    const ProcessGroups alone;
    TrainStep train(model, test::optimizer_config(g), alone, 1);
    std::vector<int32_t> tokens = g.ints("/tokens");
    tokens[5] = static_cast<int32_t>(model.dims().vocab + 5);
    const int64_t reads = backend(device).host_reads();
    try {
      train.run(0, g.attr_num("lr"), 0.3f, test::feed(tokens, 0));
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      // Window position 5 is each head's input and the target of the position before it.
      const ModelDims& d = model.dims();
      ASSERT_TRUE(d.seq > 5 && d.mtp_depth <= 4);
      const std::string want = "outside the vocabulary [0, " + std::to_string(d.vocab) +
                               ") of the model (" + std::to_string(2 * (d.mtp_depth + 1)) +
                               " reads";
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
    if (device != Device{}) {
      EXPECT_EQ(backend(device).host_reads() - reads, 1) << "the step's own read only";
    }
    EXPECT_EQ(ops::to_host<float>(model.params().flat_values()), before) << "no update";
  }
}

// The shipped architectures the goldens above do not cover, on cpu:1 against the CPU: one
// forward and backward of MLA with routed experts (DeepSeek-V3, Kimi K2) and of the Gated
// DeltaNet hybrid (Qwen3.5) from the same initialisation, at a short sequence. Losses within
// 1e-5, every gradient within 1e-4 of the largest.
class DeviceBackendConfig : public ::testing::TestWithParam<const char*> {};

TEST_P(DeviceBackendConfig, ForwardAndBackwardMatchTheCpu) {
  const config::RunConfig cfg =
      load_config(std::string(MOETRON_SOURCE_DIR) + "/configs/" + GetParam(), {});
  auto run = [&](Device device) {
    Runtime rt;
    rt.device = device;
    Model model(cfg.model(), 2, 40, rt);
    model.params().init(5, 0.05f);
    std::vector<int32_t> tokens(static_cast<size_t>(2 * model.dims().window()));
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] =
          static_cast<int32_t>((i * 31 + i / 7) % static_cast<size_t>(cfg.model().vocab_size()));
    const Losses l = model.forward_backward(tokens, 0.3f, 1.0f);
    return std::make_pair(l.total, ops::to_host<float>(model.params().flat_grads()));
  };
  const auto cpu = run(Device{});
  const auto dev = run(test::host_kernels_device());
  EXPECT_NEAR(dev.first, cpu.first, 1e-5 * cpu.first);
  float largest = 0;
  for (float g : cpu.second) largest = std::max(largest, std::abs(g));
  EXPECT_TRUE(test::all_close(dev.second, cpu.second, 0, 1e-4f * largest));
}

INSTANTIATE_TEST_SUITE_P(Configs, DeviceBackendConfig,
                         ::testing::Values("deepseek-v3-tiny.pbtxt", "kimi-k2-tiny.pbtxt",
                                           "qwen3.5-tiny.pbtxt"),
                         [](const auto& info) {
                           std::string name = info.param;
                           name = name.substr(0, name.find(".pbtxt"));
                           for (char& c : name)
                             if (c == '-' || c == '.') c = '_';
                           return name;
                         });

}  // namespace
}  // namespace moetron
