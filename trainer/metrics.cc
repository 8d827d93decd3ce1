#include "trainer/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

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

JsonLine& JsonLine::add_bool(const std::string& key, bool value) {
  fields_.emplace_back(key, value ? "true" : "false");
  return *this;
}

std::string JsonLine::str() const {
  std::string s = "{";
  for (size_t i = 0; i < fields_.size(); ++i)
    s += (i ? ", \"" : "\"") + fields_[i].first + "\": " + fields_[i].second;
  return s + "}";
}

std::vector<std::pair<std::string, double>> JsonLine::numbers(size_t max_array) const {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [key, text] : fields_) {
    if (text.empty() || text[0] == '"' || text == "null") continue;
    if (text[0] != '[') {
      out.emplace_back(key, std::strtod(text.c_str(), nullptr));
      continue;
    }
    std::vector<double> items;
    for (const char* p = text.c_str() + 1; *p && *p != ']';) {
      char* end = nullptr;
      items.push_back(std::strtod(p, &end));
      p = end;
      while (*p == ',' || *p == ' ') ++p;
    }
    if (items.size() > max_array) continue;
    for (size_t i = 0; i < items.size(); ++i)
      out.emplace_back(key + "/" + std::to_string(i), items[i]);
  }
  return out;
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) : out_(path, append) {}

void MetricsWriter::write(const JsonLine& line) {
  out_.write(line.str() + '\n');
}

}  // namespace moetron
