#pragma once
/// @file
/// A strict JSON (RFC 8259) parser and writer: safetensors headers (hostile input), PEFT
/// adapter_config.json, and the CLI's --json output.
///
/// The parser accepts exactly RFC 8259 over valid UTF-8 and nothing more: no comments, no trailing
/// commas, no NaN or Infinity, no leading '+' or zeros, whitespace only from {space, tab, LF, CR}.
/// Duplicate object keys are errors (the safetensors README disallows them, and keeping the first
/// or the last is a parser differential). Nesting is bounded by json_parse_options::max_depth and
/// parsing uses an explicit stack, so no input can exhaust the call stack. Time and memory are
/// linear in the input size, apart from an O(k log k) duplicate-key check for an object of k keys.
///
/// The writer always writes valid UTF-8 JSON, whatever bytes a string holds: control characters,
/// DEL and the C1 controls as escapes, and each byte of ill-formed UTF-8 as the lone low surrogate
/// \udc80..\udcff, as Python's json.dumps(os.fsdecode(bytes)) writes it (surrogateescape; see
/// detail::append_json_quoted). The parser reads those back to the bytes only when asked
/// (json_parse_options::byte_escapes); by default every lone surrogate is an error.
///
/// Numbers keep their literal text, so integers of any size survive a parse/dump round trip and
/// as_uint64() / as_int64() are exact. Objects keep their members in insertion order; an object
/// built by set() keeps a hash index of its keys once it has more than a few, so building an
/// object of k members is O(k), not O(k²) (a safetensors header of 80,000 tensors, a PEFT
/// rank_pattern of 40,000 modules).
///
/// Memory: a parsed value costs sizeof(json_value) (40 bytes on LP64) plus its string's or
/// container's heap block, and takes at least 2 bytes of input with its separator, so a parse
/// holds a bounded multiple of its input: measured 20 bytes per input byte for "[0,0,…]",
/// "[[],[],…]" or "["","",…]", 23 for nested one-element arrays, 14 for one-key objects.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "lola/core/error.hpp"

namespace lola::io {

class json_value;

namespace detail {

/// A number as its literal text. Invariant: the text matches the JSON number grammar
/// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
struct json_number {
  std::string text;
};

class json_parser;

/// True when a grammar-valid literal has neither fraction nor exponent.
inline bool json_literal_is_integer(std::string_view literal) noexcept {
  return literal.find_first_of(".eE") == std::string_view::npos;
}

/// The value of a non-empty run of decimal digits, or nullopt when it exceeds 2^64 - 1.
inline std::optional<std::uint64_t> json_digits_to_u64(std::string_view digits) noexcept {
  constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t value = 0;
  for (char c : digits) {
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (value > (max - d) / 10) return std::nullopt;
    value = value * 10 + d;
  }
  return value;
}

/// The double nearest a grammar-valid literal, rounding to ±inf or ±0 when out of range.
/// std::from_chars is locale-independent; on result_out_of_range it leaves the value untouched,
/// so the direction is decided here: a literal d.ddd x 10^E with E >= 0 is at least 1 and can
/// only overflow, one with E < 0 is below 1 and can only underflow.
inline double json_literal_to_double(std::string_view literal) {
  double value = 0.0;
  const char* first = literal.data();
  const char* last = first + literal.size();
  const auto result = std::from_chars(first, last, value);
  if (result.ec == std::errc()) return value;
  const bool negative = literal.front() == '-';
  std::string_view mantissa = literal.substr(negative ? 1 : 0);
  std::int64_t exponent = 0;
  if (const auto e = mantissa.find_first_of("eE"); e != std::string_view::npos) {
    std::string_view exp_text = mantissa.substr(e + 1);
    mantissa = mantissa.substr(0, e);
    const bool exp_negative = exp_text.front() == '-';
    if (exp_text.front() == '-' || exp_text.front() == '+') exp_text.remove_prefix(1);
    for (char c : exp_text) {  // saturates far beyond any double's range
      exponent = std::min<std::int64_t>(exponent * 10 + (c - '0'), std::int64_t(1) << 40);
    }
    if (exp_negative) exponent = -exponent;
  }
  const auto point = mantissa.find('.');
  const auto integer_digits =
      static_cast<std::int64_t>(point == std::string_view::npos ? mantissa.size() : point);
  std::int64_t leading = 0;  // position of the first nonzero digit among all mantissa digits
  for (char c : mantissa) {
    if (c == '.') continue;
    if (c != '0') break;
    ++leading;
  }
  const std::int64_t scale = integer_digits - leading - 1 + exponent;
  const double magnitude = scale >= 0 ? std::numeric_limits<double>::infinity() : 0.0;
  return negative ? -magnitude : magnitude;
}

/// The length (2, 3 or 4) of the well-formed UTF-8 sequence (Unicode Table 3-7) that starts with
/// the byte p[0] >= 0x80 of the n >= 1 bytes at p, or 0 when the bytes there are ill-formed; then
/// why says how: a stray continuation byte, an overlong form, a UTF-16 surrogate (U+D800..U+DFFF),
/// a code point above U+10FFFF, a byte that never occurs, or a sequence cut short.
inline std::size_t utf8_sequence_length(const unsigned char* p, std::size_t n, const char*& why) noexcept {
  const unsigned char lead = p[0];
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
  const char* second_reason = "truncated sequence";
  if (lead < 0xC0) {
    why = "unexpected continuation byte";
    return 0;
  } else if (lead < 0xC2) {
    why = "overlong encoding";
    return 0;
  } else if (lead < 0xE0) {
    length = 2;
  } else if (lead < 0xF0) {
    length = 3;
    if (lead == 0xE0) low = 0xA0, second_reason = "overlong encoding";
    if (lead == 0xED) high = 0x9F, second_reason = "UTF-16 surrogate";
  } else if (lead < 0xF5) {
    length = 4;
    if (lead == 0xF0) low = 0x90, second_reason = "overlong encoding";
    if (lead == 0xF4) high = 0x8F, second_reason = "code point above U+10FFFF";
  } else {
    why = lead < 0xF8 ? "code point above U+10FFFF" : "byte that never occurs in UTF-8";
    return 0;
  }
  why = "truncated sequence";
  if (n < 2) return 0;
  const unsigned char second = p[1];
  if (second < low || second > high) {
    if (second >= 0x80 && second <= 0xBF) why = second_reason;
    return 0;
  }
  for (std::size_t k = 2; k < length; ++k)
    if (k >= n || (p[k] & 0xC0) != 0x80) return 0;
  return length;
}

/// Appends s as a JSON string literal that is always valid UTF-8 JSON, whatever the bytes of s:
///   '"', '\\'                      \" and \\ (a backslash escaped)
///   C0 controls                    \b \f \n \r \t, or \u00xx for the others
///   DEL and C1 (U+0080..U+009F)    \u007f, \u0080..\u009f
///   each byte 0xXY of ill-formed   \udcXY: a lone low surrogate, Python's surrogateescape
///   UTF-8 (utf8_sequence_length)   (os.fsdecode), so json.loads + os.fsencode give the bytes back
///   every other byte               verbatim (well-formed UTF-8 stays as it is)
/// Hex digits are lowercase, as Python's json.dumps writes them. parse_json with
/// json_parse_options::byte_escapes reads the result back to exactly s.
inline void append_json_quoted(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  const auto u_escape = [&](unsigned unit) {
    out.append("\\u");
    for (int shift = 12; shift >= 0; shift -= 4) out.push_back(hex[(unit >> shift) & 0xF]);
  };
  out.push_back('"');
  std::size_t run = 0;  // start of the bytes not yet copied
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    std::size_t length = 1;
    if (c >= 0x80) {
      const char* why = nullptr;
      length = utf8_sequence_length(p + i, n - i, why);
      if (length > 0 && !(c == 0xC2 && p[i + 1] < 0xA0)) {  // well-formed and not C1: verbatim
        i += length;
        continue;
      }
      if (length == 0) length = 1;  // ill-formed: this byte alone; the next one is looked at anew
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x80)
          u_escape(c);  // C0 or DEL
        else if (length == 2)
          u_escape(p[i + 1]);  // C1: U+0080..U+009F is C2 80..C2 9F
        else
          u_escape(0xDC00u + c);  // an ill-formed byte
    }
    i += length;
    run = i;
  }
  out.append(s.data() + run, n - run);
  out.push_back('"');
}

/// The shortest text that reads back as exactly d (std::to_chars without a format).
inline std::string json_double_literal(double d) {
  if (!std::isfinite(d)) {
    throw error(error_code::invalid_argument,
                std::string("JSON cannot represent the non-finite number ") +
                    (std::isnan(d) ? "nan" : d > 0 ? "inf" : "-inf"));
  }
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, d);
  return std::string(buffer, result.ptr);
}

template <class Integer>
std::string json_integer_literal(Integer i) {
  char buffer[24];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, i);
  return std::string(buffer, result.ptr);
}

}  // namespace detail

/// One JSON value: null, boolean, number, string, array or object.
///
/// Accessors for one kind called on another throw error_code::invalid_argument with
/// "JSON value is <actual>, not <expected>". Copies are deep. Copying, dump() and operator==
/// recurse once per nesting level (parse_json bounds the depth); destruction does not recurse.
class json_value {
 public:
  enum class kind { null, boolean, number, string, array, object };
  using array_type = std::vector<json_value>;
  using object_type = std::vector<std::pair<std::string, json_value>>;

  /// null.
  json_value() noexcept = default;
  /// null.
  json_value(std::nullptr_t) noexcept {}
  json_value(bool b) noexcept : data_(std::in_place_type<bool>, b) {}
  /// Throws error_code::invalid_argument when d is inf or nan. The literal is the shortest text
  /// that reads back as d, so an integral double such as 3.0 is stored and written as "3".
  json_value(double d) : json_value(detail::json_number{detail::json_double_literal(d)}) {}
  /// Exact integers.
  json_value(int i) : json_value(detail::json_number{detail::json_integer_literal(i)}) {}
  json_value(long i) : json_value(detail::json_number{detail::json_integer_literal(i)}) {}
  json_value(long long i) : json_value(detail::json_number{detail::json_integer_literal(i)}) {}
  json_value(unsigned i) : json_value(detail::json_number{detail::json_integer_literal(i)}) {}
  json_value(unsigned long i) : json_value(detail::json_number{detail::json_integer_literal(i)}) {}
  json_value(unsigned long long i)
      : json_value(detail::json_number{detail::json_integer_literal(i)}) {}
  /// A string of any bytes, kept as given; dump() escapes what is not well-formed UTF-8.
  json_value(std::string s) noexcept : data_(std::in_place_type<std::string>, std::move(s)) {}
  json_value(std::string_view s) : data_(std::in_place_type<std::string>, s) {}
  json_value(const char* s) : data_(std::in_place_type<std::string>, s) {}
  /// Deleted: a char could mean a one-character string or its code; convert explicitly.
  json_value(char) = delete;
  /// Pointers other than const char* would otherwise convert to bool.
  template <class T, std::enable_if_t<!std::is_same_v<std::remove_cv_t<T>, char>, int> = 0>
  json_value(T*) = delete;

  json_value(const json_value&) = default;
  json_value(json_value&&) noexcept = default;
  /// Copy-and-swap, so assigning a value its own descendant is safe.
  json_value& operator=(json_value other) noexcept {
    data_.swap(other.data_);
    return *this;
  }
  ~json_value() {
    if (has_nested_containers()) dismantle();
  }

  /// An empty array.
  static json_value array() {
    json_value v;
    v.data_.emplace<array_type>();
    return v;
  }
  /// An empty object.
  static json_value object() {
    json_value v;
    v.data_.emplace<object_data>();
    return v;
  }

  kind type() const noexcept { return static_cast<kind>(data_.index()); }
  bool is_null() const noexcept { return type() == kind::null; }
  bool is_bool() const noexcept { return type() == kind::boolean; }
  bool is_number() const noexcept { return type() == kind::number; }
  bool is_string() const noexcept { return type() == kind::string; }
  bool is_array() const noexcept { return type() == kind::array; }
  bool is_object() const noexcept { return type() == kind::object; }

  bool as_bool() const { return get<bool>(kind::boolean); }
  const std::string& as_string() const { return get<std::string>(kind::string); }

  /// The double nearest the number; ±inf for a literal beyond the double range (1e400).
  double as_double() const {
    return detail::json_literal_to_double(get<detail::json_number>(kind::number).text);
  }

  /// Set iff the literal is digits only (no sign, fraction or exponent) and at most 2^64 - 1:
  /// "-0", "1.0" and "1e3" give nullopt.
  std::optional<std::uint64_t> as_uint64() const {
    const std::string& t = get<detail::json_number>(kind::number).text;
    if (t.front() == '-' || !detail::json_literal_is_integer(t)) return std::nullopt;
    return detail::json_digits_to_u64(t);
  }

  /// Set iff the literal is an optional '-' and digits (no fraction or exponent) within
  /// [-2^63, 2^63 - 1]; "-0" gives 0.
  std::optional<std::int64_t> as_int64() const {
    const std::string& t = get<detail::json_number>(kind::number).text;
    if (!detail::json_literal_is_integer(t)) return std::nullopt;
    const bool negative = t.front() == '-';
    const auto magnitude = detail::json_digits_to_u64(std::string_view(t).substr(negative));
    constexpr auto limit = std::uint64_t(1) << 63;  // |INT64_MIN|
    if (!magnitude || *magnitude > limit - (negative ? 0 : 1)) return std::nullopt;
    if (!negative) return static_cast<std::int64_t>(*magnitude);
    return *magnitude == limit ? std::numeric_limits<std::int64_t>::min()
                               : -static_cast<std::int64_t>(*magnitude);
  }

  /// The elements of an array.
  const array_type& items() const { return get<array_type>(kind::array); }
  array_type& items() { return get<array_type>(kind::array); }

  /// The members of an object, in insertion order. Keys are unique as long as they are only
  /// changed through set() and erase(). Mutable access drops the object's key index (rebuilt by
  /// the next set()), so change keys through the returned reference only before the next set().
  const object_type& members() const { return get<object_data>(kind::object).members; }
  object_type& members() {
    object_data& o = get<object_data>(kind::object);
    o.index.reset();
    return o.members;
  }

  /// The value under key in an object, or nullptr. O(1) expected where set() built the object's
  /// index, O(size()) otherwise (a parsed object). Never modifies the value, so concurrent finds
  /// are safe.
  const json_value* find(std::string_view key) const {
    const object_data& o = get<object_data>(kind::object);
    if (o.index) {
      const std::size_t slot = o.slot_of(key);
      return o.index->at(slot) ? &o.members[o.index->at(slot) - 1].second : nullptr;
    }
    for (const auto& member : o.members)
      if (member.first == key) return &member.second;
    return nullptr;
  }
  json_value* find(std::string_view key) {
    return const_cast<json_value*>(static_cast<const json_value&>(*this).find(key));
  }

  /// Appends to an array.
  void push_back(json_value v) { items().push_back(std::move(v)); }

  /// In an object, replaces the value under key where it exists (keeping its position), else
  /// appends the member. O(1) expected: past a few members the object keeps a hash index.
  void set(std::string key, json_value v) {
    object_data& o = get<object_data>(kind::object);
    if (!o.index && o.members.size() >= object_data::indexed_from) o.rebuild_index(o.members.size() + 1);
    if (o.index) {
      std::size_t slot = o.slot_of(key);
      if (const std::size_t at = (*o.index)[slot]) {
        o.members[at - 1].second = std::move(v);
        return;
      }
      o.members.emplace_back(std::move(key), std::move(v));
      if (2 * o.members.size() > o.index->size()) {
        o.rebuild_index(o.members.size());
      } else {
        (*o.index)[slot] = o.members.size();
      }
      return;
    }
    for (auto& member : o.members)
      if (member.first == key) {
        member.second = std::move(v);
        return;
      }
    o.members.emplace_back(std::move(key), std::move(v));
  }

  /// Removes key from an object; false when it was absent. O(size()).
  bool erase(std::string_view key) {
    object_type& m = members();
    const auto it = std::find_if(m.begin(), m.end(), [&](const auto& p) { return p.first == key; });
    if (it == m.end()) return false;
    m.erase(it);
    return true;
  }

  /// The element count of an array or the member count of an object.
  std::size_t size() const {
    if (const auto* a = std::get_if<array_type>(&data_)) return a->size();
    if (const auto* o = std::get_if<object_data>(&data_)) return o->members.size();
    throw error(error_code::invalid_argument,
                std::string("JSON value is ") + kind_name(type()) + ", not an array or an object");
  }

  /// The value as JSON text. indent < 0: compact, no whitespace at all ({"a":1,"b":[1,2]}).
  /// indent >= 0: Python's json.dumps(indent=indent) layout: one element or member per line,
  /// indented by indent spaces per level, "," ending lines, ": " after keys, and empty arrays
  /// and objects as [] and {}. Numbers are written as their literal text; strings and keys as
  /// json_quote writes them, so the text is valid UTF-8 JSON whatever bytes they hold.
  std::string dump(int indent = -1) const {
    std::string out;
    write(out, indent, 0);
    return out;
  }

  /// Structural equality. Numbers compare by value: exactly when both literals are integers
  /// (any size; -0 equals 0), otherwise as doubles. Objects compare as sets of members,
  /// ignoring order.
  friend bool operator==(const json_value& a, const json_value& b) {
    if (a.type() != b.type()) return false;
    switch (a.type()) {
      case kind::null: return true;
      case kind::boolean: return std::get<bool>(a.data_) == std::get<bool>(b.data_);
      case kind::string: return std::get<std::string>(a.data_) == std::get<std::string>(b.data_);
      case kind::number:
        return numbers_equal(std::get<detail::json_number>(a.data_).text,
                             std::get<detail::json_number>(b.data_).text);
      case kind::array: return std::get<array_type>(a.data_) == std::get<array_type>(b.data_);
      case kind::object:
        return objects_equal(std::get<object_data>(a.data_).members, std::get<object_data>(b.data_).members);
    }
    return false;
  }
  friend bool operator!=(const json_value& a, const json_value& b) { return !(a == b); }

 private:
  friend class detail::json_parser;

  explicit json_value(detail::json_number n) noexcept
      : data_(std::in_place_type<detail::json_number>, std::move(n)) {}

  /// "null", "a boolean", "an array", ...: the spelling of a kind in messages.
  static const char* kind_name(kind k) noexcept {
    switch (k) {
      case kind::null: return "null";
      case kind::boolean: return "a boolean";
      case kind::number: return "a number";
      case kind::string: return "a string";
      case kind::array: return "an array";
      case kind::object: return "an object";
    }
    return "unknown";
  }

  template <class T>
  const T& get(kind expected) const {
    if (const T* p = std::get_if<T>(&data_)) return *p;
    throw error(error_code::invalid_argument, std::string("JSON value is ") + kind_name(type()) +
                                                  ", not " + kind_name(expected));
  }
  template <class T>
  T& get(kind expected) {
    return const_cast<T&>(static_cast<const json_value&>(*this).get<T>(expected));
  }

  static bool numbers_equal(std::string_view a, std::string_view b) {
    if (detail::json_literal_is_integer(a) && detail::json_literal_is_integer(b)) {
      // Integer literals are canonical (no leading zeros), so equal values have equal text,
      // except for the two spellings of zero.
      const auto digits = [](std::string_view t) { return t.substr(t.front() == '-'); };
      if (digits(a) == "0" && digits(b) == "0") return true;
      return a == b;
    }
    return detail::json_literal_to_double(a) == detail::json_literal_to_double(b);
  }

  static bool objects_equal(const object_type& a, const object_type& b) {
    if (a.size() != b.size()) return false;
    using member = object_type::value_type;
    const auto by_key = [](const object_type& o) {
      std::vector<const member*> sorted;
      sorted.reserve(o.size());
      for (const auto& m : o) sorted.push_back(&m);
      std::stable_sort(sorted.begin(), sorted.end(),
                       [](const member* x, const member* y) { return x->first < y->first; });
      return sorted;
    };
    const auto sa = by_key(a), sb = by_key(b);
    for (std::size_t i = 0; i < sa.size(); ++i)
      if (sa[i]->first != sb[i]->first || !(sa[i]->second == sb[i]->second)) return false;
    return true;
  }

  bool has_nested_containers() const noexcept {
    const auto nonempty_container = [](const json_value& v) {
      if (const auto* a = std::get_if<array_type>(&v.data_)) return !a->empty();
      if (const auto* o = std::get_if<object_data>(&v.data_)) return !o->members.empty();
      return false;
    };
    if (const auto* a = std::get_if<array_type>(&data_))
      return std::any_of(a->begin(), a->end(), nonempty_container);
    if (const auto* o = std::get_if<object_data>(&data_))
      return std::any_of(o->members.begin(), o->members.end(),
                         [&](const auto& m) { return nonempty_container(m.second); });
    return false;
  }

  /// Frees the tree below this value with a worklist instead of recursion: every value leaves the
  /// worklist only after its nested containers have been moved onto it, so each destructor that
  /// runs here sees no nested containers and returns without recursing.
  void dismantle() noexcept {
    std::vector<json_value> pending;
    const auto adopt_children = [&pending](json_value& v) {
      if (auto* a = std::get_if<array_type>(&v.data_)) {
        for (auto& child : *a)
          if (child.is_array() || child.is_object()) pending.push_back(std::move(child));
      } else if (auto* o = std::get_if<object_data>(&v.data_)) {
        for (auto& m : o->members)
          if (m.second.is_array() || m.second.is_object()) pending.push_back(std::move(m.second));
      }
    };
    adopt_children(*this);
    while (!pending.empty()) {
      json_value v = std::move(pending.back());
      pending.pop_back();
      adopt_children(v);
    }
  }

  void write(std::string& out, int indent, int depth) const {
    const auto newline = [&](int level) {
      if (indent < 0) return;
      out.push_back('\n');
      out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(level), ' ');
    };
    switch (type()) {
      case kind::null: out.append("null"); return;
      case kind::boolean: out.append(std::get<bool>(data_) ? "true" : "false"); return;
      case kind::number: out.append(std::get<detail::json_number>(data_).text); return;
      case kind::string: detail::append_json_quoted(out, std::get<std::string>(data_)); return;
      case kind::array: {
        const auto& a = std::get<array_type>(data_);
        out.push_back('[');
        for (std::size_t i = 0; i < a.size(); ++i) {
          if (i) out.push_back(',');
          newline(depth + 1);
          a[i].write(out, indent, depth + 1);
        }
        if (!a.empty()) newline(depth);
        out.push_back(']');
        return;
      }
      case kind::object: {
        const auto& o = std::get<object_data>(data_).members;
        out.push_back('{');
        for (std::size_t i = 0; i < o.size(); ++i) {
          if (i) out.push_back(',');
          newline(depth + 1);
          detail::append_json_quoted(out, o[i].first);
          out.append(indent < 0 ? ":" : ": ");
          o[i].second.write(out, indent, depth + 1);
        }
        if (!o.empty()) newline(depth);
        out.push_back('}');
        return;
      }
    }
  }

  /// An object's members and, from indexed_from members on (objects built by set()), an
  /// open-addressing hash table of their positions: slot = position + 1, 0 = empty, at most half
  /// full, linear probing. A copy drops the index (the next set() rebuilds it).
  struct object_data {
    static constexpr std::size_t indexed_from = 16;
    object_type members;
    std::unique_ptr<std::vector<std::size_t>> index;

    object_data() = default;
    object_data(const object_data& other) : members(other.members) {}
    object_data(object_data&&) noexcept = default;
    object_data& operator=(const object_data& other) {
      members = other.members;
      index.reset();
      return *this;
    }
    object_data& operator=(object_data&&) noexcept = default;

    /// The slot holding key, or the empty slot where it would go.
    std::size_t slot_of(std::string_view key) const {
      const std::vector<std::size_t>& table = *index;
      const std::size_t mask = table.size() - 1;
      for (std::size_t slot = std::hash<std::string_view>{}(key) & mask;; slot = (slot + 1) & mask)
        if (!table[slot] || members[table[slot] - 1].first == key) return slot;
    }

    /// A table for at least `count` members at most half full, holding the current ones.
    void rebuild_index(std::size_t count) {
      std::size_t capacity = 64;
      while (capacity < 2 * count) capacity *= 2;
      index = std::make_unique<std::vector<std::size_t>>(capacity, 0);
      for (std::size_t i = 0; i < members.size(); ++i) (*index)[slot_of(members[i].first)] = i + 1;
    }
  };

  // Alternatives in the order of kind, so data_.index() is the kind.
  std::variant<std::monostate, bool, detail::json_number, std::string, array_type, object_data>
      data_;
};

/// Limits parse_json enforces on untrusted input.
struct json_parse_options {
  /// Arrays and objects may nest this deep; one level more is an error. 128 as in serde_json
  /// (which counts so that it accepts 127 levels).
  std::size_t max_depth = 128;
  /// Reads a lone low surrogate \udc80..\udcff as the one byte 0x80..0xff (Python's
  /// surrogateescape, what dump writes for ill-formed UTF-8), so that parsing a dump gives back
  /// arbitrary bytes; a parsed string may then be ill-formed UTF-8. Off by default: the other
  /// readers (safetensors headers, adapter_config.json) reject every lone surrogate, as the
  /// safetensors reference (serde_json) does, so their strings are always well-formed UTF-8.
  /// Other lone surrogates (\ud800..\udbff, \udc00..\udc7f) are errors either way.
  bool byte_escapes = false;
};

/// Escapes s as a JSON string literal, quotes included (see json_value::dump for the escapes).
inline std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  detail::append_json_quoted(out, s);
  return out;
}

namespace detail {

/// One parse of one text. Errors are error_code::invalid_file with
/// "<source>: invalid JSON at byte <offset>: <reason>", offset 0-based into the text.
class json_parser {
 public:
  json_parser(std::string_view text, std::string_view source, const json_parse_options& options)
      : text_(text), source_(source), options_(options) {}

  json_value parse() {
    validate_utf8();
    // Open arrays and objects, outermost first; an object's last member holds a null value
    // until its value is complete. key_offsets_ holds the byte offsets of the keys of every
    // open object, each object's keys starting at its frame's first_key.
    struct frame {
      json_value value;
      std::size_t first_key;
    };
    std::vector<frame> stack;
    skip_whitespace();
    for (;;) {
      // At the first byte of a value.
      json_value value;
      if (pos_ == text_.size()) fail(pos_, "unexpected end of input");
      const char c = text_[pos_];
      if (c == '[' || c == '{') {
        if (stack.size() >= options_.max_depth) {
          fail(pos_, "nesting deeper than " + std::to_string(options_.max_depth) + " levels");
        }
        ++pos_;
        skip_whitespace();
        const bool object = c == '{';
        if (peek() == (object ? '}' : ']')) {
          ++pos_;
          value = object ? json_value::object() : json_value::array();
        } else {
          stack.push_back({object ? json_value::object() : json_value::array(),
                           key_offsets_.size()});
          if (object) read_key(stack.back().value);
          continue;
        }
      } else {
        value = parse_scalar();
      }
      // value is complete: attach it to its container, closing containers that end here.
      for (;;) {
        skip_whitespace();
        if (stack.empty()) {
          if (pos_ != text_.size()) fail(pos_, "trailing characters");
          return value;
        }
        frame& top = stack.back();
        if (auto* items = std::get_if<json_value::array_type>(&top.value.data_)) {
          items->push_back(std::move(value));
          if (peek() == ',') {
            ++pos_;
            skip_whitespace();
            break;
          }
          if (peek() != ']') fail(pos_, expected("',' or ']'"));
        } else {
          top.value.members().back().second = std::move(value);
          if (peek() == ',') {
            ++pos_;
            skip_whitespace();
            read_key(top.value);
            break;
          }
          if (peek() != '}') fail(pos_, expected("',' or '}'"));
          check_unique_keys(top.value.members(), top.first_key);
          key_offsets_.resize(top.first_key);
        }
        ++pos_;
        value = std::move(top.value);
        stack.pop_back();
      }
    }
  }

 private:
  [[noreturn]] void fail(std::size_t offset, const std::string& reason) const {
    throw error(error_code::invalid_file, std::string(source_) + ": invalid JSON at byte " +
                                              std::to_string(offset) + ": " + reason);
  }

  /// The byte at pos_, or '\0' at the end (callers compare it with a structural character).
  char peek() const noexcept { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  std::string expected(const char* what) const {
    if (pos_ == text_.size()) return "unexpected end of input";
    return std::string("expected ") + what + ", found " + describe(text_[pos_]);
  }

  static std::string describe(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u > 0x20 && u < 0x7F) return std::string("'") + c + "'";
    static constexpr char hex[] = "0123456789abcdef";
    return std::string("byte 0x") + hex[u >> 4] + hex[u & 0xF];
  }

  void skip_whitespace() noexcept {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  /// Checks that the whole text is well-formed UTF-8 (Unicode Table 3-7): no stray continuation
  /// bytes, no overlong forms, no UTF-16 surrogates (U+D800..U+DFFF), nothing above U+10FFFF,
  /// no truncated sequences. The offset reported is the first byte of the ill-formed sequence.
  void validate_utf8() const {
    const auto* p = reinterpret_cast<const unsigned char*>(text_.data());
    const std::size_t n = text_.size();
    std::size_t i = 0;
    const auto bad = [&](std::size_t at, const char* why) {
      fail(at, "invalid UTF-8 at byte " + std::to_string(at) + " (" + why + ")");
    };
    while (i < n) {
      if (n - i >= 8) {  // eight ASCII bytes at once
        std::uint64_t word;
        std::memcpy(&word, p + i, 8);
        if ((word & 0x8080808080808080ULL) == 0) {
          i += 8;
          continue;
        }
      }
      if (p[i] < 0x80) {
        ++i;
        continue;
      }
      const char* why = nullptr;
      const std::size_t length = utf8_sequence_length(p + i, n - i, why);
      if (length == 0) bad(i, why);
      i += length;
    }
  }

  json_value parse_scalar() {
    const char c = text_[pos_];
    if (c == '"') return json_value(parse_string());
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    if (c == 't') return literal("true", json_value(true));
    if (c == 'f') return literal("false", json_value(false));
    if (c == 'n') return literal("null", json_value());
    fail(pos_, "unexpected " + describe(c));
  }

  json_value literal(std::string_view word, json_value value) {
    if (text_.substr(pos_, word.size()) != word) {
      fail(pos_, "invalid literal (expected " + std::string(word) + ")");
    }
    pos_ += word.size();
    return value;
  }

  bool digit_at(std::size_t i) const noexcept {
    return i < text_.size() && text_[i] >= '0' && text_[i] <= '9';
  }

  json_value parse_number() {
    const std::size_t start = pos_;
    const auto digits = [&] {
      while (digit_at(pos_)) ++pos_;
    };
    if (text_[pos_] == '-') ++pos_;
    if (!digit_at(pos_)) fail(pos_, "invalid number: expected a digit after '-'");
    if (text_[pos_] == '0' && digit_at(pos_ + 1)) {
      fail(start, "invalid number: leading zeros are not allowed");
    }
    digits();
    if (peek() == '.') {
      ++pos_;
      if (!digit_at(pos_)) fail(pos_, "invalid number: expected a digit after '.'");
      digits();
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digit_at(pos_)) fail(pos_, "invalid number: expected a digit in the exponent");
      digits();
    }
    return json_value(json_number{std::string(text_.substr(start, pos_ - start))});
  }

  static int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  /// The code unit of the \uXXXX escape at byte at (the backslash), or -1 when malformed.
  long read_u_escape(std::size_t at) const noexcept {
    if (text_.size() - at < 6 || text_[at] != '\\' || text_[at + 1] != 'u') return -1;
    long unit = 0;
    for (std::size_t k = at + 2; k < at + 6; ++k) {
      const int h = hex_value(text_[k]);
      if (h < 0) return -1;
      unit = unit * 16 + h;
    }
    return unit;
  }

  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  /// The decoded string whose opening quote is at pos_. Runs of plain bytes are appended whole;
  /// the text is already valid UTF-8, so they need no further check.
  std::string parse_string() {
    const std::size_t open = pos_++;
    std::string out;
    for (;;) {
      const std::size_t run = pos_;
      while (pos_ < text_.size()) {
        const auto c = static_cast<unsigned char>(text_[pos_]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++pos_;
      }
      out.append(text_.data() + run, pos_ - run);
      if (pos_ == text_.size()) fail(open, "unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c != '\\') fail(pos_, "unescaped control character " + describe(c) + " in string");
      const std::size_t escape = pos_;
      if (escape + 1 == text_.size()) fail(open, "unterminated string");
      const char e = text_[escape + 1];
      pos_ = escape + 2;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': out_code_point(out, escape); break;
        default: fail(escape, "invalid escape character " + describe(e));
      }
    }
  }

  /// Decodes the \u escape at byte escape, and its low-surrogate partner where the first is a
  /// high surrogate; leaves pos_ after the last escape consumed.
  void out_code_point(std::string& out, std::size_t escape) {
    const long unit = read_u_escape(escape);
    if (unit < 0) fail(escape, "invalid \\u escape: expected four hex digits");
    const auto spelled = [&](std::size_t at) { return std::string(text_.substr(at, 6)); };
    if (unit >= 0xDC00 && unit <= 0xDFFF) {
      const bool byte = unit >= 0xDC80 && unit <= 0xDCFF;
      if (byte && options_.byte_escapes) {
        pos_ = escape + 6;
        out.push_back(static_cast<char>(unit - 0xDC00));
        return;
      }
      fail(escape, "unpaired surrogate " + spelled(escape) + " (low surrogate first" +
                       (byte ? "; json_parse_options::byte_escapes reads \\udc80..\\udcff as bytes)" : ")"));
    }
    if (unit < 0xD800 || unit > 0xDBFF) {
      pos_ = escape + 6;
      append_utf8(out, static_cast<std::uint32_t>(unit));
      return;
    }
    const long low = read_u_escape(escape + 6);
    if (low < 0xDC00 || low > 0xDFFF) {
      fail(escape, "unpaired surrogate " + spelled(escape) + " (no low surrogate follows)");
    }
    pos_ = escape + 12;
    append_utf8(out, 0x10000u + ((static_cast<std::uint32_t>(unit) - 0xD800u) << 10) +
                         (static_cast<std::uint32_t>(low) - 0xDC00u));
  }

  /// The key at pos_ (after whitespace) and its ':', appended to object with a null value.
  void read_key(json_value& object) {
    if (peek() != '"') fail(pos_, expected("a string key"));
    key_offsets_.push_back(pos_);
    std::string key = parse_string();
    skip_whitespace();
    if (peek() != ':') fail(pos_, expected("':' after the key"));
    ++pos_;
    skip_whitespace();
    object.members().emplace_back(std::piecewise_construct, std::forward_as_tuple(std::move(key)),
                                  std::forward_as_tuple());
  }

  /// Rejects the first member (by position) whose key repeats an earlier one. Small objects
  /// compare pairwise; larger ones sort member indices by (key, index), where a repeat is any
  /// index whose predecessor has the same key. O(k log k) for k members.
  void check_unique_keys(const json_value::object_type& members, std::size_t first_key) {
    const std::size_t k = members.size();
    std::size_t repeat = k;
    if (k <= 8) {
      for (std::size_t j = 1; j < k && repeat == k; ++j)
        for (std::size_t i = 0; i < j; ++i)
          if (members[i].first == members[j].first) {
            repeat = j;
            break;
          }
    } else {
      order_.resize(k);
      for (std::size_t i = 0; i < k; ++i) order_[i] = i;
      std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
        const int c = members[a].first.compare(members[b].first);
        return c < 0 || (c == 0 && a < b);
      });
      for (std::size_t i = 1; i < k; ++i)
        if (members[order_[i]].first == members[order_[i - 1]].first)
          repeat = std::min(repeat, order_[i]);
    }
    if (repeat == k) return;
    fail(key_offsets_[first_key + repeat], "duplicate key " + shown_key(members[repeat].first));
  }

  /// A key as it appears in a message: quoted, and cut to about 100 bytes at a UTF-8 boundary.
  static std::string shown_key(const std::string& key) {
    constexpr std::size_t limit = 100;
    if (key.size() <= limit) return json_quote(key);
    std::size_t cut = limit;
    while (cut > 0 && (static_cast<unsigned char>(key[cut]) & 0xC0) == 0x80) --cut;
    return json_quote(std::string_view(key).substr(0, cut)) + "...";
  }

  std::string_view text_;
  std::string_view source_;
  const json_parse_options& options_;
  std::size_t pos_ = 0;
  std::vector<std::size_t> key_offsets_;
  std::vector<std::size_t> order_;  // scratch for check_unique_keys
};

}  // namespace detail

/// Parses text (RFC 8259, strict; see the file comment) into a json_value. source names the text
/// in messages ("model.safetensors header"). Throws error_code::invalid_file with
/// "<source>: invalid JSON at byte <offset>: <reason>" on the first violation.
inline json_value parse_json(std::string_view text, std::string_view source = "JSON",
                             const json_parse_options& options = {}) {
  return detail::json_parser(text, source, options).parse();
}

}  // namespace lola::io
