// Just enough JSON for manifest.json: a parser for the whole grammar (so hand edits and
// reordering are tolerated) and the string quoting the writer needs. Numbers keep their text so
// 64-bit counts round-trip exactly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moetron::data {

struct JsonMember;

class JsonValue {
 public:
  enum class Kind { null, boolean, number, string, array, object };

  Kind kind = Kind::null;
  bool boolean = false;
  std::string text;  // a string's value, or a number's literal
  std::vector<JsonValue> items;
  std::vector<JsonMember> members;  // an object's, in order (a struct, not a std::pair, as a
                                    // pair of this incomplete class fails clang's libstdc++)

  // Typed access; throw Error("<origin>: <path>: expected ...") on a mismatch or missing key.
  const JsonValue& at(std::string_view key) const;
  const JsonValue* find(std::string_view key) const;  // nullptr when absent
  const std::string& as_string() const;
  uint64_t as_u64() const;
  double as_double() const;
  bool as_bool() const;
  const std::vector<JsonValue>& as_array() const;

  std::string origin;  // "<file>: <path>" used in error messages
};

struct JsonMember {
  std::string key;
  JsonValue value;
};

// Throws Error("<origin>:<line>:<col>: ...") on malformed input.
JsonValue parse_json(std::string_view text, const std::string& origin);

// `s` as a JSON string literal, quotes included.
std::string json_quote(std::string_view s);

}  // namespace moetron::data
