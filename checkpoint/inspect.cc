#include "checkpoint/inspect.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "core/check.h"

namespace moetron::checkpoint {
namespace {

std::vector<float> read_whole(const H5File& file, const std::string& path) {
  const std::vector<uint64_t> shape = file.shape(path);
  const Rect all = shape.size() == 2 ? Rect{0, 0, shape[0], shape[1]} : Rect{0, 0, 1, shape[0]};
  std::vector<float> v(all.rows * all.cols);
  file.read(path, {&all, 1}, v);
  return v;
}

}  // namespace

void inspect(const std::filesystem::path& path, std::ostream& out, bool moments) {
  const config::RunConfig cfg = saved_config(path);
  const H5File file(path.string(), H5File::Mode::read);
  const config::ModelConfig& m = cfg.model();
  out << path.string() << ": " << file.string_attr("format") << " version "
      << file.int_attr("version") << "\n"
      << "  step " << file.int_attr("step") << ", " << file.int_attr("tokens_seen")
      << " tokens seen, " << file.int_attr("samples_consumed") << " windows, AdamW step "
      << file.int_attr("optimizer_step") << "\n"
      << "  saved by the layout " << file.string_attr("layout") << "\n"
      << "  model: vocab " << m.vocab_size() << ", hidden " << m.hidden_size() << ", "
      << m.num_hidden_layers() << " layers, " << m.num_attention_heads() << " heads ("
      << (m.num_key_value_heads() ? m.num_key_value_heads() : m.num_attention_heads())
      << " KV), FFN " << m.intermediate_size() << ", MTP depth " << m.num_nextn_predict_layers();
  if (m.moe().n_routed_experts() > 0)
    out << ", MoE from layer " << m.moe().first_k_dense_replace() << ": "
        << m.moe().n_routed_experts() << " experts top-" << m.moe().num_experts_per_tok() << " of "
        << m.moe().moe_intermediate_size() << " + " << m.moe().n_shared_experts() << " shared";
  out << "\n  dataset " << cfg.data().dataset_dir() << ", seed " << cfg.seed() << "\n\n";

  const std::vector<std::string> names = file.list("/params");
  size_t width = 4;
  for (const std::string& n : names) width = std::max(width, n.size());
  out << std::left << std::setw(static_cast<int>(width)) << "tensor"
      << "  " << std::setw(14) << "shape" << std::right << std::setw(12) << "L2 norm"
      << (moments ? "   exp_avg norm  exp_avg_sq norm" : "") << "\n";
  uint64_t elements = 0;
  std::ostringstream biases;
  for (const std::string& n : names) {
    const std::vector<uint64_t> shape = file.shape("/params/" + n);
    const std::vector<float> v = read_whole(file, "/params/" + n);
    elements += v.size();
    auto norm = [](const std::vector<float>& x) {
      double s = 0;
      for (float f : x) s += static_cast<double>(f) * f;
      return std::sqrt(s);
    };
    out << std::left << std::setw(static_cast<int>(width)) << n << "  " << std::setw(14)
        << shape_str({shape.begin(), shape.end()}) << std::right << std::setw(12)
        << std::setprecision(5) << std::defaultfloat << norm(v);
    if (moments && file.has("/exp_avg/" + n))
      out << std::setw(15) << norm(read_whole(file, "/exp_avg/" + n)) << std::setw(17)
          << norm(read_whole(file, "/exp_avg_sq/" + n));
    out << "\n";
    if (n.ends_with(".e_score_correction_bias") && !v.empty()) {
      const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
      double mean = 0, var = 0;
      for (float f : v) mean += f;
      mean /= static_cast<double>(v.size());
      for (float f : v) var += (f - mean) * (f - mean);
      biases << "  " << n.substr(0, n.size() - std::string(".e_score_correction_bias").size())
             << ": min " << std::setprecision(4) << *lo << ", max " << *hi << ", std "
             << std::sqrt(var / static_cast<double>(v.size())) << "\n";
    }
  }
  out << "\n" << names.size() << " tensors, " << elements << " parameters\n";
  if (!biases.str().empty()) out << "\nrouter biases (aux-loss-free balancing):\n" << biases.str();
}

}  // namespace moetron::checkpoint
