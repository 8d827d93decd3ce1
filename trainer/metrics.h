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
  std::string str() const;

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
