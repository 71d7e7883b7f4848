// The strict JSON reader and writer: exact output text, every RFC 8259 rejection with its byte
// offset, UTF-8 validation, duplicate keys, the nesting limit, and exact integer access.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "lola/io/json.hpp"

using lola::io::json_parse_options;
using lola::io::json_value;
using lola::io::parse_json;

namespace {

// The message parse_json gives for text named "doc", or "(accepted)".
std::string rejection(std::string_view text, const json_parse_options& options = {}) {
  try {
    parse_json(text, "doc", options);
  } catch (const lola::error& e) {
    CHECK(e.code() == lola::error_code::invalid_file);
    return e.what();
  }
  return "(accepted)";
}

std::string message_at(std::size_t offset, std::string_view reason) {
  return "lola: doc: invalid JSON at byte " + std::to_string(offset) + ": " + std::string(reason);
}

// Checks that text is rejected at offset with a reason that starts with the given one.
void check_rejected(std::string_view text, std::size_t offset, std::string_view reason,
                    const json_parse_options& options = {}) {
  const std::string expected = message_at(offset, reason);
  CAPTURE(text);
  CHECK(rejection(text, options).substr(0, expected.size()) == expected);
}

// The message of the lola::error that f throws, checking its code.
template <class F>
std::string error_of(F&& f, lola::error_code code) {
  try {
    f();
  } catch (const lola::error& e) {
    CHECK(e.code() == code);
    return e.what();
  }
  return "(no error)";
}

// Whether s is well-formed UTF-8, decided independently of json.hpp's table: each sequence is
// decoded to its code point, which must need exactly that many bytes (no overlong form), must not
// be a UTF-16 surrogate, and must be at most U+10FFFF.
bool well_formed_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const std::size_t length = lead < 0x80          ? 1
                               : lead >> 5 == 0x6   ? 2
                               : lead >> 4 == 0xE   ? 3
                               : lead >> 3 == 0x1E  ? 4
                                                    : 0;
    if (length == 0 || i + length > s.size()) return false;
    std::uint32_t cp = length == 1 ? lead : lead & (0x7F >> length);
    for (std::size_t k = 1; k < length; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = cp << 6 | (c & 0x3F);
    }
    const std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < smallest[length] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += length;
  }
  return true;
}

json_parse_options with_byte_escapes() {
  json_parse_options o;
  o.byte_escapes = true;
  return o;
}

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (std::size_t i = 0; i < n; ++i) out.append(s);
  return out;
}

}  // namespace

TEST_SUITE("io.json") {
  TEST_CASE("compact and indented dumps have the exact expected text and parse back equal") {
    const std::string text =
        " {\"name\": \"lola\", \"rank\": 16, \"alpha\": 32.5, \"targets\": [\"q_proj\", "
        "\"v_proj\"], \"bias\": null, \"ok\": true, \"nested\": {\"empty_a\": [], "
        "\"empty_o\": {}, \"x\": [1, [2, {\"y\": false}]]}} ";
    const json_value v = parse_json(text);
    const std::string compact =
        R"({"name":"lola","rank":16,"alpha":32.5,"targets":["q_proj","v_proj"],"bias":null,)"
        R"("ok":true,"nested":{"empty_a":[],"empty_o":{},"x":[1,[2,{"y":false}]]}})";
    const std::string indented = R"({
  "name": "lola",
  "rank": 16,
  "alpha": 32.5,
  "targets": [
    "q_proj",
    "v_proj"
  ],
  "bias": null,
  "ok": true,
  "nested": {
    "empty_a": [],
    "empty_o": {},
    "x": [
      1,
      [
        2,
        {
          "y": false
        }
      ]
    ]
  }
})";
    CHECK(v.dump() == compact);
    CHECK(v.dump(2) == indented);
    CHECK(parse_json(v.dump()) == v);
    CHECK(parse_json(v.dump(2)) == v);
    CHECK(parse_json(v.dump(4)) == v);
    CHECK(parse_json(compact).dump() == compact);
    CHECK(parse_json(indented).dump(2) == indented);
    // indent 0 is Python's json.dumps(indent=0): newlines without indentation.
    CHECK(parse_json("[1,{\"a\":2}]").dump(0) == "[\n1,\n{\n\"a\": 2\n}\n]");
  }

  TEST_CASE("scalars at top level, all four whitespace characters, and literal number text") {
    CHECK(parse_json("1").as_int64() == 1);
    CHECK(parse_json("\"s\"").as_string() == "s");
    CHECK(parse_json("null").is_null());
    CHECK(parse_json(" \t\r\ntrue\n").as_bool());
    const json_value ws =
        parse_json(" \t\n\r{ \t\n\r\"a\" \t\n\r: \t\n\r[ \t\n\r1 \t\n\r, 2] \t\n\r}");
    CHECK(ws.dump() == R"({"a":[1,2]})");
    // Numbers are written as read, so big integers and spellings survive a round trip.
    CHECK(parse_json("[1E5,1.50,-0,12345678901234567890123,1e-7]").dump() ==
          "[1E5,1.50,-0,12345678901234567890123,1e-7]");
  }

  TEST_CASE("values built in code dump exactly") {
    json_value o = json_value::object();
    o.set("b", 1);
    o.set("a", json_value::array());
    o.find("a")->push_back("x");
    o.find("a")->push_back(nullptr);
    o.find("a")->push_back(false);
    o.set("b", 2.5);  // replaced in place, position kept
    o.set("s", std::string("str"));
    o.set("v", std::string_view("view"));
    CHECK(o.dump() == R"({"b":2.5,"a":["x",null,false],"s":"str","v":"view"})");
    CHECK(json_value::object().dump(2) == "{}");
    CHECK(json_value::array().dump(2) == "[]");

    CHECK(json_value(-5).dump() == "-5");
    CHECK(json_value(7u).dump() == "7");
    CHECK(json_value(-7L).dump() == "-7");
    CHECK(json_value(7UL).dump() == "7");
    CHECK(json_value(std::numeric_limits<long long>::min()).dump() == "-9223372036854775808");
    CHECK(json_value(std::numeric_limits<unsigned long long>::max()).dump() ==
          "18446744073709551615");
    CHECK(json_value(std::numeric_limits<unsigned long long>::max()).as_uint64() ==
          std::numeric_limits<std::uint64_t>::max());
    CHECK(json_value(std::numeric_limits<long long>::min()).as_int64() ==
          std::numeric_limits<std::int64_t>::min());
  }

  TEST_CASE("constructors: no pointer or char converts to bool or number") {
    static_assert(!std::is_constructible_v<json_value, int*>);
    static_assert(!std::is_constructible_v<json_value, const void*>);
    static_assert(!std::is_constructible_v<json_value, char>);
    char buffer[] = "mutable";
    char* p = buffer;
    CHECK(json_value(p).as_string() == "mutable");
    CHECK(json_value("literal").is_string());
    CHECK(json_value(nullptr).is_null());
    CHECK(json_value().type() == json_value::kind::null);
    CHECK(json_value(false).type() == json_value::kind::boolean);
    CHECK(json_value(1.5f).as_double() == 1.5);
    CHECK(json_value::array().type() == json_value::kind::array);
    CHECK(json_value::object().type() == json_value::kind::object);
  }

  TEST_CASE("json_quote escapes quote, backslash and control characters; UTF-8 stays verbatim") {
    CHECK(lola::io::json_quote("a\"b\\c/") == R"("a\"b\\c/")");
    CHECK(lola::io::json_quote("\b\f\n\r\t") == R"("\b\f\n\r\t")");
    CHECK(lola::io::json_quote(std::string("\x01\x1f\0", 3)) == R"("\u0001\u001f\u0000")");
    // Well-formed UTF-8 beyond C1 stays verbatim (U+00A0, é, U+1F600); DEL and C1 are escaped.
    CHECK(lola::io::json_quote("\x7f \xC2\xA0 \xC3\xA9 \xF0\x9F\x98\x80") ==
          "\"\\u007f \xC2\xA0 \xC3\xA9 \xF0\x9F\x98\x80\"");
    // Every ASCII byte, then some UTF-8, survives quote -> parse.
    std::string all;
    for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
    all += "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
    CHECK(parse_json(lola::io::json_quote(all)).as_string() == all);
    CHECK(parse_json(json_value(all).dump()).as_string() == all);
  }

  TEST_CASE("dump is valid UTF-8 JSON for every byte: DEL, C1 and ill-formed UTF-8 escaped") {
    const auto quote = [](std::string_view s) { return lola::io::json_quote(s); };
    CHECK(quote("\x7f") == R"("\u007f")");
    CHECK(quote("\xC2\x80") == R"("\u0080")");
    CHECK(quote("\xC2\x9F") == R"("\u009f")");
    CHECK(quote("\xC2\xA0") == "\"\xC2\xA0\"");  // U+00A0, the first code point after C1
    // Ill-formed sequences, each byte as \udcXY: exactly what Python writes for
    // json.dumps(b.decode("utf-8", "surrogateescape")) (checked by hand with python3).
    struct bad_case {
      std::string_view bytes, python;
    };
    const bad_case cases[] = {
        {"\x80", R"("\udc80")"},                                          // stray continuation
        {"\xFF", R"("\udcff")"},                                          // never in UTF-8
        {"\xC0\x80", R"("\udcc0\udc80")"},                                // overlong NUL
        {"\xE0\x80\x80", R"("\udce0\udc80\udc80")"},                      // overlong, 3 bytes
        {"\xF0\x80\x80\x80", R"("\udcf0\udc80\udc80\udc80")"},              // overlong, 4 bytes
        {"\xE2\x82", R"("\udce2\udc82")"},                                // truncated at the end
        {"\xE2\x82" "A", R"("\udce2\udc82A")"},                           // truncated before ASCII
        {"\xF0\x9F\x98", R"("\udcf0\udc9f\udc98")"},                      // truncated 4-byte form
        {"\xED\xA0\x80", R"("\udced\udca0\udc80")"},                      // surrogate U+D800
        {"\xED\xBF\xBF", R"("\udced\udcbf\udcbf")"},                      // surrogate U+DFFF
        {"\xF4\x90\x80\x80", R"("\udcf4\udc90\udc80\udc80")"},              // U+110000
        {"\xF5\x80\x80\x80", R"("\udcf5\udc80\udc80\udc80")"},              // lead byte above U+10FFFF
        {"\xF8\x88\x80\x80\x80", R"("\udcf8\udc88\udc80\udc80\udc80")"},      // 5-byte form
        {"a\xE2\x82\xAC" "b\xE2\x82", "\"a\xE2\x82\xAC" R"(b\udce2\udc82")"},  // € kept, tail escaped
        {"\xC3(\xA0\xA1", R"("\udcc3(\udca0\udca1")"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.bytes);
      const std::string text = quote(c.bytes);
      CHECK(text == c.python);
      CHECK(well_formed_utf8(text));
      CHECK(parse_json(text, "doc", with_byte_escapes()).as_string() == c.bytes);
      // Without byte_escapes the lone surrogates are refused, with a pointer to the option.
      CHECK(rejection(text).find("byte_escapes") != std::string::npos);
    }
  }

  TEST_CASE("every byte 0..255 round-trips through dump and parse with byte_escapes") {
    std::string all;  // every byte, in order: ill-formed from 0x80 on
    for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
    std::vector<std::string> inputs{all, std::string(all.rbegin(), all.rend())};
    for (int c = 0; c < 256; ++c) {
      inputs.push_back(std::string(1, static_cast<char>(c)));
      inputs.push_back("a" + std::string(1, static_cast<char>(c)) + "\xC3\xA9");
      // Every byte after each lead byte: the 2-byte forms, valid or not, and C1.
      for (int lead : {0xC2, 0xDF, 0xE0, 0xED, 0xF0, 0xF4})
        inputs.push_back(std::string(1, static_cast<char>(lead)) + static_cast<char>(c) + "\x80\x80");
    }
    for (const std::string& s : inputs) {
      CAPTURE(json_value(s).dump());
      const json_value v(s);
      for (int indent : {-1, 2}) {
        const std::string text = v.dump(indent);
        REQUIRE(well_formed_utf8(text));
        CHECK(parse_json(text, "doc", with_byte_escapes()).as_string() == s);
      }
      // As an object key too.
      json_value o = json_value::object();
      o.set(s, json_value(s));
      const json_value back = parse_json(o.dump(), "doc", with_byte_escapes());
      REQUIRE(back.members().size() == 1);
      CHECK(back.members()[0].first == s);
      // Well-formed input needs no byte escape: the default parser reads its dump back.
      if (well_formed_utf8(s)) CHECK(parse_json(v.dump()).as_string() == s);
    }
  }

  TEST_CASE("byte_escapes: only \\udc80..\\udcff alone are bytes; other lone surrogates stay errors") {
    const json_parse_options bytes = with_byte_escapes();
    CHECK(parse_json(R"("\udc80\udcFF")", "doc", bytes).as_string() == "\x80\xFF");
    CHECK(parse_json(R"("x\udcc3\udca9y")", "doc", bytes).as_string() == "x\xC3\xA9y");  // é's bytes
    // After a high surrogate, \udc80 is the low half of a pair, not a byte: U+1F480.
    CHECK(parse_json(R"("\ud83d\udc80")", "doc", bytes).as_string() == "\xF0\x9F\x92\x80");
    check_rejected(R"("\udc7f")", 1, R"(unpaired surrogate \udc7f (low surrogate first))", bytes);
    check_rejected(R"("\udc00")", 1, R"(unpaired surrogate \udc00 (low surrogate first))", bytes);
    check_rejected(R"("\udd80")", 1, R"(unpaired surrogate \udd80 (low surrogate first))", bytes);
    check_rejected(R"("\udfff")", 1, R"(unpaired surrogate \udfff (low surrogate first))", bytes);
    check_rejected(R"("\ud800x")", 1, R"(unpaired surrogate \ud800 (no low surrogate follows))", bytes);
    check_rejected(R"("\udbff\u0041")", 1, R"(unpaired surrogate \udbff (no low surrogate follows))", bytes);
  }

  TEST_CASE("escapes decode to UTF-8; surrogate pairs combine into one code point") {
    CHECK(parse_json(R"("\"\\\/\b\f\n\r\t")").as_string() == "\"\\/\b\f\n\r\t");
    CHECK(parse_json(R"("\u0041\u00e9\u20AC\uFFFF")").as_string() ==
          "A\xC3\xA9\xE2\x82\xAC\xEF\xBF\xBF");
    CHECK(parse_json(R"("\u0000")").as_string() == std::string(1, '\0'));
    CHECK(parse_json(R"("\ud83d\ude00")").as_string() == "\xF0\x9F\x98\x80");  // U+1F600
    CHECK(parse_json(R"("\uD834\uDD1E")").as_string() == "\xF0\x9D\x84\x9E");  // U+1D11E
    CHECK(parse_json(R"("\uDBFF\uDFFF")").as_string() == "\xF4\x8F\xBF\xBF");  // U+10FFFF
    CHECK(parse_json(R"("\uD800\uDC00")").as_string() == "\xF0\x90\x80\x80");  // U+10000
  }

  TEST_CASE("structural errors give the byte offset and the reason") {
    check_rejected("", 0, "unexpected end of input");
    check_rejected(" \t\n", 3, "unexpected end of input");
    check_rejected("[", 1, "unexpected end of input");
    check_rejected("[1", 2, "unexpected end of input");
    check_rejected("{\"a\":1", 6, "unexpected end of input");
    check_rejected("{\"a\":", 5, "unexpected end of input");
    check_rejected("[1,2] x", 6, "trailing characters");
    check_rejected("{} {}", 3, "trailing characters");
    check_rejected("1 2", 2, "trailing characters");
    check_rejected("falsey", 5, "trailing characters");
    check_rejected("[1,]", 3, "unexpected ']'");
    check_rejected("[,1]", 1, "unexpected ','");
    check_rejected("[1 2]", 3, "expected ',' or ']', found '2'");
    check_rejected("[nulll]", 5, "expected ',' or ']', found 'l'");
    check_rejected("{\"a\" 1}", 5, "expected ':' after the key, found '1'");
    check_rejected("{\"a\":1,}", 7, "expected a string key, found '}'");
    check_rejected("{\"a\":1 \"b\":2}", 7, "expected ',' or '}', found '\"'");
    check_rejected("{a:1}", 1, "expected a string key, found 'a'");
    check_rejected("{'a':1}", 1, "expected a string key, found '''");
    check_rejected("{1:1}", 1, "expected a string key, found '1'");
    check_rejected("]", 0, "unexpected ']'");
    // Only space, tab, LF and CR are whitespace.
    check_rejected("\v1", 0, "unexpected byte 0x0b");
    check_rejected("\f1", 0, "unexpected byte 0x0c");
    check_rejected("\xC2\xA0" "1", 0, "unexpected byte 0xc2");  // U+00A0 no-break space
    check_rejected(std::string_view("1\0", 2), 1, "trailing characters");
    // The source name leads the message.
    const std::string what = error_of([] { parse_json("[", "adapter_config.json"); },
                                      lola::error_code::invalid_file);
    CHECK(what == "lola: adapter_config.json: invalid JSON at byte 1: unexpected end of input");
    CHECK(error_of([] { parse_json("x"); }, lola::error_code::invalid_file)
              .rfind("lola: JSON: invalid JSON at byte 0: ", 0) == 0);
  }

  TEST_CASE("numbers follow the JSON grammar exactly") {
    check_rejected("+1", 0, "unexpected '+'");
    check_rejected("01", 0, "invalid number: leading zeros are not allowed");
    check_rejected("-01", 0, "invalid number: leading zeros are not allowed");
    check_rejected("[00]", 1, "invalid number: leading zeros are not allowed");
    check_rejected("-", 1, "invalid number: expected a digit after '-'");
    check_rejected("-a", 1, "invalid number: expected a digit after '-'");
    check_rejected("-Infinity", 1, "invalid number: expected a digit after '-'");
    check_rejected("1.", 2, "invalid number: expected a digit after '.'");
    check_rejected("1.e5", 2, "invalid number: expected a digit after '.'");
    check_rejected(".5", 0, "unexpected '.'");
    check_rejected("1e", 2, "invalid number: expected a digit in the exponent");
    check_rejected("1e+", 3, "invalid number: expected a digit in the exponent");
    check_rejected("1E-x", 3, "invalid number: expected a digit in the exponent");
    check_rejected("0x10", 1, "trailing characters");
    check_rejected("NaN", 0, "unexpected 'N'");
    check_rejected("Infinity", 0, "unexpected 'I'");
    for (const char* ok : {"0", "-0", "0.0", "-0.0e-0", "1e5", "1E+5", "123.456e-7", "9"}) {
      CAPTURE(ok);
      CHECK(parse_json(ok).is_number());
    }
  }

  TEST_CASE("literals are exactly true, false and null") {
    check_rejected("tru", 0, "invalid literal (expected true)");
    check_rejected("nul", 0, "invalid literal (expected null)");
    check_rejected("[fals]", 1, "invalid literal (expected false)");
    check_rejected("True", 0, "unexpected 'T'");
    check_rejected("NULL", 0, "unexpected 'N'");
  }

  TEST_CASE("strings: no raw control characters, only the RFC escapes, paired surrogates") {
    check_rejected("\"abc", 0, "unterminated string");
    check_rejected("[\"ab\\", 1, "unterminated string");
    check_rejected("\"a\nb\"", 2, "unescaped control character byte 0x0a in string");
    check_rejected("\"a\tb\"", 2, "unescaped control character byte 0x09 in string");
    check_rejected(std::string_view("\"a\0\"", 4), 2,
                   "unescaped control character byte 0x00 in string");
    check_rejected("\"\\x\"", 1, "invalid escape character 'x'");
    check_rejected("\"\\U0041\"", 1, "invalid escape character 'U'");
    check_rejected("\"\\'\"", 1, "invalid escape character '''");
    check_rejected("\"\\u12\"", 1, "invalid \\u escape: expected four hex digits");
    check_rejected("\"\\u12G4\"", 1, "invalid \\u escape: expected four hex digits");
    check_rejected("\"\\u", 1, "invalid \\u escape: expected four hex digits");
    check_rejected(R"("\ud800")", 1, R"(unpaired surrogate \ud800 (no low surrogate follows))");
    check_rejected(R"("\ud800\u0041")", 1, R"(unpaired surrogate \ud800 (no low)");
    check_rejected(R"("x\uD83D\uD83D")", 2, R"(unpaired surrogate \uD83D (no low)");
    check_rejected(R"("\ud800x")", 1, R"(unpaired surrogate \ud800 (no low)");
    check_rejected(R"("\udc00")", 1, R"(unpaired surrogate \udc00 (low surrogate first))");
    check_rejected(R"("\udc00\ud800")", 1, R"(unpaired surrogate \udc00 (low surrogate first))");
  }

  TEST_CASE("valid UTF-8 of every length is accepted and kept byte for byte") {
    for (const char* s : {"\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
                          "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"}) {
      const std::string quoted = "\"" + std::string(s) + "\"";
      CAPTURE(quoted);
      const json_value v = parse_json(quoted);
      CHECK(v.as_string() == s);
      // dump writes them back verbatim, except the C1 control U+0080, which it escapes.
      CHECK(v.dump() == (std::string(s) == "\xC2\x80" ? std::string(R"("\u0080")") : quoted));
    }
  }

  TEST_CASE("each class of ill-formed UTF-8 is rejected at its first byte") {
    struct bad_case {
      const char* bytes;
      const char* why;
    };
    const bad_case cases[] = {
        {"\x80", "unexpected continuation byte"},
        {"\xBF", "unexpected continuation byte"},
        {"\xC0\x80", "overlong encoding"},
        {"\xC1\xBF", "overlong encoding"},
        {"\xE0\x80\x80", "overlong encoding"},
        {"\xE0\x9F\xBF", "overlong encoding"},
        {"\xF0\x80\x80\x80", "overlong encoding"},
        {"\xF0\x8F\xBF\xBF", "overlong encoding"},
        {"\xED\xA0\x80", "UTF-16 surrogate"},
        {"\xED\xBF\xBF", "UTF-16 surrogate"},
        {"\xF4\x90\x80\x80", "code point above U+10FFFF"},
        {"\xF5\x80\x80\x80", "code point above U+10FFFF"},
        {"\xF8\x88\x80\x80\x80", "byte that never occurs in UTF-8"},
        {"\xFF", "byte that never occurs in UTF-8"},
        {"\xC3", "truncated sequence"},
        {"\xC3" "A", "truncated sequence"},
        {"\xE2\x82", "truncated sequence"},
        {"\xE2\x82" "A", "truncated sequence"},
        {"\xF0\x9F\x98", "truncated sequence"},
        {"\xF0\x9F" "A\x80", "truncated sequence"},
    };
    for (const auto& c : cases) {
      const std::string text = "\"ab" + std::string(c.bytes) + "\"";
      check_rejected(text, 3, std::string("invalid UTF-8 at byte 3 (") + c.why + ")");
    }
    // A sequence cut by the end of the text.
    check_rejected("\"\xE2\x82", 1, "invalid UTF-8 at byte 1 (truncated sequence)");
    // Outside strings too, and before any syntax error later or earlier in the text.
    check_rejected("[1]\xFF", 3, "invalid UTF-8 at byte 3");
    check_rejected("[x, \"\xC0\x80\"]", 5, "invalid UTF-8 at byte 5");
    // At every alignment, so the eight-bytes-at-a-time scan cannot skip a bad byte.
    for (std::size_t k = 0; k < 20; ++k) {
      const std::string text = std::string(k, ' ') + "\xC0\x80 1";
      check_rejected(text, k, "invalid UTF-8 at byte " + std::to_string(k) + " (overlong");
    }
  }

  TEST_CASE("duplicate keys are rejected at the repeated key, top level and nested") {
    check_rejected(R"({"a":1,"b":2,"a":3})", 13, R"(duplicate key "a")");
    check_rejected(R"({"a":1,"\u0061":2})", 7, R"(duplicate key "a")");  // equal after unescaping
    check_rejected(R"({"outer":{"k":1,"k":2}})", 16, R"(duplicate key "k")");
    check_rejected(R"([{}, {"x":0,"y":0,"x":0}])", 18, R"(duplicate key "x")");
    check_rejected(R"({"\n":1,"\n":2})", 8, R"(duplicate key "\n")");  // shown escaped
    // The first repeat by position, both for small objects and for the sorted check of larger ones.
    check_rejected(R"({"a":1,"b":2,"b":3,"a":4})", 13, R"(duplicate key "b")");
    check_rejected(R"({"b":0,"a":0,"c":0,"d":0,"e":0,"f":0,"g":0,"h":0,"i":0,"b":1,"a":1})", 55,
                   R"(duplicate key "b")");
    // Equal keys in different objects, and keys equal only up to case or normalization, are fine.
    CHECK(parse_json(R"([{"a":1},{"a":2}])").size() == 2);
    CHECK(parse_json(R"({"a":{"a":1}})").size() == 1);
    CHECK(parse_json(R"({"a":1,"A":2})").size() == 2);
    CHECK(parse_json("{\"\xC3\xA9\":1,\"e\\u0301\":2}").size() == 2);
  }

  TEST_CASE("100,000 keys: distinct keys parse, one repeat is found at its offset") {
    std::string text = "{";
    for (int i = 0; i < 100000; ++i)
      text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":" + std::to_string(i);
    const json_value v = parse_json(text + "}");
    REQUIRE(v.size() == 100000);
    CHECK(v.members()[54321].first == "k54321");
    CHECK(v.find("k99999")->as_int64() == 99999);
    const std::size_t offset = text.size() + 1;
    check_rejected(text + ",\"k5000\":0}", offset, R"(duplicate key "k5000")");
  }

  TEST_CASE("nesting: 128 levels accepted, 129 rejected, a million '[' fail fast") {
    CHECK_NOTHROW(parse_json(repeat("[", 128) + repeat("]", 128)));
    check_rejected(repeat("[", 129) + repeat("]", 129), 128, "nesting deeper than 128 levels");
    check_rejected(repeat("[", 1000000), 128, "nesting deeper than 128 levels");
    CHECK_NOTHROW(parse_json(repeat("{\"a\":", 128) + "1" + repeat("}", 128)));
    check_rejected(repeat("{\"a\":", 129) + "1" + repeat("}", 129), 128 * 5,
                   "nesting deeper than 128 levels");
    const json_value deep = parse_json(repeat("[", 128) + "7" + repeat("]", 128));
    const json_value* p = &deep;
    for (int level = 0; level < 128; ++level) p = &p->items().at(0);
    CHECK(p->as_int64() == 7);

    json_parse_options one;
    one.max_depth = 1;
    CHECK(parse_json("[1,2]", "doc", one).size() == 2);
    check_rejected("[1,{}]", 3, "nesting deeper than 1 levels", one);
    json_parse_options zero;
    zero.max_depth = 0;
    CHECK(parse_json("1", "doc", zero).as_int64() == 1);
    check_rejected(" []", 1, "nesting deeper than 0 levels", zero);
  }

  TEST_CASE("a value a million levels deep is built and destroyed without recursion") {
    json_parse_options unlimited;
    unlimited.max_depth = 1000000;
    const std::size_t n = 1000000;
    {
      const json_value deep = parse_json(repeat("[", n) + repeat("]", n), "doc", unlimited);
      std::size_t depth = 0;
      for (const json_value* p = &deep; !p->items().empty(); p = &p->items()[0]) ++depth;
      CHECK(depth == n - 1);
    }  // destroyed here: a recursive destructor would overflow the stack
    json_value built = json_value::array();
    for (std::size_t i = 0; i < n; ++i) {
      json_value outer = json_value::object();
      outer.set("x", std::move(built));
      built = std::move(outer);
    }
    CHECK(built.size() == 1);
  }

  TEST_CASE("as_uint64 and as_int64 are exact and refuse signs, fractions, exponents, overflow") {
    const auto u = [](const char* t) { return parse_json(t).as_uint64(); };
    const auto i = [](const char* t) { return parse_json(t).as_int64(); };
    CHECK(u("0") == std::uint64_t(0));
    CHECK(u("18446744073709551615") == std::numeric_limits<std::uint64_t>::max());
    CHECK(u("18446744073709551616") == std::nullopt);
    CHECK(u("99999999999999999999999") == std::nullopt);
    CHECK(u("-0") == std::nullopt);
    CHECK(u("-1") == std::nullopt);
    CHECK(u("1.0") == std::nullopt);
    CHECK(u("1e2") == std::nullopt);
    CHECK(i("-9223372036854775808") == std::numeric_limits<std::int64_t>::min());
    CHECK(i("9223372036854775807") == std::numeric_limits<std::int64_t>::max());
    CHECK(i("9223372036854775808") == std::nullopt);
    CHECK(i("-9223372036854775809") == std::nullopt);
    CHECK(i("-0") == std::int64_t(0));
    CHECK(i("-42") == std::int64_t(-42));
    CHECK(i("1e2") == std::nullopt);
    CHECK(i("-1.5") == std::nullopt);
  }

  TEST_CASE("as_double reads the literal, rounding out-of-range values to inf or zero") {
    const auto d = [](const char* t) { return parse_json(t).as_double(); };
    CHECK(d("0.1") == 0.1);
    CHECK(d("1e2") == 100.0);
    CHECK(d("123.456e-2") == 1.23456);
    CHECK(d("18446744073709551616") == 18446744073709551616.0);
    CHECK(d("0e400") == 0.0);
    CHECK(d("0.001e311") == 1e308);
    CHECK(std::signbit(d("-0")));
    CHECK(d("1e400") == std::numeric_limits<double>::infinity());
    CHECK(d("-1e400") == -std::numeric_limits<double>::infinity());
    CHECK(d("1000e306") == std::numeric_limits<double>::infinity());
    CHECK(d("1e99999999999999999999") == std::numeric_limits<double>::infinity());
    CHECK(d("1e-400") == 0.0);
    CHECK(d("0.0001e-320") == 0.0);
    CHECK(std::signbit(d("-1e-400")));
    CHECK(d("3e-324") == std::numeric_limits<double>::denorm_min());
    // An overflowing literal is still a number and is written back as read.
    CHECK(parse_json("[1e400]").dump() == "[1e400]");
  }

  TEST_CASE("doubles are written as the shortest text that reads back exactly") {
    CHECK(json_value(0.1).dump() == "0.1");
    CHECK(json_value(0.1 + 0.2).dump() == "0.30000000000000004");
    CHECK(json_value(1e300).dump() == "1e+300");
    CHECK(json_value(5e-324).dump() == "5e-324");
    CHECK(json_value(-2.5).dump() == "-2.5");
    CHECK(json_value(1.0).dump() == "1");
    CHECK(json_value(-0.0).dump() == "-0");
    for (double x : {0.1, 1.0 / 3.0, 1e300, 5e-324, 2.2250738585072014e-308,
                     std::numeric_limits<double>::max(), std::numeric_limits<double>::lowest(),
                     123456789012345680000.0, -1e-7}) {
      CAPTURE(x);
      const json_value back = parse_json(json_value(x).dump());
      CHECK(back.as_double() == x);
    }
  }

  TEST_CASE("non-finite doubles are refused") {
    for (double x : {std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN()}) {
      const std::string what =
          error_of([x] { json_value v(x); }, lola::error_code::invalid_argument);
      CHECK(what.find("non-finite") != std::string::npos);
    }
  }

  TEST_CASE("equality is structural; numbers compare by value, integers exactly") {
    CHECK(parse_json("1") == parse_json("1.0"));
    CHECK(parse_json("100") == parse_json("1e2"));
    CHECK(parse_json("-0") == parse_json("0"));
    CHECK(parse_json("0.1") == json_value(0.1));
    CHECK(parse_json("5") == json_value(5u));
    CHECK(parse_json("18446744073709551617") != parse_json("18446744073709551616"));
    CHECK(parse_json("9007199254740993") != json_value(9007199254740992ULL));
    CHECK(parse_json("1") != parse_json("true"));
    CHECK(parse_json("null") == json_value());
    CHECK(parse_json("\"a\"") != parse_json("\"b\""));
    CHECK(parse_json("[1,2]") != parse_json("[2,1]"));
    CHECK(parse_json("[1,2]") != parse_json("[1,2,3]"));
    CHECK(parse_json(R"({"a":1,"b":[2]})") == parse_json(R"({"b":[2.0],"a":1})"));
    CHECK(parse_json(R"({"a":1})") != parse_json(R"({"a":1,"b":2})"));
    CHECK(parse_json(R"({"a":1})") != parse_json(R"({"b":1})"));
  }

  TEST_CASE("find, set and erase on objects; push_back and items on arrays") {
    json_value o = parse_json(R"({"a":1,"b":2,"c":3})");
    const json_value& co = o;
    REQUIRE(co.find("b") != nullptr);
    CHECK(co.find("b")->as_int64() == 2);
    CHECK(o.find("z") == nullptr);
    CHECK(o.find("") == nullptr);
    o.set("b", "two");
    CHECK(o.dump() == R"({"a":1,"b":"two","c":3})");
    o.set("d", nullptr);
    CHECK(o.erase("a"));
    CHECK_FALSE(o.erase("a"));
    *o.find("c") = json_value::array();
    CHECK(o.dump() == R"({"b":"two","c":[],"d":null})");
    CHECK(o.size() == 3);
    CHECK(o.members().front().first == "b");

    json_value a = json_value::array();
    a.push_back(1);
    a.push_back("x");
    a.items()[0] = true;
    CHECK(a.size() == 2);
    CHECK(a.dump() == R"([true,"x"])");

    // Assigning a value one of its own descendants.
    json_value v = parse_json("[[1,[2]]]");
    v = v.items()[0];
    CHECK(v.dump() == "[1,[2]]");
    v = std::move(v.items()[1]);
    CHECK(v.dump() == "[2]");
  }

  TEST_CASE("accessors on the wrong kind throw invalid_argument naming both kinds") {
    using lola::error_code;
    const auto msg = [](auto f) { return error_of(f, error_code::invalid_argument); };
    CHECK(msg([] { (void)json_value(1).as_string(); }) ==
          "lola: JSON value is a number, not a string");
    CHECK(msg([] { (void)json_value().as_bool(); }) == "lola: JSON value is null, not a boolean");
    CHECK(msg([] { (void)json_value(true).as_double(); }) ==
          "lola: JSON value is a boolean, not a number");
    CHECK(msg([] { (void)json_value("1").as_uint64(); }) ==
          "lola: JSON value is a string, not a number");
    CHECK(msg([] { (void)json_value("1").as_int64(); }) ==
          "lola: JSON value is a string, not a number");
    CHECK(msg([] { (void)json_value::array().members(); }) ==
          "lola: JSON value is an array, not an object");
    CHECK(msg([] { (void)json_value::object().items(); }) ==
          "lola: JSON value is an object, not an array");
    CHECK(msg([] { json_value::object().push_back(1); }) ==
          "lola: JSON value is an object, not an array");
    CHECK(msg([] { json_value::array().set("k", 1); }) ==
          "lola: JSON value is an array, not an object");
    CHECK(msg([] { (void)json_value::array().find("k"); }) ==
          "lola: JSON value is an array, not an object");
    CHECK(msg([] { (void)json_value(2).erase("k"); }) ==
          "lola: JSON value is a number, not an object");
    CHECK(msg([] { (void)json_value(1).size(); }) ==
          "lola: JSON value is a number, not an array or an object");
  }

  TEST_CASE("large inputs: a million numbers and an 8 MB string") {
    std::string text = "[";
    for (int i = 0; i < 1000000; ++i) text += (i ? "," : "") + std::to_string(i);
    const json_value v = parse_json(text + "]");
    REQUIRE(v.size() == 1000000);
    CHECK(v.items()[999999].as_uint64() == std::uint64_t(999999));

    std::string payload(8 << 20, 'x');
    for (std::size_t k = 0; k < payload.size(); k += 4096) payload[k] = '\n';
    const json_value s = parse_json(lola::io::json_quote(payload));
    CHECK(s.as_string() == payload);
  }
}
