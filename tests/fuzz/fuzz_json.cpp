// libFuzzer target: the strict JSON parser and writer.
//
// Contract under test: parse_json throws lola::error or returns a value; the value's dump, compact
// or indented, parses back (no exception of any kind) to an equal value, and dumping that again
// gives the same text. And the input's bytes as one string dump to JSON that parse_json with
// byte_escapes reads back to the same bytes.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lola/core/error.hpp"
#include "lola/io/json.hpp"

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_json: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using lola::io::json_value;
  using lola::io::parse_json;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  {
    // The input's bytes as a string value: the dump is JSON that byte_escapes reads back exactly.
    lola::io::json_parse_options byte_escapes;
    byte_escapes.byte_escapes = true;
    if (parse_json(json_value(text).dump(), "dump of bytes", byte_escapes).as_string() != text)
      violated("parse(dump(bytes), byte_escapes) != bytes");
  }
  json_value value;
  try {
    value = parse_json(text, "fuzz.json");
  } catch (const lola::error&) {
    return 0;
  }
  const std::string compact = value.dump();
  const json_value again = parse_json(compact, "dump");
  if (!(again == value)) violated("parse(dump(v)) != v");
  if (again.dump() != compact) violated("dump is not stable");
  const std::string indented = value.dump(2);
  const json_value pretty = parse_json(indented, "dump(2)");
  if (!(pretty == value)) violated("parse(dump(v, 2)) != v");
  if (!(json_value(value) == value)) violated("a copy differs");
  return 0;
}
