// The GPU check's training steps (launch/gpu_check.sh, docs/gpu.md), built by the CUDA-only
// build (no Protobuf: the model comes from a reference file, tests/gpu/train_check.h).
//
//   moetron_gpu_train check REFERENCE [--device cuda|cpu:1] [--precision f32|bf16] [--steps N]
//                               [--json FILE]
// trains the reference's model on the device for its steps (or its first N) and holds each
// step's main loss and gradient norm to the CPU's run of that precision in the file (the bounds
// are below).
//
//   moetron_gpu_train bench SPEC [--device cuda|cpu:1] [--precision f32|bf16] [--steps N]
//                               [--warmup W] [--json FILE]
// times N steps after W (defaults 10 and 3): tokens/s, and MFU against the spec's peak.
//
// The default device is cuda; cpu:1 (the CUDA backend's code on the host launchers) is the dry
// run a machine without a GPU can do. Exit status: 0 passed (or measured), 1 failed, 2 no such
// device here or a usage error.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>

#include "core/backend.h"
#include "models/model.h"
#include "tests/gpu/train_check.h"

namespace moetron {
namespace {

// The bounds on the losses and norms against the CPU, relative, per step. Two summation orders
// of the same math agree to rounding at first and then drift apart, as training amplifies any
// difference (AdamW's sign-like updates of elements whose gradients are at rounding level go
// either way). Seen on cpu:1 against the CPU, 2026-12-02, over the first 10 steps and then to
// step 100: fp32 losses 2.2e-6 then 5.4e-3, norms 1.6e-4 then 1.8e-2; bf16 (every GEMM operand
// and the attention's operands and results rounded, so an order's noise flips values by a whole
// bf16 step near a boundary) losses 9.5e-4 then 1.1e-2, norms 4.0e-2 then 4.4e-2. The bounds
// leave 4x or more.
constexpr int64_t kEarlySteps = 10;
struct Bounds {
  double early_loss, early_norm, loss, norm;
};
constexpr Bounds kF32{1e-4, 2e-3, 2e-2, 1e-1};
constexpr Bounds kBf16{1e-2, 2e-1, 5e-2, 2e-1};

struct Options {
  std::string mode, file, device = "cuda", precision = "f32", json;
  int64_t steps = 0, warmup = 3;  // steps 0: check all the reference's, bench 10
};

// The device named, or none (exit 2) where this machine has no such backend.
bool find_device(const std::string& name, Device& device) {
  if (name == "cpu:1") {
    std::unique_ptr<Backend> b = make_host_kernels_backend();
    device = b->device();
    register_backend(std::move(b));
    return true;
  }
  if (name != "cuda") throw Error("--device " + name + " (valid: cuda, cpu:1)");
  for (Backend* b : backends())
    if (b->device().kind == DeviceKind::cuda) {
      device = b->device();
      return true;
    }
  return false;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_json(const std::string& path, const std::string& text) {
  if (path.empty()) return;
  std::ofstream out(path);
  out << text;
  if (!out) throw Error("cannot write " + path);
}

int check(const Options& o, const Runtime& rt) {
  const data::JsonValue ref = data::parse_json(read_file(o.file), o.file);
  const gpu::TrainSpec spec = gpu::spec_from_json(ref.at("spec"));
  std::vector<gpu::StepRecord> want = gpu::run_from_json(ref, o.precision);
  if (o.steps > 0 && o.steps < static_cast<int64_t>(want.size()))
    want.resize(static_cast<size_t>(o.steps));
  const Bounds& bound = rt.compute == DType::bf16 ? kBf16 : kF32;
  std::printf(
      "%s: %lld steps on %s in %s against the CPU's (relative bounds: the first %lld "
      "steps' losses %g and norms %g, the rest's %g and %g)\n",
      o.file.c_str(), static_cast<long long>(want.size()), device_name(rt.device).c_str(),
      o.precision.c_str(), static_cast<long long>(kEarlySteps), bound.early_loss, bound.early_norm,
      bound.loss, bound.norm);
  std::printf("%6s %12s %12s %10s %12s %12s %10s\n", "step", "loss", "cpu", "rel", "norm", "cpu",
              "rel");
  double worst_loss = 0, worst_norm = 0, early_loss = 0, early_norm = 0;
  int failures = 0;
  std::string rows;
  gpu::train(spec, rt, static_cast<int64_t>(want.size()),
             [&](int64_t step, const gpu::StepRecord& got) {
               const gpu::StepRecord& w = want[static_cast<size_t>(step - 1)];
               const double dl = std::abs(got.loss - w.loss) / w.loss;
               const double dn = std::abs(got.grad_norm - w.grad_norm) / w.grad_norm;
               const bool early = step <= kEarlySteps;
               double& loss_seen = early ? early_loss : worst_loss;
               double& norm_seen = early ? early_norm : worst_norm;
               loss_seen = std::max(loss_seen, dl);
               norm_seen = std::max(norm_seen, dn);
               const bool ok = early ? dl <= bound.early_loss && dn <= bound.early_norm
                                     : dl <= bound.loss && dn <= bound.norm;
               failures += ok ? 0 : 1;
               if (step <= 5 || step % 10 == 0 || !ok)
                 std::printf("%6lld %12.6f %12.6f %10.2e %12.6f %12.6f %10.2e%s\n",
                             static_cast<long long>(step), got.loss, w.loss, dl, got.grad_norm,
                             w.grad_norm, dn, ok ? "" : "  FAIL");
               char row[256];
               std::snprintf(row, sizeof row,
                             "%s{\"step\": %lld, \"loss\": %.9g, \"cpu_loss\": %.9g, "
                             "\"grad_norm\": %.9g, \"cpu_grad_norm\": %.9g}",
                             rows.empty() ? "" : ",\n    ", static_cast<long long>(step), got.loss,
                             w.loss, got.grad_norm, w.grad_norm);
               rows += row;
             });
  std::printf(
      "worst relative differences: steps 1-%lld loss %.3g, norm %.3g; later loss %.3g, "
      "norm %.3g: %s\n",
      static_cast<long long>(kEarlySteps), early_loss, early_norm, worst_loss, worst_norm,
      failures == 0 ? "pass" : "FAIL");
  std::ostringstream j;
  j << "{\"device\": \"" << device_name(rt.device) << "\", \"precision\": \"" << o.precision
    << "\", \"early_steps\": " << kEarlySteps << ", \"early_loss_rel\": " << early_loss
    << ", \"early_norm_rel\": " << early_norm << ", \"later_loss_rel\": " << worst_loss
    << ", \"later_norm_rel\": " << worst_norm << ", \"bounds\": [" << bound.early_loss << ", "
    << bound.early_norm << ", " << bound.loss << ", " << bound.norm << "]"
    << ", \"passed\": " << (failures == 0 ? "true" : "false") << ",\n  \"steps\": [\n    " << rows
    << "]}\n";
  write_json(o.json, j.str());
  return failures == 0 ? 0 : 1;
}

int bench(const Options& o, const Runtime& rt) {
  const gpu::TrainSpec spec =
      gpu::spec_from_json(data::parse_json(read_file(o.file), o.file).at("spec"));
  Runtime meta;  // the model's FLOPs need no memory
  meta.device.kind = DeviceKind::meta;
  const double flops_per_token = Model(spec.dims, meta).train_flops_per_token();
  const int64_t tokens = spec.dims.batch * spec.dims.seq;
  const int64_t steps = o.steps > 0 ? o.steps : 10;
  using Clock = std::chrono::steady_clock;
  Clock::time_point start;
  gpu::train(spec, rt, o.warmup + steps, [&](int64_t step, const gpu::StepRecord&) {
    if (step == o.warmup) start = Clock::now();  // each step ends with its host read
  });
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double tok_s = static_cast<double>(tokens * steps) / seconds;
  const double mfu = spec.peak_flops > 0 ? tok_s * flops_per_token / spec.peak_flops : 0;
  std::printf(
      "%s on %s in %s: %lld tokens/step, %.3g GFLOP/token, %.1f ms/step, %.0f tokens/s, "
      "MFU %.1f%% of %.1f TFLOP/s\n",
      o.file.c_str(), device_name(rt.device).c_str(), o.precision.c_str(),
      static_cast<long long>(tokens), flops_per_token / 1e9, 1e3 * seconds / steps, tok_s,
      100 * mfu, spec.peak_flops / 1e12);
  std::ostringstream j;
  j << "{\"device\": \"" << device_name(rt.device) << "\", \"precision\": \"" << o.precision
    << "\", \"tokens_per_step\": " << tokens << ", \"flops_per_token\": " << flops_per_token
    << ", \"steps\": " << steps << ", \"seconds\": " << seconds << ", \"tokens_per_s\": " << tok_s
    << ", \"mfu\": " << mfu << ", \"peak_flops\": " << spec.peak_flops << "}\n";
  write_json(o.json, j.str());
  return 0;
}

}  // namespace
}  // namespace moetron

int main(int argc, char** argv) {
  using namespace moetron;
  Options o;
  const auto usage = [&] {
    std::fprintf(
        stderr,
        "usage: %s check REFERENCE [--device cuda|cpu:1] [--precision f32|bf16] "
        "[--steps N] [--json FILE]\n       %s bench SPEC [--device cuda|cpu:1] [--precision "
        "f32|bf16] [--steps N] [--warmup W] [--json FILE]\n",
        argv[0], argv[0]);
    return 2;
  };
  if (argc < 3) return usage();
  o.mode = argv[1];
  o.file = argv[2];
  if (o.mode != "check" && o.mode != "bench") return usage();
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--device")
      o.device = value;
    else if (flag == "--precision")
      o.precision = value;
    else if (flag == "--json")
      o.json = value;
    else if (flag == "--steps")
      o.steps = std::stoll(value);
    else if (flag == "--warmup")
      o.warmup = std::stoll(value);
    else
      return usage();
  }
  if ((argc - 3) % 2 != 0 || (o.precision != "f32" && o.precision != "bf16") || o.steps < 0 ||
      o.warmup < 1)
    return usage();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a line at a time into gpu_check.sh's logs
  try {
    Runtime rt;
    if (!find_device(o.device, rt.device)) {
      std::printf("no %s device here: nothing to run\n", o.device.c_str());
      return 2;
    }
    rt.compute = o.precision == "bf16" ? DType::bf16 : DType::f32;
    return o.mode == "check" ? check(o, rt) : bench(o, rt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moetron_gpu_train: %s\n", e.what());
    return 1;
  }
}
