#pragma once
// Checking lola::error: the error a call throws, and whether its message names something.

#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "lola/core/error.hpp"

namespace lola_test {

/// Runs f, which must throw lola::error; returns it (a failed check when nothing is thrown).
template <class F>
lola::error thrown_by(F&& f) {
  try {
    f();
  } catch (const lola::error& e) {
    return e;
  }
  FAIL("no lola::error was thrown");
  return lola::error(lola::error_code::invalid_argument, "unreachable");
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

}  // namespace lola_test
