#pragma once
/// @file
/// PEFT's module-name patterns (rank_pattern / alpha_pattern keys), compiled once per config.
///
/// A key K matches a module name M when re.match(rf"(.*\.)?({K})$", M) does in Python (PEFT's
/// get_pattern_key); among the keys that match, the first in the config's order wins.
///
/// pattern_set compiles each key once:
///   - a literal key (no metacharacter .^$*+?{}[]|() ; a backslash before an ASCII character other
///     than a letter or digit, or before a non-ASCII one, is that character, as in Python, so the
///     escaped names lola and PEFT write, model\.layers\.0\.q_proj, are literal) matches exactly
///     when M is K, or M ends in "." + K with no newline before that dot ((.*\.) cannot cross a
///     newline), or either holds with M's one trailing newline removed (Python's $ also matches
///     before a final newline). Literal keys live in a trie of their reversed bytes, so one name
///     is matched against all of them in O(min(|M|, longest key)) steps, each a binary search
///     among one node's children.
///   - any other key is a regular expression, compiled once by RE2 (linear time in the name,
///     bounded memory and stack: no backtracking, no recursion on the name) as
///     (?:.*\.)?(?:K)\n?\z anchored at the start, which is Python's pattern with $ spelled out;
///     a key that closes the group early (a)|(b) keeps Python's meaning too. All regex keys of a
///     set are also compiled into one RE2::Set, so a name is scanned once for all of them; if
///     the Set's DFA exceeds its memory the keys are tried one by one, in order.
///
/// Python syntax RE2 lacks is translated where the meaning is the same (\Z is \z; {,n} is {0,n})
/// and refused otherwise (error_code::unsupported naming the key): lookaround, backreferences,
/// possessive and atomic groups, conditionals, comments, verbose mode, POSIX-looking [:...:] inside
/// a class (a literal set of characters in Python, a class in RE2), counted repetition above 1000.
/// Remaining differences: RE2's \d \w \s \b are ASCII where Python's are Unicode, and a $ inside a
/// key does not match before a final newline; module names are ASCII identifiers in practice.
///
/// Limits, each a clear lola::error rather than luck: a regex key of more than 4096 bytes, a regex
/// key whose compiled program exceeds its memory bound (1 MiB per key, 64 MiB for the Set), and a
/// name of more than 1 MiB matched against regex keys.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <re2/re2.h>
#include <re2/set.h>

#include "lola/core/error.hpp"
#include "lola/io/printable.hpp"

namespace lola::io {

namespace detail {

/// Whether PEFT's pattern key for the module named `key_name` (unescaped; any bytes) matches
/// `module`: (.*\.)?(K)$ with K the escaped name holds exactly when module, or module without
/// one trailing newline, is key_name or ends in "." + key_name with no newline before that dot.
inline bool name_key_matches(std::string_view key_name, std::string_view module) {
  auto matches = [&](std::string_view m) {
    if (m.size() < key_name.size() || m.substr(m.size() - key_name.size()) != key_name) return false;
    const std::size_t start = m.size() - key_name.size();
    return start == 0 || (m[start - 1] == '.' && m.substr(0, start - 1).find('\n') == std::string_view::npos);
  };
  return matches(module) ||
         (!module.empty() && module.back() == '\n' && matches(module.substr(0, module.size() - 1)));
}

/// A name or key as a message shows it: escaped (printable), cut to about 200 bytes.
inline std::string shown_name(std::string_view s) {
  constexpr std::size_t limit = 200;
  if (s.size() <= limit) return "\"" + printable(s) + "\"";
  return "\"" + printable(s.substr(0, limit)) + "\"... (" + std::to_string(s.size()) + " bytes)";
}

/// The literal a key denotes when it has no metacharacter (see the file comment), else false.
inline bool literal_key(std::string_view key, std::string& literal) {
  literal.clear();
  for (std::size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    if (c == '\\') {
      if (i + 1 == key.size()) return false;
      const char n = key[i + 1];
      const bool ascii_alnum = (n >= 'a' && n <= 'z') || (n >= 'A' && n <= 'Z') || (n >= '0' && n <= '9');
      if (ascii_alnum) return false;  // \d, \n, \1, ...: special in Python
      literal += n;
      ++i;
      continue;
    }
    if (std::string_view(".^$*+?{}[]|()").find(c) != std::string_view::npos) return false;
    literal += c;
  }
  return true;
}

/// Python syntax rewritten for RE2 where both mean the same (\Z → \z, {,n} → {0,n}); the reason
/// RE2 would read the key differently from Python when it would ("" when it would not).
inline std::string python_to_re2(std::string_view key, std::string& reason) {
  std::string out;
  out.reserve(key.size() + 8);
  bool in_class = false;
  for (std::size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    if (c == '\\' && i + 1 < key.size()) {
      if (!in_class && key[i + 1] == 'Z') out += "\\z";
      else out += key.substr(i, 2);
      ++i;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < key.size() && key[i + 1] == ':' && reason.empty())
        reason = "\"[:\" inside a character class is a POSIX class in RE2 but literal characters in Python";
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < key.size() && key[i + 1] == '^') out += key[++i];
      if (i + 1 < key.size() && key[i + 1] == ']') out += key[++i];
      continue;
    }
    if (c == '{' && i + 1 < key.size() && key[i + 1] == ',') {
      std::size_t j = i + 2;
      while (j < key.size() && key[j] >= '0' && key[j] <= '9') ++j;
      if (j < key.size() && key[j] == '}') {  // Python's {,n} and {,}: at least zero
        out += "{0";
        continue;
      }
    }
    out += c;
  }
  return out;
}

/// Literal keys in a trie of their reversed bytes. Node 0 is the root (the empty suffix); nodes
/// are numbered breadth first, so the children of a node are contiguous, sorted by byte. key is
/// the smallest config index of a key equal to the node's string; best is the smallest over the
/// node's subtree (for pruning). Memory: 17 bytes per node, at most one node per key byte.
class literal_trie {
 public:
  literal_trie() = default;

  /// (literal, config index) pairs, indices below 2^32 - 1; duplicates keep the smaller index.
  explicit literal_trie(std::vector<std::pair<std::string, std::size_t>> keys) {
    if (keys.empty()) return;
    std::size_t bytes = 0;
    for (auto& entry : keys) {
      std::reverse(entry.first.begin(), entry.first.end());
      bytes += entry.first.size();
    }
    std::sort(keys.begin(), keys.end());  // bytes compare as unsigned char
    nodes_.reserve(bytes + 1);
    labels_.reserve(bytes + 1);
    nodes_.push_back(node{});
    labels_.push_back(0);
    // One level at a time, iteratively (no recursion on key length): level[k] is the range of
    // keys below node first + k, all of which share that node's depth bytes.
    struct range {
      std::size_t lo, hi;
    };
    std::vector<range> level{{0, keys.size()}}, next;
    std::size_t first = 0;
    for (std::size_t depth = 0; !level.empty(); ++depth) {
      next.clear();
      const std::size_t next_first = nodes_.size();
      for (std::size_t k = 0; k < level.size(); ++k) {
        auto [lo, hi] = level[k];
        const std::size_t id = first + k;
        while (lo < hi && keys[lo].first.size() == depth) {  // keys equal to this node's string
          nodes_[id].key = std::min(nodes_[id].key, static_cast<std::uint32_t>(keys[lo].second));
          ++lo;
        }
        nodes_[id].child_begin = static_cast<std::uint32_t>(nodes_.size());
        for (std::size_t i = lo; i < hi;) {
          const char c = keys[i].first[depth];
          std::size_t j = i;
          while (j < hi && keys[j].first[depth] == c) ++j;
          next.push_back({i, j});
          nodes_.push_back(node{});
          labels_.push_back(static_cast<unsigned char>(c));
          i = j;
        }
        nodes_[id].child_end = static_cast<std::uint32_t>(nodes_.size());
      }
      level.swap(next);
      first = next_first;
    }
    // Children come after their parents, so one backward pass gives subtree minima.
    for (std::size_t id = nodes_.size(); id-- > 0;) {
      auto& n = nodes_[id];
      n.best = n.key;
      for (std::uint32_t ch = n.child_begin; ch < n.child_end; ++ch) n.best = std::min(n.best, nodes_[ch].best);
    }
  }

  bool empty() const { return nodes_.empty(); }

  /// The smallest index of a key that matches m itself (not m without a trailing newline) and is
  /// smaller than `bound`, else `bound`. first_newline: the position of m's first '\n' or npos.
  /// Cost: at most min(|m|, longest key) + 1 steps, each a binary search among a node's children.
  std::size_t find(std::string_view m, std::size_t first_newline, std::size_t bound) const {
    if (nodes_.empty()) return bound;
    std::uint32_t id = 0;
    for (std::size_t depth = 0;; ++depth) {
      const node& n = nodes_[id];
      if (n.best == none || n.best >= bound) return bound;
      if (n.key != none && n.key < bound) {
        const std::size_t start = m.size() - depth;
        if (start == 0 || (m[start - 1] == '.' && (first_newline == std::string_view::npos || first_newline >= start)))
          bound = n.key;
      }
      if (depth == m.size()) return bound;
      const auto c = static_cast<unsigned char>(m[m.size() - 1 - depth]);
      const auto begin = labels_.begin() + n.child_begin, end = labels_.begin() + n.child_end;
      const auto it = std::lower_bound(begin, end, c);
      if (it == end || *it != c) return bound;
      id = static_cast<std::uint32_t>(it - labels_.begin());
    }
  }

 private:
  static constexpr std::uint32_t none = static_cast<std::uint32_t>(-1);
  struct node {
    std::uint32_t child_begin = 0, child_end = 0;
    std::uint32_t key = none, best = none;
  };
  std::vector<node> nodes_;
  std::vector<unsigned char> labels_;  // labels_[id]: the byte on the edge into node id
};

}  // namespace detail

/// A list of PEFT pattern keys, compiled once (see the file comment). Copies share the compiled
/// form, which is immutable; find() may be called from several threads at once.
class pattern_set {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_regex_key_bytes = 4096;
  static constexpr std::size_t max_regex_name_bytes = std::size_t(1) << 20;
  static constexpr std::int64_t regex_key_memory = std::int64_t(1) << 20;
  static constexpr std::int64_t regex_set_memory = std::int64_t(64) << 20;

  pattern_set() = default;

  /// Compiles `keys` in the config's order. `what` names them in messages (the config file and
  /// the field: "dir/adapter_config.json: rank_pattern"). Errors: error_code::invalid_file for a
  /// key that is not a valid regular expression, error_code::unsupported for valid Python that
  /// RE2 does not read the same way or that exceeds the limits; both name the key, escaped.
  explicit pattern_set(const std::vector<std::string>& keys, const std::string& what = "pattern") {
    check_count(keys.size(), what);
    auto c = std::make_shared<compiled>();
    c->what = what;
    c->size = keys.size();
    std::vector<std::pair<std::string, std::size_t>> literals;
    std::string literal;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (detail::literal_key(keys[i], literal)) {
        literals.emplace_back(literal, i);
        continue;
      }
      c->regex_index.push_back(i);
      c->regexes.push_back(compile(keys[i], what, regex_key_memory));
    }
    c->literals = detail::literal_trie(std::move(literals));
    if (c->regexes.size() > 1) {
      RE2::Options options;
      options.set_log_errors(false);
      options.set_max_mem(regex_set_memory);
      auto set = std::make_unique<RE2::Set>(options, RE2::ANCHOR_START);
      bool ok = true;
      for (const auto& re : c->regexes) ok = ok && set->Add(re->pattern(), nullptr) >= 0;
      if (ok && set->Compile()) c->set = std::move(set);  // else: key by key
    }
    compiled_ = std::move(c);
  }

  /// Keys that match exactly these module names, each as its escaped form would: the keys lola
  /// writes (peft_config_json), without the escaping round trip.
  static pattern_set of_names(std::vector<std::string> names) {
    check_count(names.size(), "names");
    pattern_set s;
    auto c = std::make_shared<compiled>();
    c->size = names.size();
    std::vector<std::pair<std::string, std::size_t>> literals;
    literals.reserve(names.size());
    for (std::size_t i = 0; i < names.size(); ++i) literals.emplace_back(std::move(names[i]), i);
    c->literals = detail::literal_trie(std::move(literals));
    s.compiled_ = std::move(c);
    return s;
  }

  std::size_t size() const { return compiled_ ? compiled_->size : 0; }
  bool empty() const { return size() == 0; }

  /// The index (in the config's order) of the first key that matches `name`, or npos. Cost:
  /// O(min(|name|, longest literal key)) for the literal keys plus one linear scan of the name
  /// for the regex keys (one per regex key when the Set gave up). Error (unsupported): a name of
  /// more than max_regex_name_bytes when a regex key could still decide the result.
  std::size_t find(std::string_view name) const {
    if (!compiled_) return npos;
    const compiled& c = *compiled_;
    const std::size_t first_newline = name.find('\n');
    std::size_t best = c.literals.find(name, first_newline, npos);
    if (!name.empty() && name.back() == '\n') {
      const std::string_view stripped = name.substr(0, name.size() - 1);
      best = c.literals.find(stripped, stripped.find('\n'), best);
    }
    if (c.regexes.empty() || c.regex_index.front() >= best) return best;
    if (name.size() > max_regex_name_bytes)
      throw error(error_code::unsupported,
                  c.what + ": module name " + detail::shown_name(name) + " is longer than " +
                      std::to_string(max_regex_name_bytes) + " bytes, the most lola matches against regex keys");
    const re2::StringPiece text(name.data(), name.size());
    if (c.set) {
      std::vector<int> hits;
      RE2::Set::ErrorInfo info{RE2::Set::kNoError};
      if (c.set->Match(text, &hits, &info) || info.kind == RE2::Set::kNoError) {
        for (int h : hits) best = std::min(best, c.regex_index[static_cast<std::size_t>(h)]);
        return best;
      }
    }
    for (std::size_t k = 0; k < c.regexes.size() && c.regex_index[k] < best; ++k)
      if (c.regexes[k]->Match(text, 0, text.size(), RE2::ANCHOR_START, nullptr, 0)) return c.regex_index[k];
    return best;
  }

 private:
  struct compiled {
    std::string what;
    std::size_t size = 0;
    detail::literal_trie literals;
    std::vector<std::unique_ptr<RE2>> regexes;  // the regex keys in the config's order
    std::vector<std::size_t> regex_index;       // their indices among all keys
    std::unique_ptr<RE2::Set> set;              // all regex keys, when there are several
  };

  static void check_count(std::size_t count, const std::string& what) {
    if (count >= std::size_t(0xFFFFFFFF))
      throw error(error_code::unsupported, what + ": " + std::to_string(count) + " pattern keys; lola takes fewer than 2^32");
  }

  static std::unique_ptr<RE2> compile(const std::string& key, const std::string& what, std::int64_t memory) {
    const std::string named = what + ": key " + detail::shown_name(key);
    if (key.size() > max_regex_key_bytes)
      throw error(error_code::unsupported, named + " is a regular expression of " + std::to_string(key.size()) +
                                               " bytes; lola compiles at most " +
                                               std::to_string(max_regex_key_bytes));
    std::string reason;
    const std::string translated = detail::python_to_re2(key, reason);
    if (!reason.empty()) throw error(error_code::unsupported, named + ": " + reason);
    RE2::Options options;
    options.set_log_errors(false);
    options.set_max_mem(memory);
    auto re = std::make_unique<RE2>("(?:.*\\.)?(?:" + translated + ")\\n?\\z", options);
    if (re->ok()) return re;
    // An error inside the key is reported as RE2 finds it in the key alone (within the wrapper,
    // "[q" would be a class running into the wrapper's \z); a key that is valid alone but not
    // within the wrapper, such as "a)", gets the wrapper's error.
    RE2 bare(translated, options);
    const RE2& failed = bare.ok() ? *re : bare;
    const std::string arg = failed.error_arg();
    const RE2::ErrorCode code = failed.error_code();
    bool python_only = false;
    switch (code) {
      case RE2::ErrorBadPerlOp:  // (?=, (?!, (?<=, (?<!, (?P=, (?(, (?#, (?>, (?x), ...
      case RE2::ErrorRepeatSize:  // counts above 1000
      case RE2::ErrorPatternTooLarge:
        python_only = true;
        break;
      case RE2::ErrorBadEscape:  // backreferences \1..\9, \u, \U, \N{...}
        python_only = arg.size() >= 2 && std::string_view("123456789uUN").find(arg[1]) != std::string_view::npos;
        break;
      case RE2::ErrorRepeatOp:  // possessive *+ ++ ?+ {m,n}+
        python_only = !arg.empty() && arg.back() == '+';
        break;
      default:
        break;
    }
    std::string message = named + (python_only ? " uses regular-expression syntax lola does not support: "
                                               : " is not a valid regular expression: ");
    message += describe(code, memory);
    if (shows_fragment(code)) message += " " + detail::shown_name(arg);
    throw error(python_only ? error_code::unsupported : error_code::invalid_file, message);
  }

  /// RE2's error codes in words (RE2's own messages quote the whole wrapped pattern).
  static std::string describe(RE2::ErrorCode code, std::int64_t memory) {
    switch (code) {
      case RE2::ErrorBadEscape: return "invalid escape";
      case RE2::ErrorBadCharClass: return "invalid character class";
      case RE2::ErrorBadCharRange: return "invalid character class range";
      case RE2::ErrorMissingBracket: return "missing ]";
      case RE2::ErrorMissingParen: return "missing )";
      case RE2::ErrorUnexpectedParen: return "unexpected )";
      case RE2::ErrorTrailingBackslash: return "trailing backslash";
      case RE2::ErrorRepeatArgument: return "nothing to repeat before";
      case RE2::ErrorRepeatSize: return "repetition count above 1000 or invalid in";
      case RE2::ErrorRepeatOp: return "invalid repetition operator";
      case RE2::ErrorBadPerlOp: return "lookaround, backreference, conditional, comment, atomic group or flag in";
      case RE2::ErrorBadUTF8: return "invalid UTF-8";
      case RE2::ErrorBadNamedCapture: return "invalid group name in";
      case RE2::ErrorPatternTooLarge:
        return "its compiled form exceeds " + std::to_string(memory >> 10) + " KiB";
      default: return "rejected by RE2";
    }
  }

  /// Whether RE2's error_arg() for this code is the offending fragment (not the whole pattern).
  static bool shows_fragment(RE2::ErrorCode code) {
    return code == RE2::ErrorBadEscape || code == RE2::ErrorBadCharRange || code == RE2::ErrorRepeatArgument ||
           code == RE2::ErrorRepeatSize || code == RE2::ErrorRepeatOp || code == RE2::ErrorBadPerlOp ||
           code == RE2::ErrorBadNamedCapture;
  }

  std::shared_ptr<const compiled> compiled_;
};

}  // namespace lola::io
