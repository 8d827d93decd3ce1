#include "trainer/plan.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include "core/backend.h"
#include "core/check.h"
#include "core/gemm_peak.h"
#include "core/meta_communicator.h"
#include "models/block.h"
#include "models/model.h"
#include "models/model_config.h"
#include "models/rope.h"
#include "parallel/comm_volume.h"
#include "trainer/metrics.h"

namespace moetron {
namespace {

using detail::concat;

// A field of /proc/self/status or /proc/meminfo in bytes ("VmHWM:  1234 kB"), 0 when absent.
double proc_kib_field(const char* file, const std::string& field) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(field + ":")) return std::stod(line.substr(field.size() + 1)) * 1024.0;
  return 0;
}

// v with a decimal prefix (k, M, G) and `unit`: "23.1 GB", "7.0 MFLOP".
std::string scaled(double v, const char* unit) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  if (v >= 1e9)
    os << v / 1e9 << " G" << unit;
  else if (v >= 1e6)
    os << v / 1e6 << " M" << unit;
  else
    os << v / 1e3 << " k" << unit;
  return os.str();
}

std::string bytes_str(double b) {
  return scaled(b, "B");
}

// GPUs: the vendors' data sheets (docs/plan.md): bf16 dense tensor-core peak, NVLink per
// direction (half the bidirectional figure), one 400 Gb/s InfiniBand NIC per GPU. The runtime
// (CUDA context, library workspaces, NCCL buffers) and the efficiency are allowances, not
// measurements: moetron has not run on a GPU.
DeviceSpec gpu(std::string name, std::string description, double memory_gb, double bf16_tflops,
               double nvlink_gbps) {
  return {.name = std::move(name),
          .description = std::move(description),
          .memory = memory_gb * 1e9,
          .peak_flops = bf16_tflops * 1e12,
          .fast_link = nvlink_gbps * 1e9,
          .slow_link = 50e9,
          .per_node = 8,
          .runtime = 1e9,
          .efficiency = 0.5,
          .measured = false,
          .cuda = true};
}

// What one expert-parallel rank's dispatch buffers hold for one MoE layer (models/moe.cc,
// models/token_dispatcher.cc): the sent side (the gathered inputs, their gradients and, with
// ep > 1, the combined outputs) and the expert side (inputs and gradients with ep > 1, gate/up,
// the activation, the output and their gradients), plus the dispatcher's transit rows and
// permutations.
double dispatch_bytes(const ModelDims& d, const Layout& l, double factor) {
  const int64_t slice = d.rows() / l.tp;  // the tokens this rank routes (tp divides them)
  const double sent = static_cast<double>(slice * d.moe.k);
  // With ep > 1 the received rows change from step to step, and a buffer that has to grow takes
  // a quarter more than it needs (models/row_buffer.h): the expert side holds that headroom.
  const double local = sent * factor * (l.ep > 1 ? 1.25 : 1.0), h = static_cast<double>(d.hidden),
               i = static_cast<double>(d.moe.intermediate);
  const bool ep = l.ep > 1;
  const double floats =
      sent * h * (ep ? 3 : 2) + local * (h * (ep ? 4 : 2) + 6 * i) + (ep ? local * h : 0);
  return 4 * floats + (ep ? 2 * 4 * local : 0);
}

std::string block_kind(MixerKind mixer, bool moe) {
  const char* m = mixer == MixerKind::mla              ? "MLA"
                  : mixer == MixerKind::gated_deltanet ? "Gated DeltaNet"
                                                       : "attention";
  return concat(m, moe ? " + MoE" : " + dense FFN", " block");
}

// The ring algorithms' bytes on the wire per rank from the payload the communicator counts:
// an all-reduce of S (payload S) moves 2 (n - 1) / n S; ZeRO-1's reduce-scatter and gather of S
// (payload 2 S / n) move as much, (n - 1) times the payload; an all-to-all's payload is what
// crosses.
double wire_bytes(const std::string& group, double payload, const Layout& l) {
  const auto ring = [](int n) { return 2.0 * (n - 1) / n; };
  if (group == "ep") return payload;
  if (group == "dp") return l.zero1 ? payload * (l.dp - 1) : payload * ring(l.dp);
  if (group == "edp") return l.zero1 ? payload * (l.edp() - 1) : payload * ring(l.edp());
  return payload * ring(group == "tp" ? l.tp : l.world);
}

// How far apart a group's ranks are (process_groups.h: tp and ep runs of adjacent ranks, dp and
// edp strided over the world): a group inside one node talks over the fast link.
int group_span(const std::string& group, const Layout& l) {
  if (group == "tp") return l.tp;
  if (group == "ep") return l.ep;
  return l.world;
}

}  // namespace

std::vector<std::string> device_names() {
  return {"cpu", "h100", "h200", "h800", "b200"};
}

DeviceSpec cpu_spec(double peak_flops, int ranks_here) {
  // This machine: its memory shared by the ranks on it, its fp32 GEMM rate (the MFU denominator
  // of `train`), the share of it moetron's step reaches on this kind of machine (docs/bench.md),
  // and this process's resident set as the runtime. Ranks talk over shared memory (an
  // allowance).
  const double memory = proc_kib_field("/proc/meminfo", "MemTotal") / ranks_here;
  return {.name = "cpu",
          .description = ranks_here > 1 ? concat("this machine's CPU (fp32, 1/", ranks_here,
                                                 " of its memory per rank)")
                                        : std::string("this machine's CPU (fp32)"),
          .memory = memory,
          .peak_flops = peak_flops,
          .fast_link = 5e9,
          .slow_link = 5e9,
          .per_node = 1 << 30,
          .runtime = resident_bytes(),
          .efficiency = 0.75,
          .measured = true};
}

DeviceSpec device_spec(const std::string& name, int ranks_here) {
  if (name == "h100") return gpu("h100", "NVIDIA H100 SXM 80 GB", 80, 989.4, 450);
  if (name == "h200") return gpu("h200", "NVIDIA H200 SXM 141 GB", 141, 989.4, 450);
  if (name == "h800") return gpu("h800", "NVIDIA H800 SXM 80 GB", 80, 989.4, 200);
  if (name == "b200") return gpu("b200", "NVIDIA B200 (HGX) 180 GB", 180, 2250, 900);
  if (name == "cpu") return cpu_spec(measure_gemm_gflops(2048, 3) * 1e9, ranks_here);
  std::string valid;
  for (const std::string& n : device_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw Error(concat("plan: no device \"", name, "\" (valid: ", valid, ")"));
}

double resident_bytes() {
  return proc_kib_field("/proc/self/status", "VmRSS");
}
double peak_resident_bytes() {
  return proc_kib_field("/proc/self/status", "VmHWM");
}

RunPlan plan_run(const config::RunConfig& cfg, int world, const DeviceSpec& device,
                 const PlanOptions& options) {
  RunPlan p;
  p.layout = resolve_layout(cfg, world);
  p.device = device;
  const Layout& l = p.layout;
  const config::DataConfig& data = cfg.data();
  // Rank 0's place in the layout, on the meta device with the meta device's groups.
  MetaCommunicator tp("tp", l.tp), ep("ep", l.ep);
  Runtime rt;
  rt.device = Device{DeviceKind::meta, 0};
  rt.tp = {l.tp, 0, l.tp > 1 ? &tp : nullptr};
  rt.ep = {l.ep, 0, l.ep > 1 ? &ep : nullptr};
  rt.compute = compute_dtype(cfg.precision());
  Backend& meta = meta_backend();

  // The model as this rank builds it and as one training step leaves it: parameters, gradients
  // and the layers' buffers at their largest (the step's transients included).
  const int64_t before = meta.memory_use().live;
  meta.reset_peak();
  Model model(cfg.model(), data.micro_batch_size(), data.seq_len(), rt);
  const ModelDims& d = model.dims();
  {
    const std::vector<int32_t> windows(static_cast<size_t>(d.batch * d.window()), 0);
    Tensor sums = model.new_sums();
    model.forward_backward(windows, 1.0f, 1.0f, sums);
  }
  const ParamTable& params = model.params();
  MemoryPlan& m = p.memory;
  m.params = static_cast<double>(params.numel()) * 4;
  m.grads = m.params;
  m.weight_copies = static_cast<double>(params.weight_copies_numel()) * 2;
  m.activations =
      static_cast<double>(meta.memory_use().peak - before) - m.params - m.grads - m.weight_copies;
  if (device.cuda) m.kernel_scratch = static_cast<double>(meta.memory_use().kernel_scratch);
  {
    // One block of each kind, built and run alone, for the breakdown.
    const RopeTables rope = RopeTables::make(d, d.seq, rt.device);
    std::set<std::pair<MixerKind, bool>> seen;
    for (int64_t i = 0; i < d.layers + d.mtp_depth; ++i) {
      const auto kind = std::make_pair(d.mixer(i), d.is_moe_layer(i));
      if (!seen.insert(kind).second) continue;
      const Tensor x = rt.empty({d.rows(), d.hidden});
      Tensor y = rt.empty(x.shape()), dx = rt.empty(x.shape());
      ParamTable scratch;
      const int64_t base = meta.memory_use().live;
      Block block(scratch, "plan.", d, rope, kind.first, kind.second, rt);
      const int64_t built = meta.memory_use().live - base;  // the buffers it is built with
      scratch.allocate({}, rt.device);
      const int64_t start = meta.memory_use().live;
      meta.reset_peak();
      block.forward(x, y);
      block.backward(y, x, dx);
      const int64_t run = meta.memory_use().peak - start;  // and those a step grows
      m.activations_by_kind.emplace_back(block_kind(kind.first, kind.second),
                                         static_cast<double>(run + built));
    }
  }

  // Optimizer state: AdamW's two moments of what this rank updates (under ZeRO-1 its part of
  // each segment); with Muon, one momentum for the hidden matrices it owns and AdamW's moments
  // for the rest.
  const double dense = static_cast<double>(params.dense_numel());
  const double expert = static_cast<double>(params.numel() - params.dense_numel());
  const bool muon = cfg.optimizer().kind() == config::OptimizerConfig::MUON;
  double hidden_dense = 0, hidden_expert = 0;
  if (muon)
    for (const ParamInfo& info : params.infos())
      if (is_hidden_matrix(info.name, info.kind))
        (info.is_expert() ? hidden_expert : hidden_dense) += static_cast<double>(info.numel());
  const double adam_dense = dense - hidden_dense, adam_expert = expert - hidden_expert;
  const double owned_adam =
      l.zero1 ? adam_dense / l.dp + adam_expert / l.edp() : adam_dense + adam_expert;
  m.optimizer = 4 * (2 * owned_adam + hidden_dense / l.dp + hidden_expert / l.edp());

  // The MoE layers' routed rows: dropless at the stated imbalance, or bounded by the capacity
  // factor; with ep = 1 a rank's experts receive exactly its rows.
  const double cf = cfg.model().moe().capacity_factor();
  p.dispatch_factor = l.ep > 1 ? (cf > 0 ? cf : options.imbalance) : 1.0;
  int64_t moe_layers = 0;
  for (int64_t i = 0; i < d.layers + d.mtp_depth; ++i) moe_layers += d.is_moe_layer(i) ? 1 : 0;
  m.dispatch = static_cast<double>(moe_layers) * dispatch_bytes(d, l, p.dispatch_factor);
  m.runtime = device.runtime;

  // Logical parameters: each tensor's Hugging Face shape once, each expert once.
  for (const ParamInfo& info : params.infos())
    if (info.kind != ParamKind::buffer)
      p.params_total += info.is_expert() ? static_cast<double>(info.numel()) * l.ep
                                         : static_cast<double>(shape_numel(info.global_shape));

  // Work and traffic of a step.
  const int accum = data.grad_accum_steps();
  p.flops_per_token = model.train_flops_per_token();
  const double tokens_per_rank =
      static_cast<double>(data.micro_batch_size() * data.seq_len()) * accum;
  p.tokens_per_step = tokens_per_rank * l.dp;
  p.comm_bytes = expected_comm_bytes(d, params, l, accum, static_cast<double>(l.ep - 1) / l.ep);
  // The trainer's metrics add each MoE layer's rows per expert-parallel rank (i64) to the world.
  if (l.ep > 1) p.comm_bytes["world"] += static_cast<double>(moe_layers * l.ep * 8);
  p.compute_seconds = p.flops_per_token * tokens_per_rank / l.tp / device.peak_flops;
  double exposed = 0;
  for (const auto& [group, bytes] : p.comm_bytes) {
    if (bytes <= 0) continue;
    const double link =
        group_span(group, l) <= device.per_node ? device.fast_link : device.slow_link;
    const double s = wire_bytes(group, bytes, l) / link;
    p.comm_seconds[group] = s;
    // The gradient reductions run during backward (two thirds of the compute) when overlapped.
    const bool overlapped = (group == "dp" || group == "edp") && l.overlap_grad_reduce;
    exposed += overlapped ? 0 : s;
  }
  const double compute = p.compute_seconds / device.efficiency;
  double reductions = 0;
  for (const char* g : {"dp", "edp"})
    if (l.overlap_grad_reduce && p.comm_seconds.count(g)) reductions += p.comm_seconds.at(g);
  exposed += std::max(0.0, reductions - compute * 2 / 3);
  p.step_seconds = compute + exposed;
  p.mfu = p.compute_seconds / p.step_seconds;
  return p;
}

std::string memory_line(const RunPlan& p) {
  const MemoryPlan& m = p.memory;
  std::ostringstream os;
  os << "memory per rank (plan): params " << bytes_str(m.params) << " + grads "
     << bytes_str(m.grads) << " + optimizer " << bytes_str(m.optimizer);
  if (m.weight_copies > 0) os << " + bf16 weights " << bytes_str(m.weight_copies);
  os << " + activations " << bytes_str(m.activations);
  if (m.dispatch > 0) os << " + MoE dispatch " << bytes_str(m.dispatch);
  if (m.kernel_scratch > 0) os << " + kernel scratch " << bytes_str(m.kernel_scratch);
  os << " + runtime " << bytes_str(m.runtime) << " = " << bytes_str(m.total()) << " of "
     << bytes_str(p.device.memory) << " (" << p.device.name << ")";
  return os.str();
}

std::string does_not_fit(const RunPlan& p) {
  std::ostringstream os;
  os << "the layout " << p.layout.describe() << " does not fit: " << memory_line(p)
     << ". More tensor or expert parallelism, ZeRO-1 (parallel.zero1), a smaller "
        "data.micro_batch_size or more ranks each lower a part of it (moetron plan shows "
        "which)";
  return os.str();
}

std::string describe(const RunPlan& p) {
  const MemoryPlan& m = p.memory;
  std::ostringstream os;
  os << std::fixed;
  os << "layout: " << p.layout.describe() << "; " << p.layout.world << " x " << p.device.description
     << "\n";
  os << "model: " << std::setprecision(2)
     << (p.params_total >= 1e9 ? p.params_total / 1e9 : p.params_total / 1e6)
     << (p.params_total >= 1e9 ? "B" : "M") << " parameters, " << scaled(p.flops_per_token, "FLOP")
     << " per token (forward + backward, active experts)\n";
  os << "memory per rank:\n";
  const auto row = [&](const std::string& what, double b) {
    os << "  " << std::left << std::setw(46) << what << std::right << std::setw(10) << bytes_str(b)
       << "\n";
  };
  row("parameters (fp32)", m.params);
  row("gradients (fp32)", m.grads);
  row(p.layout.zero1 ? "optimizer state (ZeRO-1 part)" : "optimizer state", m.optimizer);
  if (m.weight_copies > 0) row("bf16 copies of the weights", m.weight_copies);
  row("activations and layer buffers", m.activations);
  for (const auto& [kind, b] : m.activations_by_kind) row("  of which one " + kind, b);
  if (m.dispatch > 0) {
    std::ostringstream what;
    what << "MoE dispatch buffers (x" << std::fixed << std::setprecision(2) << p.dispatch_factor
         << ")";
    row(what.str(), m.dispatch);
  }
  if (m.kernel_scratch > 0) row("kernel scratch (the gated delta rule's)", m.kernel_scratch);
  row(p.device.measured ? "runtime (this process, measured)" : "runtime (allowance)", m.runtime);
  row("total", m.total());
  os << "  device memory " << bytes_str(p.device.memory) << ": "
     << (p.fits() ? "fits" : "DOES NOT FIT") << " (" << std::setprecision(0)
     << 100 * m.total() / p.device.memory << "%)\n";
  os << "communication per step (payload bytes per rank):\n";
  for (const auto& [group, bytes] : p.comm_bytes) {
    if (bytes <= 0) continue;
    os << "  " << std::left << std::setw(6) << group << std::right << std::setw(12)
       << bytes_str(bytes);
    if (p.comm_seconds.count(group))
      os << "  " << std::setprecision(4) << p.comm_seconds.at(group) << " s";
    os << "\n";
  }
  os << "step: " << std::setprecision(0) << p.tokens_per_step << " tokens, compute "
     << std::setprecision(4) << p.compute_seconds << " s at peak (" << std::setprecision(0)
     << (p.device.measured ? p.device.peak_flops / 1e9 : p.device.peak_flops / 1e12)
     << (p.device.measured ? " GFLOP/s" : " TFLOP/s") << "), at " << 100 * p.device.efficiency
     << "% of peak " << std::setprecision(4) << p.compute_seconds / p.device.efficiency
     << " s; estimated step " << p.step_seconds << " s, " << std::setprecision(0)
     << p.tokens_per_step / p.step_seconds << " tokens/s, MFU " << std::setprecision(1)
     << 100 * p.mfu << "%\n";
  os << "  " << std::setprecision(0)
     << p.layout.world * p.step_seconds / p.tokens_per_step * 1e12 / 3600
     << " device-hours per trillion tokens\n";
  return os.str();
}

std::string to_json(const RunPlan& p) {
  const MemoryPlan& m = p.memory;
  const auto bytes = [](double b) { return static_cast<int64_t>(std::llround(b)); };
  JsonLine j;
  j.add("world", int64_t{p.layout.world}).add("dp", int64_t{p.layout.dp});
  j.add("tp", int64_t{p.layout.tp})
      .add("ep", int64_t{p.layout.ep})
      .add_bool("zero1", p.layout.zero1);
  j.add("device", p.device.name).add("device_memory", bytes(p.device.memory));
  j.add("params_total", bytes(p.params_total));
  j.add("memory.params", bytes(m.params)).add("memory.grads", bytes(m.grads));
  j.add("memory.optimizer", bytes(m.optimizer)).add("memory.weight_copies", bytes(m.weight_copies));
  j.add("memory.activations", bytes(m.activations));
  j.add("memory.dispatch", bytes(m.dispatch)).add("memory.kernel_scratch", bytes(m.kernel_scratch));
  j.add("memory.runtime", bytes(m.runtime));
  j.add("memory.total", bytes(m.total())).add_bool("fits", p.fits());
  j.add("flops_per_token", p.flops_per_token).add("tokens_per_step", bytes(p.tokens_per_step));
  // Named as metrics.jsonl names what a run moved.
  for (const auto& [group, b] : p.comm_bytes) j.add("comm." + group + ".bytes", bytes(b));
  j.add("compute_seconds", p.compute_seconds).add("step_seconds", p.step_seconds);
  j.add("mfu", p.mfu);
  return j.str();
}

}  // namespace moetron
