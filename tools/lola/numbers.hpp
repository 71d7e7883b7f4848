#pragma once
// Exact parsing of the tool's numeric flags. Each parser returns the value, or an empty optional
// and a reason (for the usage error) when the text is not exactly a number of the kind asked for:
//   integer  only the digits 0-9 (no sign, no space, no "+", no exponent, no fraction, no suffix),
//            read in base 10 into a 64-bit signed integer and within [low, high]: "8" is 8;
//            "8.0", "1e3", " 8", "+8", "8x", "-1" and 9223372036854775808 (2^63) are refused,
//            never truncated or wrapped;
//   real     std::from_chars's general form (an optional '-', digits with an optional fraction and
//            exponent; no '+', no space, no hex) read to the nearest double, and finite: "inf",
//            "nan" and values beyond the double range (1e400) are refused;
//   reals    a comma-separated list of reals with no empty item ("1,,2", "1,", "" are refused).
// The values are parsed with std::from_chars, which ignores the locale.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace lola_cli {

/// text as a base-10 integer in [low, high]; on failure nullopt and `why` says what is wrong.
inline std::optional<std::int64_t> parse_integer(std::string_view text, std::int64_t low, std::int64_t high,
                                                 std::string& why) {
  const std::string range = "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
  bool digits = !text.empty();
  for (char c : text) digits = digits && c >= '0' && c <= '9';
  if (!digits) {
    why = "must be " + range + " written with the digits 0-9 only";
    return std::nullopt;
  }
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && (value < low || value > high))) {
    why = "must be " + range;
    return std::nullopt;
  }
  if (ec != std::errc() || end != text.data() + text.size()) {  // unreachable after the digit check
    why = "must be " + range;
    return std::nullopt;
  }
  return value;
}

/// text as a finite double; on failure nullopt and `why` says what is wrong.
inline std::optional<double> parse_real(std::string_view text, std::string& why) {
  double value = 0;
  const char* const last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(text.data(), last, value, std::chars_format::general);
  if (text.empty() || ec == std::errc::invalid_argument || end != last) {
    why = "must be a number (digits, an optional '-', fraction and exponent)";
    return std::nullopt;
  }
  if (ec == std::errc::result_out_of_range || !std::isfinite(value)) {
    why = "must be a finite number within the range of a double";
    return std::nullopt;
  }
  return value;
}

/// text as a comma-separated list of finite doubles with no empty item.
inline std::optional<std::vector<double>> parse_reals(std::string_view text, std::string& why) {
  std::vector<double> values;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item = text.substr(start, comma == std::string_view::npos ? comma : comma - start);
    if (item.empty()) {
      why = "must be a comma-separated list of numbers without empty items";
      return std::nullopt;
    }
    std::string item_why;
    const auto v = parse_real(item, item_why);
    if (!v) {
      why = "item " + std::to_string(values.size() + 1) + " " + item_why;
      return std::nullopt;
    }
    values.push_back(*v);
    if (comma == std::string_view::npos) return values;
    start = comma + 1;
  }
}

}  // namespace lola_cli
