// One JSON object per line (metrics.jsonl): flushed after every record, so a crash or a
// signal never loses what was already written.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "data/file_io.h"

namespace moetron {

class JsonLine {
 public:
  JsonLine& add(const std::string& key, double value);
  JsonLine& add(const std::string& key, int64_t value);
  JsonLine& add(const std::string& key, const std::string& value);
  JsonLine& add(const std::string& key, std::span<const int64_t> values);
  // Not an add() overload: a string literal would take it over the std::string one.
  JsonLine& add_bool(const std::string& key, bool value);
  std::string str() const;
  // Every number of the line as (key, value), for TensorBoard: the scalars, and each element of
  // an array of at most `max_array` numbers as (key/index, value); strings and nulls are left
  // out. The values are those str() prints.
  std::vector<std::pair<std::string, double>> numbers(size_t max_array) const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, encoded value
};

class MetricsWriter {
 public:
  // append: continue an existing file (a resumed run) instead of starting it anew.
  explicit MetricsWriter(const std::string& path, bool append = false);
  void write(const JsonLine& line);  // throws Error naming the file and the cause

 private:
  data::AppendFile out_;
};

}  // namespace moetron
