#include "trainer/metrics.h"

#include <cmath>
#include <cstdio>

#include "core/check.h"

namespace moetron {

JsonLine& JsonLine::add(const std::string& key, double value) {
  char buf[32];
  if (std::isfinite(value))
    std::snprintf(buf, sizeof buf, "%.9g", value);
  else
    std::snprintf(buf, sizeof buf, "null");  // JSON has no NaN; the log line says which
  fields_.emplace_back(key, buf);
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, int64_t value) {
  fields_.emplace_back(key, std::to_string(value));
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, const std::string& value) {
  std::string s = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') {
      s += '\\';
      s += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      s += esc;
    } else {
      s += c;
    }
  }
  fields_.emplace_back(key, s + "\"");
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, std::span<const int64_t> values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  fields_.emplace_back(key, s + "]");
  return *this;
}

std::string JsonLine::str() const {
  std::string s = "{";
  for (size_t i = 0; i < fields_.size(); ++i)
    s += (i ? ", \"" : "\"") + fields_[i].first + "\": " + fields_[i].second;
  return s + "}";
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) : out_(path, append) {}

void MetricsWriter::write(const JsonLine& line) {
  out_.write(line.str() + '\n');
}

}  // namespace moetron
