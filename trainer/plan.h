// The plan of a run before it starts (docs/plan.md): what one rank holds in memory, the work and
// the traffic of one optimizer step, and a step time from a device's peak and its links. The
// memory of the model is what the real layers allocate: the model is built on the meta device
// (core/meta_backend.cc), which counts allocations and makes none, so any layout of any size
// plans in milliseconds from the same shapes a run uses.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "configs/moetron.pb.h"
#include "parallel/layout.h"

namespace moetron {

// A device the plan measures a run against (docs/plan.md lists the figures and their sources).
struct DeviceSpec {
  std::string name;         // "h100"
  std::string description;  // "NVIDIA H100 SXM 80 GB"
  double memory = 0;        // bytes per device
  double peak_flops = 0;    // per second: bf16 dense tensor cores, or the CPU's measured fp32 GEMM
  double fast_link = 0;     // bytes/s per device and direction inside a node (NVLink)
  double slow_link = 0;     // bytes/s per device and direction between nodes (InfiniBand)
  int per_node = 1;         // devices per node
  double runtime = 0;       // bytes a process holds before its tensors (libraries, contexts)
  double efficiency = 0;    // the share of peak_flops the step's GEMMs are assumed to reach
  bool measured = false;    // the figures are this machine's (cpu), not a data sheet's
  bool cuda = false;        // the CUDA backend runs there, its kernels' scratch with the tensors
};

// The devices `plan` knows: cpu (this machine: its memory, a GEMM probe, this process's
// resident set) and the data-sheet GPUs h100, h200, h800, b200.
std::vector<std::string> device_names();
// Throws Error naming `name` and the valid names when there is no such device. `ranks_here`:
// the ranks sharing this machine (cpu: each gets that share of its memory).
DeviceSpec device_spec(const std::string& name, int ranks_here = 1);
// This machine with its fp32 GEMM rate already measured (`train` measures it once).
DeviceSpec cpu_spec(double peak_flops, int ranks_here);

struct PlanOptions {
  // The busiest expert-parallel rank's received rows over the mean, for dropless routing (a
  // capacity factor bounds it instead).
  double imbalance = 1.25;
};

// Bytes per rank.
struct MemoryPlan {
  double params = 0, grads = 0, optimizer = 0;
  double weight_copies = 0;  // the hidden matrices' bf16 copies (bf16 precision)
  double activations =
      0;  // the buffers the layers allocate for the micro-batch (forward + backward)
  std::vector<std::pair<std::string, double>> activations_by_kind;  // per block of each kind
  double dispatch = 0;  // MoE layers' routed-row buffers (sized by the routing)
  // The CUDA backend's kernel scratch (the gated delta rule's phases, the largest it asks for;
  // the other kernels' few MB are in `runtime`'s allowance). None on the CPU.
  double kernel_scratch = 0;
  double runtime = 0;  // the process before its tensors
  double total() const {
    return params + grads + optimizer + weight_copies + activations + dispatch + kernel_scratch +
           runtime;
  }
};

struct RunPlan {
  Layout layout;
  DeviceSpec device;
  MemoryPlan memory;
  double dispatch_factor = 1;  // received rows over balanced, the dispatch buffers assume
  double params_total = 0;     // the model's logical parameters
  double flops_per_token = 0;  // matmul FLOPs of forward + backward (active experts only)
  double tokens_per_step = 0;  // the global batch
  std::map<std::string, double> comm_bytes;    // per group and step, payload bytes per rank
  std::map<std::string, double> comm_seconds;  // per group and step, at the group's link
  double compute_seconds = 0, step_seconds = 0, mfu = 0;
  bool fits() const { return memory.total() <= device.memory; }
};

// The plan of `cfg` (validated) on `world` ranks of `device`. Throws Error for a layout that does
// not split the model (as the run would).
RunPlan plan_run(const config::RunConfig& cfg, int world, const DeviceSpec& device,
                 const PlanOptions& options = {});

// "memory per rank: params 1.2 MB + grads ... = 412.0 MB of 24.0 GB (cpu)".
std::string memory_line(const RunPlan& plan);
// The whole report, for people (`moetron plan`).
std::string describe(const RunPlan& plan);
// The same as one JSON object.
std::string to_json(const RunPlan& plan);
// When the plan does not fit: the Error text, with the numbers and what would help.
std::string does_not_fit(const RunPlan& plan);

// This process's resident set now and at its peak (VmRSS, VmHWM of /proc/self/status), bytes.
double resident_bytes();
double peak_resident_bytes();

}  // namespace moetron
