#pragma once
// One input of the fuzz_peft_config target, shared with its replay test (tests/io/test_patterns.cpp).
//
// Input: an adapter_config.json text and module names (model names, no base_model.model.), either
//   - binary form (the input holds a 0 byte): config \0 name \0 name ...  (names may hold newlines),
//   - text form (no 0 byte): the config on the first line, one name per following line.
//
// Contract: parse_json + peft_config::from_json either throw lola::error or give a config whose
// scaling() of every name throws lola::error or returns r and α taken from the first key, in the
// config's order, that matches the name on its own (pattern_set of that one key): the compiled
// set (trie of literal keys, RE2::Set of regex keys, first-match across both) must agree with
// matching key by key. Any other exception escapes to the caller.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/io/json.hpp"
#include "lola/io/peft.hpp"

namespace lola_fuzz {

struct peft_config_input {
  std::string_view config;
  std::vector<std::string_view> names;
};

inline peft_config_input split_peft_config_input(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const char separator = text.find('\0') != std::string_view::npos ? '\0' : '\n';
  peft_config_input in;
  std::size_t start = 0;
  bool first = true;
  while (start <= text.size()) {
    std::size_t end = text.find(separator, start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(start, end - start);
    if (first) in.config = part;
    else in.names.push_back(part);
    first = false;
    start = end + 1;
  }
  return in;
}

/// Runs one input; "" when the contract holds, else what broke it.
inline std::string check_peft_config_input(const std::uint8_t* data, std::size_t size) {
  using namespace lola::io;
  const auto in = split_peft_config_input(data, size);
  peft_config config;
  try {
    config = peft_config::from_json(parse_json(in.config, "fuzz adapter_config.json"), "fuzz adapter_config.json");
  } catch (const lola::error&) {
    return "";
  }
  // Key by key: the reference for first-match order, for small configs (each key compiled alone,
  // once per input).
  constexpr std::size_t most_keys = 32;
  struct one_key_sets {
    const pattern_values* patterns;
    std::vector<pattern_set> sets;
  };
  std::vector<one_key_sets> references;
  for (const pattern_values* patterns : {&config.rank_pattern, &config.alpha_pattern}) {
    references.push_back({patterns, {}});
    if (patterns->size() > most_keys) continue;
    try {
      for (const auto& entry : patterns->entries()) references.back().sets.push_back(pattern_set({entry.first}));
    } catch (const lola::error& e) {
      return std::string("a key compiled alone throws where the set did not: ") + e.what();
    }
  }
  for (const auto name : in.names) {
    for (const auto& reference : references) {
      const pattern_values::entry* found = nullptr;
      try {
        found = reference.patterns->match(name);
      } catch (const lola::error&) {
        continue;
      }
      if (reference.patterns->size() > most_keys) continue;
      std::size_t expected = pattern_set::npos;
      try {
        for (std::size_t i = 0; i < reference.sets.size() && expected == pattern_set::npos; ++i)
          if (reference.sets[i].find(name) == 0) expected = i;
      } catch (const lola::error& e) {
        return std::string("a key matched alone throws where the set did not: ") + e.what();
      }
      const std::size_t got =
          found ? static_cast<std::size_t>(found - reference.patterns->entries().data()) : pattern_set::npos;
      if (got != expected)
        return "name \"" + lola::io::printable(name) + "\": the set gives key " + std::to_string(got) +
               ", key-by-key matching gives " + std::to_string(expected);
    }
    try {
      const auto s = config.scaling(name);
      if (!(s.r > 0)) return "non-positive r";
    } catch (const lola::error&) {
    }
  }
  return "";
}

}  // namespace lola_fuzz
