// What the trainer tests share: a small prepared dataset, a small run config on it, and file
// helpers.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "configs/config.h"
#include "data/prepare.h"
#include "tests/data/test_util.h"

namespace moetron::testing {

// A prepared byte-level dataset shared by the tests of one test program.
inline const std::filesystem::path& dataset_dir() {
  static data::testing::TempDir dir;
  static const bool prepared = [] {
    // One document per file: 24 of them, so the split has some of each.
    data::PrepareOptions o;
    o.inputs = {data::testing::write_generated_corpus(dir / "corpus", 24, 300, 1)};
    o.output = dir / "prepared";
    o.val_fraction = 0.3;
    data::prepare_dataset(o);
    return true;
  }();
  (void)prepared;
  static const std::filesystem::path path = dir / "prepared";
  return path;
}

inline config::RunConfig small_run(const std::filesystem::path& run_dir, int steps) {
  config::RunConfig cfg = parse_config_text(R"(
    model { vocab_size: 256 hidden_size: 32 num_hidden_layers: 2 num_attention_heads: 4
            num_key_value_heads: 2 intermediate_size: 64 num_nextn_predict_layers: 1 }
    data { seq_len: 32 micro_batch_size: 4 }
    optimizer { lr: 3e-3 }
    logging { log_interval: 5 val_interval: 10 val_batches: 2 }
    threads: 2
  )",
                                            "test");
  cfg.mutable_data()->set_dataset_dir(dataset_dir().string());
  cfg.mutable_schedule()->set_total_steps(steps);
  cfg.mutable_schedule()->set_warmup_steps(std::min(5, steps));
  cfg.mutable_logging()->set_run_dir(run_dir.string());
  validate_config(cfg);
  return cfg;
}

// The small run with MoE layers: 4 routed experts (top-2) of width 16 and one shared expert.
inline config::RunConfig small_moe_run(const std::filesystem::path& run_dir, int steps) {
  config::RunConfig cfg = small_run(run_dir, steps);
  config::MoeConfig* moe = cfg.mutable_model()->mutable_moe();
  moe->set_n_routed_experts(4);
  moe->set_num_experts_per_tok(2);
  moe->set_moe_intermediate_size(16);
  moe->set_n_shared_experts(1);
  return cfg;
}

inline std::vector<std::string> lines_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

}  // namespace moetron::testing
