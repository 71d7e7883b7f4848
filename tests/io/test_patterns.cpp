// PEFT's module-name patterns (io/pattern.hpp): a key K matches a module name M when Python's
// re.match(rf"(.*\.)?({K})$", M) does, and the first matching key in the config's order wins.
// Every expected value below is what Python 3's re gives for the same key and name.
//
// Properties: the semantics on literal, escaped and regex keys (checked against std::regex, an
// independent spelling of the rule, where Python and ECMAScript agree); first-match order across
// literal and regex keys; pathological keys (catastrophic backtracking, deep nesting, huge counts,
// Python-only syntax) give a result or a clear lola::error naming the key, escaped; an adapter of
// 10,000 modules with the pattern keys lola writes loads with the right ranks and scales; the
// checked-in fuzz regression inputs replay cleanly. Each rule is shown able to fail: a plain
// suffix matcher, a literal-keys-first matcher and unescaped echoing are run beside lola and give
// other answers on the same inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

// GCC 12's libstdc++ <regex> (the reference spelling of the rule) trips a false
// -Wmaybe-uninitialized inside std::function; silenced for these includes only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>

#include "fuzz/peft_config_input.hpp"
#include "lola/io/load.hpp"
#include "lola/io/pattern.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#pragma GCC diagnostic pop

namespace io = lola::io;
using io::pattern_set;
using lola_test::contains;
using lola_test::thrown_by;

namespace {

constexpr std::size_t none = pattern_set::npos;

std::size_t find(const std::vector<std::string>& keys, const std::string& name) {
  return pattern_set(keys, "cfg").find(name);
}

bool matches(const std::string& key, const std::string& name) { return find({key}, name) == 0; }

/// PEFT's rule spelled with std::regex (ECMAScript), for keys and names where ECMAScript and
/// Python agree (no newline in the name, no Python-only syntax).
bool reference_rule(const std::string& key, const std::string& name) {
  return std::regex_match(name, std::regex("(.*\\.)?(" + key + ")"));
}

/// The deliberately wrong rule: K matches M when M ends in K, at a dot or not.
bool plain_suffix_rule(const std::string& key, const std::string& name) {
  return name.size() >= key.size() && name.compare(name.size() - key.size(), key.size(), key) == 0;
}

/// The deliberately wrong order: literal keys first, then the regex keys (each matched alone).
std::size_t literals_first(const std::vector<std::string>& keys, const std::string& name) {
  std::string literal;
  for (int pass = 0; pass < 2; ++pass)
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (io::detail::literal_key(keys[i], literal) == (pass == 0) && matches(keys[i], name)) return i;
  return none;
}

const std::string q0 = "model.layers.0.self_attn.q_proj";
const std::string q1 = "model.layers.1.self_attn.q_proj";
const std::string v12 = "model.layers.12.self_attn.v_proj";
const std::string up3 = "model.layers.3.mlp.up_proj";
const std::string proj = "model.layers.3.mlp.proj";

}  // namespace

TEST_CASE("literal keys: the name itself or a suffix at a dot, not a plain suffix") {
  CHECK(matches("q_proj", q0));
  CHECK(matches("self_attn.q_proj", q0));
  CHECK(matches(q0, q0));
  CHECK_FALSE(matches("proj", q0));  // q0 ends in "_proj", not ".proj"
  CHECK(matches("proj", proj));
  CHECK_FALSE(matches("_proj", q0));
  CHECK_FALSE(matches("self_attn", q0));  // a dotted component, but not at the end
  CHECK_FALSE(matches("odel.layers.0.self_attn.q_proj", q0));
  CHECK_FALSE(matches("x." + q0, q0));
  // The wrong rule says otherwise on the same input, so the check above can fail.
  CHECK(plain_suffix_rule("proj", q0));
  CHECK(plain_suffix_rule("_proj", q0));
}

TEST_CASE("regex keys: PEFT's rule, as std::regex spells it, on literal, escaped and regex keys") {
  const std::vector<std::string> keys = {
      "q_proj", "proj", "_proj", "self_attn", "layers.1.self_attn.q_proj", "model\\.layers\\.0\\.self_attn\\.q_proj",
      "layers\\.[0-9]+\\.self_attn\\.(q|v)_proj", "q_proj|v_proj", "layers\\.\\d+\\.mlp\\.(up_)?proj", ".*",
      "mlp\\..*", "^layers\\.0", "^model\\.layers\\.0\\..*", "layers.1.self_attn.q_proj|up_proj", "v_pro",
      "(q|v)_proj", "[qv]_proj", "(?:self_attn|mlp)\\.[a-z_]+", "model.layers.1[0-9].*"};
  const std::vector<std::string> names = {q0, q1, v12, up3, proj, "q_proj", "proj", "layers.0.fc", "lm_head"};
  for (const auto& key : keys)
    for (const auto& name : names) {
      CAPTURE(key);
      CAPTURE(name);
      CHECK(matches(key, name) == reference_rule(key, name));
    }
  // Named cases from Python's re.
  CHECK(matches("layers\\.[0-9]+\\.self_attn\\.(q|v)_proj", v12));
  CHECK(matches("q_proj|v_proj", v12));
  CHECK_FALSE(matches("q_proj|v_proj", up3));
  CHECK_FALSE(matches("^layers\\.0", q0));  // ^ anchors the whole name: no model. prefix allowed
}

TEST_CASE("escaped names (what lola and PEFT write) behave as the literal and as RE2 would") {
  // An escaped key goes the literal route; wrapped in a group it goes through RE2. Both routes
  // and the unescaped literal agree on every name.
  const std::vector<std::string> names = {q0, q1, "x." + q0, "x" + q0, q0 + "x", "self_attn.q_proj",
                                          "model.layers.0.self_attnXq_proj", "model-layers.0.self_attn.q_proj"};
  for (const std::string& literal : {q0, std::string("self_attn.q_proj"), std::string("a-b/c d+e")}) {
    const std::string escaped = io::detail::regex_escape(literal);
    std::string unescaped;
    REQUIRE(io::detail::literal_key(escaped, unescaped));
    CHECK(unescaped == literal);
    for (const auto& name : names) {
      CAPTURE(escaped);
      CAPTURE(name);
      CHECK(matches(escaped, name) == matches("(?:" + escaped + ")", name));
      CHECK(matches(escaped, name) == reference_rule(escaped, name));
    }
  }
  // An unescaped dot is a wildcard (regex route): "layers.0" also matches "layersX0".
  CHECK(matches("layers.0.self_attn.q_proj", "model.layersX0.self_attn.q_proj"));
  CHECK_FALSE(matches("layers\\.0\\.self_attn\\.q_proj", "model.layersX0.self_attn.q_proj"));
}

TEST_CASE("names with newlines: (.*\\.) cannot cross one; $ also matches before a final one") {
  // Python: re.match(r"(.*\.)?(q_proj)$", "a\nb.q_proj") is None; "a.q_proj\n" matches.
  CHECK_FALSE(matches("q_proj", "a\nb.q_proj"));
  CHECK_FALSE(matches("q_.roj", "a\nb.q_proj"));
  CHECK(matches("q_proj", "a.q_proj\n"));
  CHECK(matches("q_.roj", "a.q_proj\n"));
  CHECK_FALSE(matches("q_proj", "a.q_proj\n\n"));
  CHECK(matches("a\nb", "x.a\nb"));  // a literal newline in a key is a literal character
  // The old suffix check (name_key_matches) ignored the newline.
  CHECK(plain_suffix_rule(".q_proj", "a\nb.q_proj"));
}

TEST_CASE("Python syntax: translated where RE2 means the same, refused where it would not") {
  CHECK(matches("q\\Z", "a.q"));        // \Z is RE2's \z
  CHECK_FALSE(matches("q\\Z", "a.q\n"));  // Python: \Z is the very end, before the final newline or not
  CHECK(matches("q{,2}", "a.qq"));      // {,n} is {0,n}; RE2 alone would read it literally
  CHECK_FALSE(matches("q{,2}", "a.qqq"));
  CHECK(matches("a)|(b", "abc.x"));  // closes PEFT's group: (.*\.)?(a)|(b)$, the first branch unanchored
  CHECK_FALSE(matches("a)|(b", "x.cb"));
  CHECK(matches("a)|(b", "b"));
  const auto posix = thrown_by([] { find({"[[:alpha:]]"}, "a"); });
  CHECK(posix.code() == lola::error_code::unsupported);
  CHECK(contains(posix.what(), "[[:alpha:]]"));
}

TEST_CASE("first match in the config's order, across literal and regex keys") {
  // Literal "q_proj", regex "layers\.0\..*", escaped full name, regex alternation.
  const std::vector<std::string> keys = {"layers\\.0\\..*", "q_proj", "model\\.layers\\.1\\.self_attn\\.q_proj",
                                         "q_proj|v_proj", "proj"};
  CHECK(find(keys, q0) == 0);  // the regex comes first
  CHECK(find(keys, q1) == 1);  // the literal, before its own full name
  CHECK(find(keys, v12) == 3);
  CHECK(find(keys, proj) == 4);
  CHECK(find(keys, up3) == none);
  // Every order of the keys: the set's answer is the first key that matches alone.
  std::vector<std::size_t> order = {0, 1, 2, 3, 4};
  do {
    std::vector<std::string> permuted;
    for (auto i : order) permuted.push_back(keys[i]);
    for (const auto& name : {q0, q1, v12, proj, up3}) {
      std::size_t expected = none;
      for (std::size_t i = 0; i < permuted.size() && expected == none; ++i)
        if (reference_rule(permuted[i], name)) expected = i;
      CAPTURE(name);
      CHECK(find(permuted, name) == expected);
    }
  } while (std::next_permutation(order.begin(), order.end()));
  // Many regex keys (one RE2::Set) among literals: still the smallest matching index.
  std::vector<std::string> many;
  for (int i = 0; i < 50; ++i) many.push_back("layers\\." + std::to_string(100 + i) + "\\..*");
  many.push_back("q_proj");
  many.push_back("layers\\.1\\..*");
  CHECK(find(many, q1) == 50);
  CHECK(find(many, "model.layers.101.self_attn.q_proj") == 1);
  // The wrong order (literal keys first) gives the literal for q0, where PEFT gives the regex.
  CHECK(literals_first(keys, q0) == 1);
}

TEST_CASE("duplicate literal keys: the first one's index") {
  CHECK(find({"x", "q_proj", "q_proj", "model\\.layers\\.0\\.self_attn\\.q_proj"}, q0) == 1);
  CHECK(find({"model\\.layers\\.0\\.self_attn\\.q_proj", "q_proj"}, q0) == 0);
}

TEST_CASE("literal keys with any bytes: the trie orders bytes as unsigned, as the names do") {
  // Bytes above 0x7F sort after ASCII; a signed comparison would put them first and the binary
  // search among a node's children would miss them.
  const std::vector<std::string> keys = {"\xc3\xbc_proj", "u_proj", "\xc3\xbc", "x\xff", "a\x01" "b", "\x7f"};
  const std::vector<std::string> names = {"m.\xc3\xbc_proj", "m.u_proj", "\xc3\xbc", "m.x\xff", "a\x01" "b",
                                          "q.\x7f", "m.\xbc_proj", "m.xx\xff"};
  for (const auto& name : names) {
    std::size_t expected = none;
    for (std::size_t i = 0; i < keys.size() && expected == none; ++i)
      if (reference_rule(keys[i], name)) expected = i;
    CAPTURE(name);
    CHECK(find(keys, name) == expected);
    CHECK(pattern_set::of_names(keys).find(name) == expected);
  }
  CHECK(find(keys, "m.x\xff") == 3);
}

TEST_CASE("catastrophic patterns on a 100,000-byte name give a result") {
  const std::string as(100000, 'a');
  CHECK(find({"(a*)*b"}, as) == none);
  CHECK(find({"(a*)*b"}, as + "b") == 0);
  CHECK(find({"(a|a)*c"}, as) == none);
  CHECK(find({"(a|a)*c"}, "x." + as + "c") == 0);
  CHECK(find({"(.*)*x"}, as) == none);
  CHECK(find({"(.*)*x"}, as + "x") == 0);
  CHECK(find({"(x+x+)+y"}, std::string(100000, 'x')) == none);
  std::string dotted;
  for (int i = 0; i < 50000; ++i) dotted += "a.";
  CHECK(find({"(a*)*b", "(a|a)*c", "(.*)*x", "(a.)*b"}, dotted) == none);
  CHECK(find({"(a|a)*c", "(.*)*x", "(a.)*a\\.b", "(a*)*b"}, dotted + "b") == 2);
  CHECK(find({"(a|a)*c", "(a*)*b", "(.*)*x"}, dotted + "b") == 1);  // "b" after the last dot
}

TEST_CASE("deeply nested groups: a result or a clear error, never a stack overflow") {
  std::string nested2000;
  for (int i = 0; i < 2000; ++i) nested2000 += '(';
  nested2000 += 'a';
  for (int i = 0; i < 2000; ++i) nested2000 += ')';
  CHECK(find({nested2000}, "x.a") == 0);
  CHECK(find({nested2000}, "x.b") == none);
  std::string stars;
  for (int i = 0; i < 800; ++i) stars += "(?:";  // 4001 bytes, under the cap
  stars += 'a';
  for (int i = 0; i < 800; ++i) stars += ")*";
  CHECK(find({stars}, std::string(100000, 'a')) == 0);
  // 10,000 levels: a key over the length cap, refused by name.
  std::string nested10000;
  for (int i = 0; i < 10000; ++i) nested10000 += '(';
  nested10000 += 'a';
  for (int i = 0; i < 10000; ++i) nested10000 += ')';
  const auto e = thrown_by([&] { pattern_set({nested10000}, "my/adapter_config.json: alpha_pattern"); });
  CHECK(e.code() == lola::error_code::unsupported);
  CHECK(contains(e.what(), "my/adapter_config.json: alpha_pattern"));
  CHECK(contains(e.what(), "\"(((((("));
  CHECK(contains(e.what(), "20001 bytes"));
  CHECK(std::string(e.what()).size() < 1000);  // the key is cut, not echoed whole
}

TEST_CASE("constructs RE2 lacks or rejects: a lola::error naming the key") {
  struct bad {
    const char* key;
    lola::error_code code;
  };
  for (const auto& b : {bad{"(?=x)", lola::error_code::unsupported}, bad{"(?!x)y", lola::error_code::unsupported},
                        bad{"(?<=a)b", lola::error_code::unsupported}, bad{"(a)\\1", lola::error_code::unsupported},
                        bad{"(?P<n>a)(?P=n)", lola::error_code::unsupported}, bad{"a{2000}", lola::error_code::unsupported},
                        bad{"a*+", lola::error_code::unsupported}, bad{"q_proj(", lola::error_code::invalid_file},
                        bad{"[q", lola::error_code::invalid_file}, bad{"*a", lola::error_code::invalid_file},
                        bad{"a)", lola::error_code::invalid_file}}) {
    CAPTURE(b.key);
    const auto e = thrown_by([&] { find({"q_proj", b.key}, "x"); });
    CHECK(e.code() == b.code);
    CHECK(contains(e.what(), "cfg: key \"" + io::printable(b.key) + "\""));
  }
  const auto missing = thrown_by([] { find({"[q"}, "x"); });
  CHECK(contains(missing.what(), "missing ]"));  // the key's own error, not one inside the wrapper
}

TEST_CASE("a key with control characters is echoed escaped") {
  const std::string key = "\x1b[2J\x1b[31m(\nforged line";
  const auto e = thrown_by([&] { find({key}, "x"); });
  const std::string message = e.what();
  CHECK(contains(message, "\\x1B[2J\\x1B[31m(\\x0Aforged line"));
  CHECK(message.find('\x1b') == std::string::npos);
  CHECK(message.find('\n') == std::string::npos);
  // Echoing the key as it is (the wrong variant) would put both bytes in the message.
  const std::string unescaped = "key \"" + key + "\"";
  CHECK(unescaped.find('\x1b') != std::string::npos);
}

TEST_CASE("limits: a long name against regex keys is a clear error; literal keys have none") {
  const std::string name(pattern_set::max_regex_name_bytes + 1, 'a');
  const auto e = thrown_by([&] { find({"x|y"}, name); });
  CHECK(e.code() == lola::error_code::unsupported);
  CHECK(contains(e.what(), std::to_string(name.size()) + " bytes"));
  CHECK(find({"q_proj", "x|y"}, name + ".q_proj") == 0);  // decided before the regex key: no error
  CHECK(find({"a"}, name) == none);
  CHECK(find({"a"}, name + ".a") == 0);
  CHECK(find({"(?:x|a)"}, std::string(pattern_set::max_regex_name_bytes, 'a')) == none);
}

TEST_CASE("peft_config: patterns compiled once, errors name the file and field") {
  const auto cfg = io::peft_config::from_json(
      io::parse_json(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"layers\\.1\\..*": 2, "q_proj": 8},
                         "alpha_pattern": {"q_proj|v_proj": 16}})"),
      "dir/adapter_config.json");
  const auto s1 = cfg.scaling(q1);
  CHECK(s1.r == 2);
  CHECK(s1.alpha == 16);
  CHECK(s1.scale == 8);
  REQUIRE(s1.rank_key);
  CHECK(s1.rank_key->first == "layers\\.1\\..*");
  const auto s0 = cfg.scaling(q0);
  CHECK(s0.r == 8);
  CHECK(s0.scale == 2);
  const auto su = cfg.scaling(up3);
  CHECK(su.r == 4);
  CHECK(su.scale == 2);
  CHECK_FALSE(su.rank_key);
  const auto e = thrown_by([] {
    io::peft_config::from_json(io::parse_json(R"json({"alpha_pattern": {"(?=a)": 1}})json"), "dir/adapter_config.json");
  });
  CHECK(contains(e.what(), "dir/adapter_config.json: alpha_pattern: key \"(?=a)\""));
}

TEST_CASE("an adapter of 10,000 modules with the pattern keys lola writes loads with its scales") {
  // Ranks 1..16 and a distinct scale per module: peft_config_json (what `lola resize --sv-fro`
  // writes) lists almost every module in rank_pattern and every one in alpha_pattern.
  constexpr int count = 10000;
  io::adapter<float> a;
  a.format = io::adapter_format::peft;
  a.config = io::json_value::object();
  std::vector<io::tensor> tensors;
  for (int i = 0; i < count; ++i) {
    io::adapter_module<float> m;
    m.name = "base_model.model.model.layers." + std::to_string(i / 8) + ".block." + std::to_string(i % 8) + ".proj";
    const int r = 1 + i % 16;
    m.A = io::adapter_module<float>::matrix::Constant(r, 2, 0.5f);
    m.B = io::adapter_module<float>::matrix::Constant(3, r, 0.25f);
    m.scale = 1.0 + i / 1024.0;  // exact in binary: α = s·r is exact
    tensors.push_back(io::tensor::from_matrix(m.name + ".lora_A.weight", io::dtype::F32,
                                              {std::uint64_t(r), 2}, m.A));
    tensors.push_back(io::tensor::from_matrix(m.name + ".lora_B.weight", io::dtype::F32,
                                              {3, std::uint64_t(r)}, m.B));
    a.modules.push_back(std::move(m));
  }
  const auto config = io::peft_config_json(a);
  CHECK(config.find("rank_pattern")->size() >= 9000);
  CHECK(config.find("alpha_pattern")->size() >= 9990);  // all but the modules at the most common α
  lola_test::temp_dir dir("lola_patterns");
  io::write_file_atomic(dir / "adapter_config.json", config.dump(2));
  io::write_file_atomic(dir / "adapter_model.safetensors", [&] {
    const auto bytes = io::serialize_safetensors(tensors, {{"format", "pt"}});
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }());
  const auto b = io::load_adapter<float>(dir.path);
  REQUIRE(b.modules.size() == a.modules.size());
  int wrong = 0;
  for (const auto& m : a.modules) {
    const auto* loaded = b.find(m.name);
    wrong += !loaded || loaded->rank() != m.rank() || std::abs(loaded->scale - m.scale) > 1e-12 * m.scale;
  }
  CHECK(wrong == 0);
  CHECK(io::peft_config_reproduces(config, a));
  // A config that gives one module another α no longer reproduces the adapter.
  auto changed = config;
  changed.find("alpha_pattern")->members()[count / 2].second = io::json_value(1e6);
  CHECK_FALSE(io::peft_config_reproduces(changed, a));
}

TEST_CASE("the fuzz regression corpus replays cleanly") {
  const std::filesystem::path corpus = LOLA_PEFT_CONFIG_CORPUS;
  REQUIRE(std::filesystem::is_directory(corpus));
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CAPTURE(entry.path().string());
    CHECK(lola_fuzz::check_peft_config_input(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) ==
          "");
    ++files;
  }
  CHECK(files >= 10);
}

TEST_CASE("fuzz input, text form: the config on the first line, then one name per line") {
  // The checker compares the set with one key at a time; the literal-keys-first variant, run in
  // place of pattern_set::find, fails the corpus replay above through that comparison.
  const std::string input = "{\"rank_pattern\": {\"layers\\\\.0\\\\..*\": 2, \"q_proj\": 4}}\n" + q0 + "\n" + q1 + "\n";
  const auto split = lola_fuzz::split_peft_config_input(reinterpret_cast<const std::uint8_t*>(input.data()),
                                                        input.size());
  REQUIRE(split.names.size() == 3);  // q0, q1 and the empty name after the final newline
  CHECK(split.names[0] == q0);
  CHECK(lola_fuzz::check_peft_config_input(reinterpret_cast<const std::uint8_t*>(input.data()), input.size()) == "");
  // What the checker compares: a literals-first matcher would give key 1 for q0, the set gives 0.
  CHECK(find({"layers\\.0\\..*", "q_proj"}, q0) == 0);
  CHECK(literals_first({"layers\\.0\\..*", "q_proj"}, q0) == 1);
}
