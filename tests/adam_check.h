// Weights after AdamW steps against a reference run, element by element (tests/models'
// whole-model goldens, tests/parallel's layouts against one rank).
//
// An AdamW update is lr * m / (sqrt(v) + eps): about lr times the sign of the gradient while its
// history is short. Where a step's gradient is at the level of fp32 rounding (below 1e-5 of its
// tensor's largest that step; two fp32 implementations or summation orders differ by 1e-6 of
// it), its sign, and so that update, is decided by rounding. The check knows where from the
// reference's own gradients of every step (before clipping), and allows, beyond the strict
// bound every element must meet, as much as such updates can move an element: 2 lr for each step
// from the element's own first rounding-decided step on, and 0.1 lr for each step after the first
// rounding-decided step of its unit (the tensors sharing its name up to the last two parts: one
// routed expert, one FFN, one attention), whose other weights, once apart, change this one's
// later gradients (seen: up to 0.023 lr, in an expert whose first tokens came in step 2).
// Optionally (model_rate), a flip anywhere moves every weight a little through the activations
// it changes: the Gated DeltaNet hybrid's layouts, 0.0014 lr after 5 steps on AVX-512.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace moetron::test {

class AdamCheck {
 public:
  // The strict bound: |got - want| <= atol + rtol * |want| for every element. A gradient below
  // `rounding` of its tensor's largest is rounding-decided (1e-5 in fp32; bf16 GEMMs round their
  // operands to 2^-9, and updates flip below about 1e-3).
  // model_rate: lr per step after the first rounding-decided step anywhere in the model, for
  // every element (0: none; the Gated DeltaNet hybrid's layouts need it, tests/parallel).
  AdamCheck(int steps, double atol, double rtol, float rounding = 1e-5f, double model_rate = 0)
      : steps_(steps), atol_(atol), rtol_(rtol), rounding_(rounding), model_rate_(model_rate) {}

  // The reference's gradient of tensor `name` (the logical tensor, row-major) in step `step`.
  void add_gradient(const std::string& name, int step, std::span<const float> grad) {
    float largest = 0;
    for (float v : grad) largest = std::max(largest, std::abs(v));
    std::vector<int>& first = first_[name];
    if (first.empty()) first.assign(grad.size(), steps_);
    for (size_t i = 0; i < grad.size(); ++i)
      if (std::abs(grad[i]) < rounding_ * largest) {
        first[i] = std::min(first[i], step);
        auto [it, fresh] = unit_first_.emplace(unit_of(name), step);
        if (!fresh) it->second = std::min(it->second, step);
        model_first_ = std::min(model_first_, step);
      }
  }

  // got[i] against want[i], where got[i] is element index[i] of the logical tensor `name`
  // (index empty: the whole tensor, in order; an index of -1: padding, skipped).
  void expect_close(std::span<const float> got, std::span<const float> want,
                    const std::string& name, double lr, std::span<const int64_t> index = {}) const {
    ASSERT_EQ(got.size(), want.size()) << name;
    const auto own = first_.find(name);
    const auto unit = unit_first_.find(unit_of(name));
    const int unit_steps = unit == unit_first_.end() ? 0 : std::max(0, steps_ - unit->second - 1);
    const int model_steps = std::max(0, steps_ - model_first_ - 1);
    int failures = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const int64_t at = index.empty() ? static_cast<int64_t>(i) : index[i];
      if (at < 0) continue;
      const double diff = std::abs(double{got[i]} - double{want[i]});
      const int own_steps =
          own == first_.end() ? 0 : steps_ - own->second.at(static_cast<size_t>(at));
      const double bound = atol_ + rtol_ * std::abs(double{want[i]}) + 2 * lr * own_steps +
                           0.1 * lr * unit_steps + model_rate_ * lr * model_steps;
      if (diff > bound && ++failures <= 5)
        ADD_FAILURE() << name << "[" << at << "]: " << got[i] << " vs " << want[i] << " (|diff| "
                      << diff << " > " << bound << "; rounding decided " << own_steps
                      << " of its updates, and " << unit_steps << " of its unit's)";
    }
    EXPECT_EQ(failures, 0) << name;
  }

 private:
  static std::string unit_of(const std::string& name) {
    const size_t last = name.rfind('.');
    const size_t before = last == std::string::npos ? last : name.rfind('.', last - 1);
    return before == std::string::npos ? name : name.substr(0, before + 1);
  }

  int steps_;
  double atol_, rtol_;
  float rounding_;
  double model_rate_;
  int model_first_ = std::numeric_limits<int>::max();  // the model's first rounding-decided step
  std::map<std::string, std::vector<int>> first_;      // per element: first rounding-decided step
  std::map<std::string, int> unit_first_;              // per unit: the same, of any element
};

}  // namespace moetron::test
