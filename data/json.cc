#include "data/json.h"

#include <charconv>
#include <cstdlib>

#include "core/check.h"

namespace moetron::data {
namespace {

using detail::concat;

class Parser {
 public:
  Parser(std::string_view text, const std::string& origin) : s_(text), origin_(origin) {}

  JsonValue parse_document() {
    JsonValue v = parse_value(origin_ + ": $");
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n')
        line++, col = 1;
      else
        col++;
    }
    throw Error(concat(origin_, ":", line, ":", col, ": ", what));
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      pos_++;
  }

  bool consume(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      pos_++;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!consume(c)) fail(concat("expected '", c, "'"));
  }

  JsonValue parse_value(const std::string& path) {
    if (++depth_ > 64) fail("nesting deeper than 64");
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end of input");
    JsonValue v;
    v.origin = path;
    const char c = s_[pos_];
    if (c == '{') {
      pos_++;
      v.kind = JsonValue::Kind::object;
      if (!consume('}')) {
        do {
          skip_ws();
          std::string key = parse_string();
          expect(':');
          JsonValue member = parse_value(path + "." + key);
          v.members.push_back({std::move(key), std::move(member)});
        } while (consume(','));
        expect('}');
      }
    } else if (c == '[') {
      pos_++;
      v.kind = JsonValue::Kind::array;
      if (!consume(']')) {
        do v.items.push_back(parse_value(concat(path, "[", v.items.size(), "]")));
        while (consume(','));
        expect(']');
      }
    } else if (c == '"') {
      v.kind = JsonValue::Kind::string;
      v.text = parse_string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = JsonValue::Kind::number;
      const size_t start = pos_;
      while (pos_ < s_.size() &&
             std::string_view("+-0123456789.eE").find(s_[pos_]) != std::string_view::npos)
        pos_++;
      v.text = std::string(s_.substr(start, pos_ - start));
    } else if (s_.substr(pos_, 4) == "true" || s_.substr(pos_, 5) == "false") {
      v.kind = JsonValue::Kind::boolean;
      v.boolean = s_[pos_] == 't';
      pos_ += v.boolean ? 4 : 5;
    } else if (s_.substr(pos_, 4) == "null") {
      pos_ += 4;
    } else {
      fail(concat("unexpected character '", c, "'"));
    }
    depth_--;
    return v;
  }

  std::string parse_string() {
    if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string");
    pos_++;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          append_utf8(out, parse_hex4());
          break;
        default:
          fail(concat("bad escape '\\", e, "'"));
      }
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t cp = 0;
    auto [p, ec] = std::from_chars(s_.data() + pos_, s_.data() + pos_ + 4, cp, 16);
    if (ec != std::errc() || p != s_.data() + pos_ + 4) fail("bad \\u escape");
    pos_ += 4;
    return cp;
  }

  // Surrogate pairs are not combined: the writer never emits \u escapes above 0x1f.
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  std::string_view s_;
  const std::string& origin_;
  size_t pos_ = 0;
  int depth_ = 0;
};

const char* kind_name(JsonValue::Kind k) {
  switch (k) {
    case JsonValue::Kind::null:
      return "null";
    case JsonValue::Kind::boolean:
      return "a boolean";
    case JsonValue::Kind::number:
      return "a number";
    case JsonValue::Kind::string:
      return "a string";
    case JsonValue::Kind::array:
      return "an array";
    case JsonValue::Kind::object:
      return "an object";
  }
  return "?";
}

void expect_kind(const JsonValue& v, JsonValue::Kind want) {
  if (v.kind != want)
    throw Error(concat(v.origin, ": expected ", kind_name(want), ", found ", kind_name(v.kind)));
}

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  expect_kind(*this, Kind::object);
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

const JsonValue& JsonValue::at(std::string_view key) const {
  const JsonValue* v = find(key);
  if (!v) throw Error(concat(origin, ": missing key \"", key, "\""));
  return *v;
}

const std::string& JsonValue::as_string() const {
  expect_kind(*this, Kind::string);
  return text;
}

uint64_t JsonValue::as_u64() const {
  expect_kind(*this, Kind::number);
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size())
    throw Error(concat(origin, ": expected a non-negative integer, found ", text));
  return v;
}

double JsonValue::as_double() const {
  expect_kind(*this, Kind::number);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size())
    throw Error(concat(origin, ": expected a number, found ", text));
  return v;
}

bool JsonValue::as_bool() const {
  expect_kind(*this, Kind::boolean);
  return boolean;
}

const std::vector<JsonValue>& JsonValue::as_array() const {
  expect_kind(*this, Kind::array);
  return items;
}

JsonValue parse_json(std::string_view text, const std::string& origin) {
  return Parser(text, origin).parse_document();
}

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += concat("\\u00", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]);
        else
          out += c;
    }
  }
  return out + "\"";
}

}  // namespace moetron::data
