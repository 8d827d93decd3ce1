#include "checkpoint/inspect.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <vector>

#include "checkpoint/reader.h"
#include "core/check.h"
#include "core/tensor.h"

namespace moetron::checkpoint {
namespace {

using detail::concat;

constexpr uint64_t kBlockBytes = uint64_t{16} << 20;

// A tensor's L2 norm, and for a router bias its spread, read in blocks; records a checksum
// mismatch in `bad`.
struct Reading {
  double sum_sq = 0, sum = 0;
  float lo = INFINITY, hi = -INFINITY;
  uint64_t n = 0;
};

Reading read(const CheckpointReader& reader, const std::string& path, const StopToken& stop,
             std::vector<std::string>& bad) {
  Reading r;
  const bool ok = reader.read_rows(path, 1, kBlockBytes, [&](uint64_t, std::span<const float> v) {
    stop.check();
    for (float f : v) {
      r.sum_sq += static_cast<double>(f) * f;
      r.sum += f;
      r.lo = std::min(r.lo, f);
      r.hi = std::max(r.hi, f);
    }
    r.n += v.size();
  });
  if (!ok) bad.push_back(path);
  return r;
}

}  // namespace

void inspect(const std::filesystem::path& path, std::ostream& out, bool moments,
             const StopToken& stop) {
  const CheckpointReader reader(path);
  const Metadata& meta = reader.metadata();
  const config::RunConfig& cfg = reader.config();
  const config::ModelConfig& m = cfg.model();
  out << path.string() << ": " << kFormat << " version " << meta.version << "\n"
      << "  step " << meta.state.step << ", " << meta.state.tokens_seen << " tokens seen, "
      << meta.state.samples_consumed << " windows, optimizer "
      << (cfg.optimizer().kind() == config::OptimizerConfig::MUON ? "Muon + AdamW" : "AdamW")
      << " step " << meta.optimizer_step << "\n"
      << "  saved by the layout " << meta.layout << "\n"
      << "  model: vocab " << m.vocab_size() << ", hidden " << m.hidden_size() << ", "
      << m.num_hidden_layers() << " layers, " << m.num_attention_heads() << " heads ("
      << (m.num_key_value_heads() ? m.num_key_value_heads() : m.num_attention_heads())
      << " KV), FFN " << m.intermediate_size() << ", MTP depth " << m.num_nextn_predict_layers();
  if (m.moe().n_routed_experts() > 0)
    out << ", MoE from layer " << m.moe().first_k_dense_replace() << ": "
        << m.moe().n_routed_experts() << " experts top-" << m.moe().num_experts_per_tok() << " of "
        << m.moe().moe_intermediate_size() << " + " << m.moe().n_shared_experts() << " shared";
  out << "\n  dataset " << cfg.data().dataset_dir() << ", seed " << cfg.seed();
  if (!meta.state.dataset.empty()) out << ", data identity " << meta.state.dataset;
  out << "\n\n";

  std::vector<ModelTensor> tensors = reader.tensors();
  std::sort(tensors.begin(), tensors.end(),
            [](const ModelTensor& a, const ModelTensor& b) { return a.name < b.name; });
  size_t width = 4;
  for (const ModelTensor& t : tensors) width = std::max(width, t.name.size());
  out << std::left << std::setw(static_cast<int>(width)) << "tensor"
      << "  " << std::setw(14) << "shape" << std::right << std::setw(12) << "L2 norm"
      << (moments ? "   exp_avg norm  exp_avg_sq norm  muon_momentum norm" : "") << "\n";
  uint64_t elements = 0;
  std::ostringstream biases;
  std::vector<std::string> bad;
  for (const ModelTensor& t : tensors) {
    const size_t bad_before = bad.size();
    const Reading v = read(reader, "/params/" + t.name, stop, bad);
    elements += v.n;
    out << std::left << std::setw(static_cast<int>(width)) << t.name << "  " << std::setw(14)
        << shape_str({t.shape.begin(), t.shape.end()}) << std::right << std::setw(12)
        << std::setprecision(5) << std::defaultfloat << std::sqrt(v.sum_sq);
    // Each state tensor is verified whether shown or not; "-" where a group holds none.
    constexpr std::array<int, 3> kWidths = {15, 17, 20};
    for (size_t k = 0; k < kStateGroups.size(); ++k) {
      const bool has = reader.has_state(kStateGroups[k], t.name);
      double norm = 0;
      if (has)
        norm = std::sqrt(read(reader, concat("/", kStateGroups[k], "/", t.name), stop, bad).sum_sq);
      if (!moments) continue;
      out << std::setw(kWidths[k]);
      if (has)
        out << norm;
      else
        out << "-";
    }
    if (bad.size() > bad_before) out << "  CHECKSUM MISMATCH";
    out << "\n";
    if (t.name.ends_with(".e_score_correction_bias") && v.n > 0) {
      const double mean = v.sum / static_cast<double>(v.n);
      const double var = std::max(0.0, v.sum_sq / static_cast<double>(v.n) - mean * mean);
      biases << "  "
             << t.name.substr(0, t.name.size() - std::string(".e_score_correction_bias").size())
             << ": min " << std::setprecision(4) << v.lo << ", max " << v.hi << ", std "
             << std::sqrt(var) << "\n";
    }
  }
  out << "\n" << tensors.size() << " tensors, " << elements << " parameters";
  out << (bad.empty() ? "; every tensor and moment matches its checksum\n" : "\n");
  if (!biases.str().empty()) out << "\nrouter biases (aux-loss-free balancing):\n" << biases.str();
  if (!bad.empty()) {
    std::string list;
    for (size_t i = 0; i < bad.size() && i < 5; ++i) list += (i ? ", " : "") + bad[i];
    if (bad.size() > 5) list += ", ...";
    throw Error(concat(path.string(), ": ", bad.size(),
                       " datasets do not match their checksums (the file is corrupt): ", list));
  }
}

}  // namespace moetron::checkpoint
