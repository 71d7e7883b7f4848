#pragma once
/// @file
/// Text that a terminal can be trusted with: names taken from files (module names, tensor keys,
/// pattern keys) and paths given by a user, made safe to echo in messages and text output.
///
/// printable(s) keeps every valid UTF-8 character that prints and escapes the rest, byte by byte,
/// as \xNN (two upper-case hex digits):
///   - C0 controls U+0000–U+001F (newline, carriage return, ESC, ...) and DEL U+007F;
///   - C1 controls U+0080–U+009F (U+009B is CSI on terminals that honour 8-bit controls);
///   - the line and paragraph separators U+2028, U+2029 and the bidirectional formatting
///     characters U+200E, U+200F, U+202A–U+202E, U+2066–U+2069, which break or reorder the
///     displayed line ("Trojan source");
///   - every byte that is not part of a well-formed UTF-8 sequence (a stray continuation byte, a
///     truncated sequence, an overlong form, a surrogate, a code point above U+10FFFF).
/// A backslash is written as \\, so the result reads back unambiguously: \xNN in the output is
/// always an escape, never a name that happened to contain those four characters.
/// The result is one line of valid UTF-8 with no character that moves the cursor or starts a
/// terminal control sequence; it equals s when s is printable ASCII without a backslash.
/// Cost: one pass over s, O(|s|).

#include <cstddef>
#include <string>
#include <string_view>

namespace lola::io::detail {

/// The length of the well-formed UTF-8 sequence starting at s[i] (1–4), or 0 when the bytes there
/// are not one (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t n = 0;
  unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return n;
}

/// The code point of the well-formed sequence of length n at s[i].
inline char32_t utf8_code_point(std::string_view s, std::size_t i, std::size_t n) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[k])); };
  if (n == 1) return byte(i);
  char32_t cp = byte(i) & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (byte(i + k) & 0x3F);
  return cp;
}

/// Whether code point cp is escaped although well formed (see the file comment).
inline bool escaped_code_point(char32_t cp) noexcept {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x200E || cp == 0x200F ||
         cp == 0x2028 || cp == 0x2029 || (cp >= 0x202A && cp <= 0x202E) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace lola::io::detail

namespace lola::io {

/// s with everything a terminal could act on escaped (see the file comment).
inline std::string printable(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = detail::utf8_sequence_length(s, i);
    if (n == 0 || detail::escaped_code_point(detail::utf8_code_point(s, i, n))) {
      const std::size_t bytes = n == 0 ? 1 : n;
      for (std::size_t k = 0; k < bytes; ++k) {
        const auto c = static_cast<unsigned char>(s[i + k]);
        out += "\\x";
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xF]);
      }
      i += bytes;
      continue;
    }
    if (s[i] == '\\') out.push_back('\\');
    out.append(s.data() + i, n);
    i += n;
  }
  return out;
}

}  // namespace lola::io
