// The PEFT and kohya dialects: key names and shapes, the scaling rules (α/r, α/√r, PEFT's
// rank_pattern / alpha_pattern suffix-regex rule, kohya's alpha), what is kept as passthrough, the
// errors, dialect detection, loading from paths, and read → save → read round trips.
//
// Every adapter here is written by lola's own writer (tensor::from_matrix, serialize_safetensors,
// write_safetensors, write_file_atomic) or, where the header order matters, by a small hand-built
// header, into a fresh mkdtemp directory under /tmp that is removed afterwards.
//
// Tolerances on factor values: the test values have magnitudes in [0.5, 2), normal numbers in every
// dtype, so rounding a double to a storage dtype with p significand bits (round to nearest) errs by
// at most the unit roundoff 2^-p relative: 2^-11 for F16 (p = 11) and 2^-8 for BF16 (p = 8).
// F32 test values are generated already rounded to float and F64 values are read as double, so
// those are compared exactly.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <Eigen/Core>

// GCC 12's libstdc++ <regex> (this test's reference spelling of PEFT's pattern rule) trips a false
// -Wmaybe-uninitialized inside std::function at -O1 with -fsanitize=address. The warning is
// located in the standard headers first included here, so it is silenced for this include only;
// every other warning stays an error.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#include "lola/io/load.hpp"
#include "support/temp_dir.hpp"
#pragma GCC diagnostic pop

namespace io = lola::io;

namespace {

using rm = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using shape_t = std::vector<std::uint64_t>;

struct temp_dir : lola_test::temp_dir {
  temp_dir() : lola_test::temp_dir("lola_dialects") {}
};

/// The names in a directory (not recursive).
std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    names.insert(entry.path().filename().string());
  return names;
}

std::string joined(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return "{" + out + "}";
}

bool any_temporary(const std::set<std::string>& names) {
  return std::any_of(names.begin(), names.end(),
                     [](const std::string& n) { return n.find(".lola-tmp") != std::string::npos; });
}

std::string file_text(const std::string& path) { return io::read_text_file(path); }

/// rows × cols values with magnitudes in [0.5, 2) and random signs (normal numbers in F16 and
/// BF16, so the relative rounding bound holds); rounded to float first when stored as F32 so the
/// file holds them exactly.
rm values(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& rng, io::dtype t = io::dtype::F32) {
  std::uniform_real_distribution<double> magnitude(0.5, 2.0);
  std::bernoulli_distribution negative(0.5);
  rm m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j) {
      double v = magnitude(rng) * (negative(rng) ? -1 : 1);
      if (t == io::dtype::F32) v = static_cast<double>(static_cast<float>(v));
      m(i, j) = v;
    }
  return m;
}

/// The unit roundoff of the storage dtype for the values above (see the file comment).
double unit_roundoff(io::dtype t) {
  switch (t) {
    case io::dtype::F16: return std::ldexp(1.0, -11);
    case io::dtype::BF16: return std::ldexp(1.0, -8);
    default: return 0.0;  // F32 / F64: exact
  }
}

/// The largest |got − want| / |want| over the entries; +inf when the shapes differ.
template <class M>
double max_relative_error(const M& got, const rm& want) {
  if (got.rows() != want.rows() || got.cols() != want.cols())
    return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (Eigen::Index i = 0; i < want.rows(); ++i)
    for (Eigen::Index j = 0; j < want.cols(); ++j)
      worst = std::max(worst, std::abs(static_cast<double>(got(i, j)) - want(i, j)) / std::abs(want(i, j)));
  return worst;
}

io::tensor T(const std::string& name, io::dtype t, shape_t shape, const rm& m) {
  return io::tensor::from_matrix(name, t, std::move(shape), m);
}

io::tensor scalar(const std::string& name, io::dtype t, double value, shape_t shape = {}) {
  Eigen::Matrix<double, 1, 1> v;
  v(0, 0) = value;
  return io::tensor::from_matrix(name, t, std::move(shape), v);
}

/// An image in lola's writer order (dtype descending, then name).
io::safetensors_file image(const std::vector<io::tensor>& tensors, const io::metadata_map& metadata = {}) {
  return io::safetensors_file::from_bytes(io::serialize_safetensors(tensors, metadata), "test.safetensors");
}

/// An image whose header lists the tensors in exactly the given order (data in the same order).
io::safetensors_file hand_image(const std::vector<io::tensor>& tensors) {
  io::json_value header = io::json_value::object();
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    io::json_value entry = io::json_value::object();
    entry.set("dtype", std::string(io::dtype_name(t.dtype)));
    io::json_value shape = io::json_value::array();
    for (auto d : t.shape) shape.push_back(io::json_value(static_cast<unsigned long long>(d)));
    entry.set("shape", std::move(shape));
    io::json_value offsets = io::json_value::array();
    offsets.push_back(io::json_value(static_cast<unsigned long long>(offset)));
    offsets.push_back(io::json_value(static_cast<unsigned long long>(offset + t.data.size())));
    entry.set("data_offsets", std::move(offsets));
    header.set(t.name, std::move(entry));
    offset += t.data.size();
  }
  const std::string text = header.dump();
  std::vector<std::byte> bytes(8 + text.size());
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>((text.size() >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  for (const auto& t : tensors) bytes.insert(bytes.end(), t.data.begin(), t.data.end());
  return io::safetensors_file::from_bytes(std::move(bytes), "hand.safetensors");
}

io::json_value config(const std::string& text) { return io::parse_json(text, "test config"); }

/// What a lola::error said, or thrown == false.
struct caught {
  bool thrown = false;
  std::string code;
  std::string what;
  bool has(const std::string& s) const { return what.find(s) != std::string::npos; }
};

template <class F>
caught catch_error(F&& f) {
  try {
    f();
  } catch (const lola::error& e) {
    return {true, lola::to_string(e.code()), e.what()};
  }
  return {};
}

bool any_has(const std::vector<std::string>& lines, const std::string& s) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(s) != std::string::npos; });
}

template <class S>
std::vector<std::string> module_names(const io::adapter<S>& a) {
  std::vector<std::string> names;
  for (const auto& m : a.modules) names.push_back(m.name);
  return names;
}

const io::tensor* find_tensor(const std::vector<io::tensor>& ts, const std::string& name) {
  for (const auto& t : ts)
    if (t.name == name) return &t;
  return nullptr;
}

bool same_tensor(const io::tensor& x, const io::tensor& y) {
  return x.name == y.name && x.dtype == y.dtype && x.shape == y.shape && x.data == y.data;
}

bool same_tensors_by_name(const std::vector<io::tensor>& x, const std::vector<io::tensor>& y) {
  if (x.size() != y.size()) return false;
  for (const auto& t : x) {
    const auto* u = find_tensor(y, t.name);
    if (!u || !same_tensor(t, *u)) return false;
  }
  return true;
}

bool relatively_equal(double x, double y, double tol = 1e-12) {
  return std::abs(x - y) <= tol * std::max(std::abs(x), std::abs(y));
}

/// Two adapters hold the same modules (matched by name, any order): bit-identical factors, the same
/// dtypes, file shapes, kind, transposition and extras, and scales equal to 1e-12 relative; the
/// same passthrough tensors.
template <class S>
void check_same_adapter(const io::adapter<S>& x, const io::adapter<S>& y) {
  CHECK(x.format == y.format);
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  REQUIRE(sorted(module_names(x)) == sorted(module_names(y)));
  for (const auto& m : x.modules) {
    CAPTURE(m.name);
    const auto* n = y.find(m.name);
    REQUIRE(n != nullptr);
    CHECK(m.kind == n->kind);
    CHECK(m.transposed == n->transposed);
    CHECK(m.A == n->A);
    CHECK(m.B == n->B);
    CHECK(m.A_shape == n->A_shape);
    CHECK(m.B_shape == n->B_shape);
    CHECK(m.A_dtype == n->A_dtype);
    CHECK(m.B_dtype == n->B_dtype);
    CHECK(relatively_equal(m.scale, n->scale));
    CHECK(same_tensors_by_name(m.extras, n->extras));
  }
  CHECK(same_tensors_by_name(x.passthrough, y.passthrough));
}

/// Every tensor of `original` that is in `saved` has the same dtype, shape and bytes.
void check_bytes_kept(const io::safetensors_view& original, const io::safetensors_view& saved,
                      const std::vector<std::string>& names) {
  for (const auto& name : names) {
    CAPTURE(name);
    const auto* a = original.find(name);
    const auto* b = saved.find(name);
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    CHECK(a->dtype == b->dtype);
    CHECK(a->shape == b->shape);
    REQUIRE(a->byte_count() == b->byte_count());
    CHECK(std::memcmp(original.bytes(*a), saved.bytes(*b), a->byte_count()) == 0);
  }
}

std::string metadata_value(const io::metadata_map& m, const std::string& key, int* count = nullptr) {
  std::string value;
  int n = 0;
  for (const auto& [k, v] : m)
    if (k == key) value = v, ++n;
  if (count) *count = n;
  return value;
}

// The PEFT pattern-test adapter: four modules in the model's names
//   q0 model.layers.0.self_attn.q_proj  r 4      q1 model.layers.1.self_attn.q_proj  r 2
//   v0 model.layers.0.self_attn.v_proj  r 4      p0 model.layers.0.mlp.proj          r 4
const std::string wrap = "base_model.model.";
const std::string q0 = wrap + "model.layers.0.self_attn.q_proj";
const std::string q1 = wrap + "model.layers.1.self_attn.q_proj";
const std::string v0 = wrap + "model.layers.0.self_attn.v_proj";
const std::string p0 = wrap + "model.layers.0.mlp.proj";

std::vector<io::tensor> pattern_tensors() {
  std::mt19937_64 rng(11);
  std::vector<io::tensor> ts;
  const std::vector<std::pair<std::string, int>> mods = {{q0, 4}, {q1, 2}, {v0, 4}, {p0, 4}};
  for (const auto& [name, r] : mods) {
    ts.push_back(T(name + ".lora_A.weight", io::dtype::F32, {shape_t::value_type(r), 6}, values(r, 6, rng)));
    ts.push_back(T(name + ".lora_B.weight", io::dtype::F32, {5, shape_t::value_type(r)}, values(5, r, rng)));
  }
  return ts;
}

/// Scales by module name, read with the config text.
std::map<std::string, double> pattern_scales(const std::string& config_text) {
  const auto file = image(pattern_tensors());
  const auto cfg = config(config_text);
  const auto a = io::read_peft<double>(file.view(), &cfg);
  std::map<std::string, double> s;
  for (const auto& m : a.modules) s[m.name] = m.scale;
  return s;
}

/// The deliberately wrong pattern rule: K matches M when K occurs anywhere in M.
bool substring_rule(const std::string& key, const std::string& module) {
  return module.find(key) != std::string::npos;
}

/// PEFT's rule written directly from its definition, re.match(rf"(.*\.)?({K})$", M), with
/// std::regex (a second, independent spelling of the same rule for comparison).
bool peft_rule(const std::string& key, const std::string& module) {
  return std::regex_match(module, std::regex("(.*\\.)?(" + key + ")"));
}

// A mixed PEFT adapter for round trips: a linear module with DoRA magnitude and lora bias (F32),
// a conv module (F16), an embedding module (BF16), a second linear module of rank 2 (F32), and a
// passthrough lm_head; metadata without "format".
const std::string rt_q = wrap + "model.layers.0.self_attn.q_proj";
const std::string rt_v = wrap + "model.layers.0.self_attn.v_proj";
const std::string rt_conv = wrap + "unet.conv_in";
const std::string rt_emb = wrap + "model.embed_tokens";
const std::string rt_head = wrap + "lm_head.weight";

std::vector<io::tensor> roundtrip_peft_tensors() {
  std::mt19937_64 rng(21);
  return {
      T(rt_q + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
      T(rt_q + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)),
      T(rt_q + ".lora_magnitude_vector", io::dtype::F32, {5}, values(5, 1, rng)),
      T(rt_q + ".lora_B.bias", io::dtype::F32, {5}, values(5, 1, rng)),
      T(rt_v + ".lora_A.weight", io::dtype::F32, {2, 6}, values(2, 6, rng)),
      T(rt_v + ".lora_B.weight", io::dtype::F32, {3, 2}, values(3, 2, rng)),
      T(rt_conv + ".lora_A.weight", io::dtype::F16, {4, 2, 3, 3}, values(4, 18, rng, io::dtype::F16)),
      T(rt_conv + ".lora_B.weight", io::dtype::F16, {3, 4, 1, 1}, values(3, 4, rng, io::dtype::F16)),
      T(rt_emb + ".lora_embedding_A", io::dtype::BF16, {4, 7}, values(4, 7, rng, io::dtype::BF16)),
      T(rt_emb + ".lora_embedding_B", io::dtype::BF16, {5, 4}, values(5, 4, rng, io::dtype::BF16)),
      T(rt_head, io::dtype::F32, {3, 5}, values(3, 5, rng)),
  };
}

const char* roundtrip_peft_config =
    R"({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
        "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"conv_in": 6},
        "target_modules": ["q_proj", "v_proj", "conv_in", "embed_tokens"], "use_dora": true,
        "lora_bias": true})";

std::vector<std::string> factor_keys(const std::vector<io::tensor>& ts) {
  std::vector<std::string> names;
  for (const auto& t : ts) names.push_back(t.name);
  return names;
}

}  // namespace

TEST_SUITE("io.dialects") {
  // ----------------------------------------------------------------------------------------- PEFT

  TEST_CASE("PEFT linear modules: A is r×in, B is out×r, s = lora_alpha / r") {
    std::mt19937_64 rng(1);
    const rm Aq = values(4, 6, rng), Bq = values(5, 4, rng), Av = values(4, 6, rng), Bv = values(3, 4, rng);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, Aq),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, Bq),
                             T(v0 + ".lora_A.weight", io::dtype::F32, {4, 6}, Av),
                             T(v0 + ".lora_B.weight", io::dtype::F32, {3, 4}, Bv)},
                            {{"format", "pt"}});
    const auto cfg = config(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})");
    const auto a = io::read_peft<float>(file.view(), &cfg);
    CHECK(a.format == io::adapter_format::peft);
    REQUIRE(a.modules.size() == 2);
    CHECK(a.warnings.empty());
    CHECK(a.passthrough.empty());
    CHECK(a.config == cfg);
    CHECK(metadata_value(a.metadata, "format") == "pt");
    const auto* q = a.find(q0);
    const auto* v = a.find(v0);
    REQUIRE(q != nullptr);
    REQUIRE(v != nullptr);
    CHECK(q->kind == io::module_kind::linear);
    CHECK_FALSE(q->transposed);
    CHECK(q->rows() == 5);  // d = out_features
    CHECK(q->cols() == 6);  // k = in_features
    CHECK(q->rank() == 4);
    CHECK(max_relative_error(q->A, Aq) == 0);
    CHECK(max_relative_error(q->B, Bq) == 0);
    CHECK(max_relative_error(v->A, Av) == 0);
    CHECK(max_relative_error(v->B, Bv) == 0);
    CHECK(q->A_shape == shape_t{4, 6});
    CHECK(q->B_shape == shape_t{5, 4});
    CHECK(q->A_dtype == io::dtype::F32);
    CHECK(q->B_dtype == io::dtype::F32);
    CHECK(q->scale == 2.0);  // 8 / 4, exact in binary
    CHECK(v->scale == 2.0);
    // read_adapter detects the dialect and gives the same.
    const auto b = io::read_adapter<float>(file.view(), &cfg);
    check_same_adapter(a, b);
  }

  TEST_CASE("PEFT module order is the header's order, pairing is by name") {
    std::mt19937_64 rng(2);
    SUBCASE("two dtypes: the writer puts F64 before F32, so the header is not alphabetical") {
      const std::string z = wrap + "z_proj", b = wrap + "b_proj";
      const rm Az = values(2, 3, rng, io::dtype::F64), Bz = values(4, 2, rng, io::dtype::F64);
      const rm Ab = values(3, 3, rng), Bb = values(4, 3, rng);
      const auto file = image({T(b + ".lora_A.weight", io::dtype::F32, {3, 3}, Ab),
                               T(b + ".lora_B.weight", io::dtype::F32, {4, 3}, Bb),
                               T(z + ".lora_A.weight", io::dtype::F64, {2, 3}, Az),
                               T(z + ".lora_B.weight", io::dtype::F64, {4, 2}, Bz)});
      REQUIRE(file->tensors().front().name.rfind(z, 0) == 0);  // the precondition of this test
      const auto a = io::read_peft<double>(file.view());
      CHECK(module_names(a) == std::vector<std::string>{z, b});
      CHECK(max_relative_error(a.modules[0].A, Az) == 0);
      CHECK(max_relative_error(a.modules[0].B, Bz) == 0);
      CHECK(max_relative_error(a.modules[1].A, Ab) == 0);
      CHECK(a.modules[0].A_dtype == io::dtype::F64);
      CHECK(a.modules[1].A_dtype == io::dtype::F32);
    }
    SUBCASE("hand-built header: B before A, modules interleaved, ranks 1, 2, 3") {
      const std::string a1 = wrap + "a", b2 = wrap + "b", c3 = wrap + "c";
      const rm A1 = values(1, 4, rng), B1 = values(2, 1, rng);
      const rm A2 = values(2, 4, rng), B2 = values(2, 2, rng);
      const rm A3 = values(3, 4, rng), B3 = values(2, 3, rng);
      const auto file = hand_image({T(c3 + ".lora_B.weight", io::dtype::F32, {2, 3}, B3),
                                    T(a1 + ".lora_A.weight", io::dtype::F32, {1, 4}, A1),
                                    T(b2 + ".lora_A.weight", io::dtype::F32, {2, 4}, A2),
                                    T(a1 + ".lora_B.weight", io::dtype::F32, {2, 1}, B1),
                                    T(c3 + ".lora_A.weight", io::dtype::F32, {3, 4}, A3),
                                    T(b2 + ".lora_B.weight", io::dtype::F32, {2, 2}, B2)});
      const auto a = io::read_peft<float>(file.view());
      CHECK(module_names(a) == std::vector<std::string>{c3, a1, b2});
      REQUIRE(a.modules.size() == 3);
      CHECK(max_relative_error(a.modules[0].A, A3) == 0);
      CHECK(max_relative_error(a.modules[0].B, B3) == 0);
      CHECK(max_relative_error(a.modules[1].A, A1) == 0);
      CHECK(max_relative_error(a.modules[1].B, B1) == 0);
      CHECK(max_relative_error(a.modules[2].A, A2) == 0);
      CHECK(max_relative_error(a.modules[2].B, B2) == 0);
    }
  }

  TEST_CASE("PEFT use_rslora: s = lora_alpha / sqrt(r)") {
    std::mt19937_64 rng(3);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {3, 4}, values(3, 4, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {2, 3}, values(2, 3, rng))});
    const auto rs = config(R"({"r": 3, "lora_alpha": 8, "use_rslora": true})");
    const auto plain = config(R"({"r": 3, "lora_alpha": 8, "use_rslora": false})");
    // The same two IEEE operations as the rule's definition, so equal to rounding of one division.
    CHECK(io::read_peft<float>(file.view(), &rs).modules[0].scale ==
          doctest::Approx(8.0 / std::sqrt(3.0)).epsilon(1e-15));
    CHECK(io::read_peft<float>(file.view(), &plain).modules[0].scale ==
          doctest::Approx(8.0 / 3.0).epsilon(1e-15));
  }

  TEST_CASE("PEFT rank_pattern / alpha_pattern: (.*\\.)?(K)$ on the model's module name, first key wins") {
    // Defaults r = 4, lora_alpha = 8; q1 has rank 2, so every config needs the rank_pattern entry
    // for layer 1; that it does not also hit layer 0 (rank 4) is checked by every read succeeding.
    const std::string base = R"("r": 4, "lora_alpha": 8, "rank_pattern": {"layers.1.self_attn.q_proj": 2})";
    SUBCASE("a dotted full path matches only that layer") {
      auto s = pattern_scales("{" + base + "}");
      CHECK(s[q0] == 2.0);  // 8/4
      CHECK(s[q1] == 4.0);  // 8/2: r from rank_pattern, α default
      CHECK(s[v0] == 2.0);
      CHECK(s[p0] == 2.0);
    }
    SUBCASE("a bare name matches it in every layer") {
      auto s = pattern_scales("{" + base + R"(, "alpha_pattern": {"q_proj": 16}})");
      CHECK(s[q0] == 4.0);  // 16/4
      CHECK(s[q1] == 8.0);  // 16/2
      CHECK(s[v0] == 2.0);
      CHECK(s[p0] == 2.0);
      // And a rank_pattern "q_proj": 2 reaches layer 0 too, whose tensors have rank 4: an error
      // naming that module and the pattern.
      const auto e = catch_error([] { pattern_scales(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"q_proj": 2}})"); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has("\"" + q0 + "\""));
      CHECK(e.has("rank_pattern \"q_proj\""));
    }
    SUBCASE("the first matching key in the config's order wins") {
      auto s = pattern_scales("{" + base + R"(, "alpha_pattern": {"layers.1.self_attn.q_proj": 6, "q_proj": 16}})");
      CHECK(s[q1] == 3.0);  // 6/2: the first key
      CHECK(s[q0] == 4.0);  // 16/4: only the second key matches layer 0
      auto t = pattern_scales("{" + base + R"(, "alpha_pattern": {"q_proj": 16, "layers.1.self_attn.q_proj": 6}})");
      CHECK(t[q1] == 8.0);  // 16/2: now "q_proj" comes first
      CHECK(t[q0] == 4.0);
    }
    SUBCASE("a key that is not a dotted suffix does not match: \"proj\" is not \"q_proj\"") {
      auto s = pattern_scales("{" + base + R"(, "alpha_pattern": {"proj": 100, "self_attn": 50, "_proj": 70}})");
      CHECK(s[p0] == 25.0);  // "mlp.proj" ends in ".proj": 100/4
      CHECK(s[q0] == 2.0);   // untouched by "proj", "_proj" and "self_attn"
      CHECK(s[q1] == 4.0);
      CHECK(s[v0] == 2.0);
    }
    SUBCASE("keys are regular expressions, wrapped as a group") {
      auto s = pattern_scales("{" + base + R"(, "alpha_pattern": {"layers\\.[01]\\.self_attn\\.(q|v)_proj": 20}})");
      CHECK(s[q0] == 5.0);   // 20/4
      CHECK(s[q1] == 10.0);  // 20/2
      CHECK(s[v0] == 5.0);
      CHECK(s[p0] == 2.0);
      auto t = pattern_scales("{" + base + R"(, "alpha_pattern": {"v_proj|mlp.proj": 12}})");
      CHECK(t[v0] == 3.0);
      CHECK(t[p0] == 3.0);
      CHECK(t[q0] == 2.0);
    }
    SUBCASE("names are matched without PEFT's base_model.model. wrapper") {
      auto s = pattern_scales("{" + base + R"(, "alpha_pattern": {"model.layers.0.self_attn.v_proj": 12}})");
      CHECK(s[v0] == 3.0);
      auto t = pattern_scales("{" + base + R"(, "alpha_pattern": {"base_model.model.model.layers.0.self_attn.v_proj": 12}})");
      CHECK(t[v0] == 2.0);
    }
    SUBCASE("pattern_set::find agrees with the rule spelled out with std::regex") {
      const std::vector<std::string> keys = {"q_proj", "proj", "_proj", "self_attn", "layers.1.self_attn.q_proj",
                                             "layers\\.\\d+\\.mlp\\.proj", "model.layers.0.self_attn.v_proj", ".*"};
      for (const auto& module : {q0, q1, v0, p0})
        for (const auto& key : keys) {
          CAPTURE(module);
          CAPTURE(key);
          const std::string name = io::detail::peft_model_name(module);
          const bool lola_match = io::pattern_set({key}, "cfg").find(name) != io::pattern_set::npos;
          CHECK(lola_match == peft_rule(key, name));
        }
    }
  }

  TEST_CASE("wrong variants of the pattern rule would fail the pattern tests") {
    // Each check here computes what a plausible but wrong rule gives and shows it differs from
    // what lola gives, so the assertions of the test above can fail.
    const std::string q0_model = io::detail::peft_model_name(q0);
    const std::string p0_model = io::detail::peft_model_name(p0);
    // Substring matching: "proj" would hit q_proj, giving it 100/4 = 25 instead of 2.
    REQUIRE(substring_rule("proj", q0_model));
    CHECK(io::pattern_set({"proj"}, "cfg").find(q0_model) == io::pattern_set::npos);
    auto s = pattern_scales(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"layers.1.self_attn.q_proj": 2},
                                "alpha_pattern": {"proj": 100}})");
    const double substring_scale = (substring_rule("proj", q0_model) ? 100.0 : 8.0) / 4.0;
    CHECK(substring_scale == 25.0);
    CHECK(s[q0] != substring_scale);
    CHECK(s[p0] == 25.0);  // both rules agree on the true dotted suffix
    CHECK(substring_rule("proj", p0_model));
    // Substring matching would also take "self_attn" for q_proj.
    REQUIRE(substring_rule("self_attn", q0_model));
    CHECK(io::pattern_set({"self_attn"}, "cfg").find(q0_model) == io::pattern_set::npos);
    // Last match wins instead of first: layer 1 q_proj with {"layers.1.self_attn.q_proj": 6, "q_proj": 16}
    // would get 16/2 = 8, lola gives 6/2 = 3.
    auto t = pattern_scales(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"layers.1.self_attn.q_proj": 2},
                                "alpha_pattern": {"layers.1.self_attn.q_proj": 6, "q_proj": 16}})");
    const double last_match_scale = 16.0 / 2.0;
    CHECK(t[q1] != last_match_scale);
    // Matching against the file key (with base_model.model.) instead of the model's name: the key
    // "base_model.model.model.layers.0.self_attn.v_proj" would match v0 and give 12/4 = 3.
    REQUIRE(peft_rule("base_model.model.model.layers.0.self_attn.v_proj", v0));
    auto u = pattern_scales(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"layers.1.self_attn.q_proj": 2},
                                "alpha_pattern": {"base_model.model.model.layers.0.self_attn.v_proj": 12}})");
    CHECK(u[v0] != 3.0);
  }

  TEST_CASE("PEFT config errors: rank disagreement, invalid regex, peft_type") {
    std::mt19937_64 rng(4);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
    SUBCASE("config r differs from the tensors' rank") {
      const auto cfg = config(R"({"r": 8, "lora_alpha": 16})");
      const auto e = catch_error([&] { io::read_peft<float>(file.view(), &cfg); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has("\"" + q0 + "\""));
      CHECK(e.has("rank 4"));
      CHECK(e.has("r = 8"));
    }
    SUBCASE("a pattern that is not a valid regular expression") {
      const auto cfg = config(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"q_proj(": 4}})");
      const auto e = catch_error([&] { io::read_peft<float>(file.view(), &cfg, "my/adapter_config.json"); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has("q_proj("));
      CHECK(e.has("my/adapter_config.json"));
      const auto cfg2 = config(R"({"r": 4, "lora_alpha": 8, "alpha_pattern": {"[q": 4}})");
      const auto e2 = catch_error([&] { io::read_peft<float>(file.view(), &cfg2); });
      REQUIRE(e2.thrown);
      CHECK(e2.code == "invalid_file");
      CHECK(e2.has("[q"));
    }
    SUBCASE("peft_type LOHA is not a LoRA") {
      const auto cfg = config(R"({"peft_type": "LOHA", "r": 4, "alpha": 8})");
      const auto e = catch_error([&] { io::read_peft<float>(file.view(), &cfg); });
      REQUIRE(e.thrown);
      CHECK(e.code == "unsupported");
      CHECK(e.has("LOHA"));
      const auto e2 = catch_error([&] { io::read_adapter<float>(file.view(), &cfg); });
      CHECK(e2.code == "unsupported");
    }
  }

  TEST_CASE("PEFT conv, embedding and fan_in_fan_out modules") {
    std::mt19937_64 rng(5);
    const std::string lin = wrap + "transformer.h.0.attn.c_attn";
    const std::string conv = wrap + "down.0.conv";
    const std::string conv1d = wrap + "audio.conv1";
    const std::string emb = wrap + "wte";
    const rm Al = values(2, 6, rng), Bl = values(9, 2, rng);
    // conv A is r × in × kh × kw = 3 × 2 × 3 × 3, B is out × r × 1 × 1 = 4 × 3 × 1 × 1.
    const rm Ac = values(3, 18, rng), Bc = values(4, 3, rng);
    const rm Ac1 = values(2, 15, rng), Bc1 = values(6, 2, rng);  // conv1d: 2 × 5 × 3 and 6 × 2 × 1
    const rm Ae = values(2, 7, rng), Be = values(5, 2, rng);     // r × num_embeddings, dim × r
    const auto file = image({T(lin + ".lora_A.weight", io::dtype::F32, {2, 6}, Al),
                             T(lin + ".lora_B.weight", io::dtype::F32, {9, 2}, Bl),
                             T(conv + ".lora_A.weight", io::dtype::F32, {3, 2, 3, 3}, Ac),
                             T(conv + ".lora_B.weight", io::dtype::F32, {4, 3, 1, 1}, Bc),
                             T(conv1d + ".lora_A.weight", io::dtype::F32, {2, 5, 3}, Ac1),
                             T(conv1d + ".lora_B.weight", io::dtype::F32, {6, 2, 1}, Bc1),
                             T(emb + ".lora_embedding_A", io::dtype::F32, {2, 7}, Ae),
                             T(emb + ".lora_embedding_B", io::dtype::F32, {5, 2}, Be)});
    const auto cfg = config(R"({"r": 2, "lora_alpha": 2, "rank_pattern": {"conv": 3}, "alpha_pattern": {"conv": 6},
                                "fan_in_fan_out": true})");
    const auto a = io::read_peft<float>(file.view(), &cfg);
    REQUIRE(a.modules.size() == 4);
    const auto* l = a.find(lin);
    const auto* c = a.find(conv);
    const auto* c1 = a.find(conv1d);
    const auto* e = a.find(emb);
    REQUIRE((l && c && c1 && e));

    CHECK(l->kind == io::module_kind::linear);
    CHECK(l->transposed);  // fan_in_fan_out: ΔW is applied transposed (GPT-2 Conv1D)
    CHECK(max_relative_error(l->A, Al) == 0);
    CHECK(max_relative_error(l->B, Bl) == 0);

    CHECK(c->kind == io::module_kind::conv);
    CHECK_FALSE(c->transposed);  // fan_in_fan_out concerns linear layers only
    CHECK(c->A.rows() == 3);
    CHECK(c->A.cols() == 18);  // in · kh · kw
    CHECK(c->B.rows() == 4);
    CHECK(c->B.cols() == 3);
    // The flattening is the row-major reshape: A(i, (ci·3 + y)·3 + x) is kernel element [i, ci, y, x].
    CHECK(max_relative_error(c->A, Ac) == 0);
    CHECK(max_relative_error(c->B, Bc) == 0);
    CHECK(c->A_shape == shape_t{3, 2, 3, 3});
    CHECK(c->B_shape == shape_t{4, 3, 1, 1});
    CHECK(c->A_file_shape() == shape_t{3, 2, 3, 3});
    CHECK(c->B_file_shape() == shape_t{4, 3, 1, 1});
    CHECK(c->scale == 2.0);  // 6/3 from both patterns

    CHECK(c1->kind == io::module_kind::conv);
    CHECK(c1->A.cols() == 15);
    CHECK(max_relative_error(c1->A, Ac1) == 0);
    CHECK(max_relative_error(c1->B, Bc1) == 0);

    CHECK(e->kind == io::module_kind::embedding);
    CHECK(e->transposed);
    CHECK(e->rows() == 5);  // embedding dim
    CHECK(e->cols() == 7);  // num_embeddings
    CHECK(max_relative_error(e->A, Ae) == 0);
    CHECK(max_relative_error(e->B, Be) == 0);
    CHECK(e->scale == 1.0);

    // Without fan_in_fan_out the linear module is not transposed.
    const auto cfg2 = config(R"({"r": 2, "lora_alpha": 2, "rank_pattern": {"conv": 3}})");
    CHECK_FALSE(io::read_peft<float>(file.view(), &cfg2).find(lin)->transposed);
    // The writer gives the embedding keys back (no ".weight").
    const auto names = factor_keys(io::peft_tensors(a));
    CHECK(std::count(names.begin(), names.end(), emb + ".lora_embedding_A") == 1);
    CHECK(std::count(names.begin(), names.end(), emb + ".lora_embedding_B") == 1);
  }

  TEST_CASE("PEFT DoRA magnitude and lora_B.bias are module extras, written back") {
    std::mt19937_64 rng(6);
    const auto mag = T(q0 + ".lora_magnitude_vector", io::dtype::F32, {5}, values(5, 1, rng));
    const auto bias = T(q0 + ".lora_B.bias", io::dtype::F32, {5}, values(5, 1, rng));
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)), mag, bias});
    const auto a = io::read_peft<float>(file.view());
    REQUIRE(a.modules.size() == 1);
    CHECK(a.passthrough.empty());
    const auto& extras = a.modules[0].extras;
    REQUIRE(extras.size() == 2);
    REQUIRE(find_tensor(extras, mag.name) != nullptr);
    REQUIRE(find_tensor(extras, bias.name) != nullptr);
    CHECK(same_tensor(*find_tensor(extras, mag.name), mag));
    CHECK(same_tensor(*find_tensor(extras, bias.name), bias));
    const auto written = io::peft_tensors(a);
    REQUIRE(find_tensor(written, mag.name) != nullptr);
    REQUIRE(find_tensor(written, bias.name) != nullptr);
    CHECK(same_tensor(*find_tensor(written, mag.name), mag));
    CHECK(same_tensor(*find_tensor(written, bias.name), bias));
  }

  TEST_CASE("PEFT keys that are not LoRA factors are passthrough, named in a warning") {
    std::mt19937_64 rng(7);
    const auto head = T(wrap + "lm_head.weight", io::dtype::F32, {3, 5}, values(3, 5, rng));
    const auto score = T(wrap + "score.weight", io::dtype::BF16, {2, 5}, values(2, 5, rng, io::dtype::BF16));
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)), head, score});
    const auto cfg = config(R"({"r": 4, "lora_alpha": 4, "modules_to_save": ["lm_head", "score"]})");
    const auto a = io::read_peft<float>(file.view(), &cfg);
    REQUIRE(a.modules.size() == 1);
    REQUIRE(a.passthrough.size() == 2);
    CHECK(same_tensors_by_name(a.passthrough, {head, score}));
    CHECK(any_has(a.warnings, head.name));
    CHECK(any_has(a.warnings, score.name));
    // And they are written back.
    const auto written = io::peft_tensors(a);
    REQUIRE(find_tensor(written, head.name) != nullptr);
    CHECK(same_tensor(*find_tensor(written, head.name), head));
  }

  TEST_CASE("PEFT malformed modules are errors naming the module or tensor") {
    std::mt19937_64 rng(8);
    SUBCASE("lora_A without lora_B") {
      const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                               T(v0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                               T(v0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
      const auto e = catch_error([&] { io::read_peft<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has("\"" + q0 + "\""));
      CHECK(e.has("lora_B"));
    }
    SUBCASE("lora_B without lora_A") {
      const auto file = image({T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
      const auto e = catch_error([&] { io::read_adapter<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has("\"" + q0 + "\""));
      CHECK(e.has("lora_A"));
    }
    SUBCASE("A and B ranks differ") {
      const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                               T(q0 + ".lora_B.weight", io::dtype::F32, {5, 3}, values(5, 3, rng))});
      const auto e = catch_error([&] { io::read_peft<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "shape_mismatch");
      CHECK(e.has("\"" + q0 + "\""));
      CHECK(e.has("[4, 6]"));
      CHECK(e.has("[5, 3]"));
    }
    SUBCASE("conv B with a trailing size other than 1") {
      const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {2, 3, 3, 3}, values(2, 27, rng)),
                               T(q0 + ".lora_B.weight", io::dtype::F32, {4, 2, 3, 3}, values(4, 18, rng))});
      const auto e = catch_error([&] { io::read_peft<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "shape_mismatch");
      CHECK(e.has("\"" + q0 + "\""));
      CHECK(e.has("[4, 2, 3, 3]"));
    }
    SUBCASE("conv A with a 2-D B") {
      const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {2, 3, 3, 3}, values(2, 27, rng)),
                               T(q0 + ".lora_B.weight", io::dtype::F32, {4, 2}, values(4, 2, rng))});
      const auto e = catch_error([&] { io::read_peft<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "shape_mismatch");
    }
    SUBCASE("an integer factor") {
      io::tensor a{q0 + ".lora_A.weight", io::dtype::I32, {4, 6}, std::vector<std::byte>(4 * 6 * 4)};
      const auto file = image({a, T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
      const auto e = catch_error([&] { io::read_peft<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "unsupported");
      CHECK(e.has(q0 + ".lora_A.weight"));
      CHECK(e.has("I32"));
    }
  }

  TEST_CASE_TEMPLATE("PEFT F16 and BF16 factors, within the dtype's rounding", S, float, double) {
    std::mt19937_64 rng(9);
    const rm A = values(4, 6, rng, io::dtype::F16), B = values(5, 4, rng, io::dtype::BF16);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F16, {4, 6}, A),
                             T(q0 + ".lora_B.weight", io::dtype::BF16, {5, 4}, B)});
    const auto a = io::read_peft<S>(file.view());
    REQUIRE(a.modules.size() == 1);
    const auto& m = a.modules[0];
    CHECK(m.A_dtype == io::dtype::F16);
    CHECK(m.B_dtype == io::dtype::BF16);
    // F16 and BF16 widen exactly to float and double, so the only error is the rounding on write.
    CHECK(max_relative_error(m.A, A) <= unit_roundoff(io::dtype::F16));
    CHECK(max_relative_error(m.B, B) <= unit_roundoff(io::dtype::BF16));
    // The bound is not vacuous: BF16 rounding does move these values.
    CHECK(max_relative_error(m.B, B) > 0);
  }

  TEST_CASE("PEFT without a config: s = 1 and a warning") {
    std::mt19937_64 rng(10);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
    const auto a = io::read_peft<float>(file.view());
    CHECK(a.modules[0].scale == 1.0);
    CHECK(a.config.is_null());
    CHECK(any_has(a.warnings, "adapter_config.json"));
    const io::json_value null;
    CHECK(io::read_peft<float>(file.view(), &null).modules[0].scale == 1.0);
  }

  TEST_CASE("load_adapter: PEFT directory, file with a config beside it, bin-only directory") {
    temp_dir tmp;
    std::mt19937_64 rng(12);
    const rm A = values(4, 6, rng), B = values(5, 4, rng);
    const std::vector<io::tensor> ts = {T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, A),
                                        T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, B)};
    const std::string cfg_text = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 12})";
    SUBCASE("directory") {
      std::filesystem::create_directory(tmp / "adapter");
      io::write_safetensors(tmp / "adapter/adapter_model.safetensors", ts, {{"format", "pt"}});
      io::write_file_atomic(tmp / "adapter/adapter_config.json", cfg_text);
      const auto a = io::load_adapter<float>(tmp / "adapter");
      REQUIRE(a.modules.size() == 1);
      CHECK(a.modules[0].scale == 3.0);  // 12/4
      CHECK(max_relative_error(a.modules[0].A, A) == 0);
      CHECK(max_relative_error(a.modules[0].B, B) == 0);
      CHECK(a.config == config(cfg_text));
      CHECK(a.warnings.empty());
      // A trailing slash names the same directory.
      CHECK(io::load_adapter<float>(tmp.path + "/adapter/").modules[0].scale == 3.0);
    }
    SUBCASE("a file with adapter_config.json beside it") {
      io::write_safetensors(tmp / "custom_name.safetensors", ts);
      io::write_file_atomic(tmp / "adapter_config.json", cfg_text);
      const auto a = io::load_adapter<float>(tmp / "custom_name.safetensors");
      CHECK(a.modules[0].scale == 3.0);
      CHECK(a.config == config(cfg_text));
    }
    SUBCASE("a file alone") {
      io::write_safetensors(tmp / "alone.safetensors", ts);
      const auto a = io::load_adapter<float>(tmp / "alone.safetensors");
      CHECK(a.modules[0].scale == 1.0);
      CHECK(any_has(a.warnings, "adapter_config.json"));
    }
    SUBCASE("a config beside a file that contradicts it is an error naming the config") {
      io::write_safetensors(tmp / "w.safetensors", ts);
      io::write_file_atomic(tmp / "adapter_config.json", R"({"r": 16, "lora_alpha": 16})");
      const auto e = catch_error([&] { io::load_adapter<float>(tmp / "w.safetensors"); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has(tmp / "adapter_config.json"));
    }
    SUBCASE("a directory with only adapter_model.bin") {
      std::filesystem::create_directory(tmp / "old");
      io::write_file_atomic(tmp / "old/adapter_model.bin", std::string("\x80\x02pickle", 8));
      io::write_file_atomic(tmp / "old/adapter_config.json", cfg_text);
      const auto e = catch_error([&] { io::load_adapter<float>(tmp / "old"); });
      REQUIRE(e.thrown);
      CHECK(e.code == "unsupported");
      CHECK(e.has("pickle"));
      CHECK(e.has(tmp / "old"));
    }
    SUBCASE("an empty directory and a missing path are io errors") {
      std::filesystem::create_directory(tmp / "empty");
      const auto e = catch_error([&] { io::load_adapter<float>(tmp / "empty"); });
      REQUIRE(e.thrown);
      CHECK(e.code == "io");
      const auto e2 = catch_error([&] { io::load_adapter<float>(tmp / "missing.safetensors"); });
      REQUIRE(e2.thrown);
      CHECK(e2.code == "io");
    }
  }

  // ---------------------------------------------------------------------------------------- kohya

  TEST_CASE("kohya lora_down / lora_up / alpha, alpha 0-dim in F16, BF16, F32, F64") {
    std::mt19937_64 rng(13);
    const std::string m = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    for (io::dtype t : {io::dtype::F16, io::dtype::BF16, io::dtype::F32, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      const rm down = values(4, 6, rng, t), up = values(5, 4, rng, t);
      const auto file = image({T(m + ".lora_down.weight", t, {4, 6}, down), T(m + ".lora_up.weight", t, {5, 4}, up),
                               scalar(m + ".alpha", t, 3.0)},
                              {{"ss_network_dim", "4"}, {"ss_network_alpha", "3"}});
      const auto a = io::read_kohya<double>(file.view());
      CHECK(a.format == io::adapter_format::kohya);
      REQUIRE(a.modules.size() == 1);
      const auto& mod = a.modules[0];
      CHECK(mod.name == m);
      CHECK(mod.kind == io::module_kind::linear);
      CHECK_FALSE(mod.transposed);
      CHECK(mod.scale == 0.75);  // 3/4; 3 is exact in every dtype here
      CHECK(max_relative_error(mod.A, down) <= unit_roundoff(t));
      CHECK(max_relative_error(mod.B, up) <= unit_roundoff(t));
      CHECK(mod.A_dtype == t);
      CHECK(a.passthrough.empty());
      CHECK(a.warnings.empty());
      CHECK(metadata_value(a.metadata, "ss_network_dim") == "4");
      check_same_adapter(a, io::read_adapter<double>(file.view()));
    }
    // A one-element alpha of shape [1] is read too.
    const auto file = image({T(m + ".lora_down.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(m + ".lora_up.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)),
                             scalar(m + ".alpha", io::dtype::F32, 2.0, {1})});
    CHECK(io::read_kohya<float>(file.view()).modules[0].scale == 0.5);
  }

  TEST_CASE("kohya alpha: missing or 0 means s = 1, NaN and inf are errors") {
    std::mt19937_64 rng(14);
    const std::string m = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    auto with_alpha = [&](std::vector<io::tensor> extra) {
      std::vector<io::tensor> ts = {T(m + ".lora_down.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                                    T(m + ".lora_up.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))};
      ts.insert(ts.end(), extra.begin(), extra.end());
      return image(ts);
    };
    CHECK(io::read_kohya<float>(with_alpha({}).view()).modules[0].scale == 1.0);
    CHECK(io::read_kohya<float>(with_alpha({scalar(m + ".alpha", io::dtype::F16, 0.0)}).view()).modules[0].scale == 1.0);
    CHECK(io::read_kohya<float>(with_alpha({scalar(m + ".alpha", io::dtype::F32, 8.0)}).view()).modules[0].scale == 2.0);
    for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
      const auto file = with_alpha({scalar(m + ".alpha", io::dtype::F32, bad)});
      const auto e = catch_error([&] { io::read_kohya<float>(file.view()); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_file");
      CHECK(e.has("\"" + m + "\""));
      CHECK(e.has("alpha"));
    }
  }

  TEST_CASE("kohya conv: down r×in×kh×kw, up out×r×1×1, flattened") {
    std::mt19937_64 rng(15);
    const std::string m = "lora_unet_down_blocks_0_resnets_0_conv1";
    const rm down = values(2, 27, rng), up = values(4, 2, rng);
    const auto file = image({T(m + ".lora_down.weight", io::dtype::F32, {2, 3, 3, 3}, down),
                             T(m + ".lora_up.weight", io::dtype::F32, {4, 2, 1, 1}, up),
                             scalar(m + ".alpha", io::dtype::F32, 1.0)});
    const auto a = io::read_kohya<float>(file.view());
    REQUIRE(a.modules.size() == 1);
    CHECK(a.modules[0].kind == io::module_kind::conv);
    CHECK(a.modules[0].A.rows() == 2);
    CHECK(a.modules[0].A.cols() == 27);
    CHECK(max_relative_error(a.modules[0].A, down) == 0);
    CHECK(max_relative_error(a.modules[0].B, up) == 0);
    CHECK(a.modules[0].A_shape == shape_t{2, 3, 3, 3});
    CHECK(a.modules[0].B_shape == shape_t{4, 2, 1, 1});
    CHECK(a.modules[0].scale == 0.5);
  }

  TEST_CASE("kohya: LoHa and lora_mid modules are kept whole as passthrough, plain modules load") {
    std::mt19937_64 rng(16);
    const std::string plain = "lora_unet_mid_block_attentions_0_proj_in";
    const std::string loha = "lora_unet_up_blocks_1_attentions_0_proj_out";
    const std::string tucker = "lora_unet_down_blocks_1_resnets_0_conv2";
    const std::vector<io::tensor> lycoris = {
        T(loha + ".hada_w1_a", io::dtype::F16, {5, 2}, values(5, 2, rng, io::dtype::F16)),
        T(loha + ".hada_w1_b", io::dtype::F16, {2, 6}, values(2, 6, rng, io::dtype::F16)),
        T(loha + ".hada_w2_a", io::dtype::F16, {5, 2}, values(5, 2, rng, io::dtype::F16)),
        T(loha + ".hada_w2_b", io::dtype::F16, {2, 6}, values(2, 6, rng, io::dtype::F16)),
        scalar(loha + ".alpha", io::dtype::F16, 2.0),
        T(tucker + ".lora_down.weight", io::dtype::F16, {2, 3, 1, 1}, values(2, 3, rng, io::dtype::F16)),
        T(tucker + ".lora_mid.weight", io::dtype::F16, {2, 2, 3, 3}, values(2, 18, rng, io::dtype::F16)),
        T(tucker + ".lora_up.weight", io::dtype::F16, {4, 2, 1, 1}, values(4, 2, rng, io::dtype::F16)),
        scalar(tucker + ".alpha", io::dtype::F16, 1.0),
    };
    std::vector<io::tensor> ts = {T(plain + ".lora_down.weight", io::dtype::F16, {2, 6}, values(2, 6, rng, io::dtype::F16)),
                                  T(plain + ".lora_up.weight", io::dtype::F16, {6, 2}, values(6, 2, rng, io::dtype::F16)),
                                  scalar(plain + ".alpha", io::dtype::F16, 1.0)};
    ts.insert(ts.end(), lycoris.begin(), lycoris.end());
    const auto file = image(ts);
    const auto a = io::read_adapter<float>(file.view());
    CHECK(a.format == io::adapter_format::kohya);
    CHECK(module_names(a) == std::vector<std::string>{plain});
    CHECK(a.modules[0].scale == 0.5);
    CHECK(same_tensors_by_name(a.passthrough, lycoris));
    CHECK(any_has(a.warnings, "LyCORIS"));
    CHECK(any_has(a.warnings, loha + ".hada_w1_a"));
    CHECK(any_has(a.warnings, tucker + ".lora_down.weight"));
    // Written back whole.
    const auto written = io::kohya_tensors(a);
    for (const auto& t : lycoris) {
      CAPTURE(t.name);
      REQUIRE(find_tensor(written, t.name) != nullptr);
      CHECK(same_tensor(*find_tensor(written, t.name), t));
    }
  }

  TEST_CASE("kohya: a file of only LoHa modules is unsupported") {
    std::mt19937_64 rng(17);
    const std::string loha = "lora_unet_up_blocks_1_attentions_0_proj_out";
    const auto file = image({T(loha + ".hada_w1_a", io::dtype::F32, {5, 2}, values(5, 2, rng)),
                             T(loha + ".hada_w1_b", io::dtype::F32, {2, 6}, values(2, 6, rng)),
                             T(loha + ".hada_w2_a", io::dtype::F32, {5, 2}, values(5, 2, rng)),
                             T(loha + ".hada_w2_b", io::dtype::F32, {2, 6}, values(2, 6, rng)),
                             scalar(loha + ".alpha", io::dtype::F32, 2.0)});
    const auto e = catch_error([&] { io::read_kohya<float>(file.view()); });
    REQUIRE(e.thrown);
    CHECK(e.code == "unsupported");
    CHECK(e.has("LoHa"));
    const auto e2 = catch_error([&] { io::read_adapter<float>(file.view()); });
    REQUIRE(e2.thrown);
    CHECK(e2.code == "unsupported");
  }

  TEST_CASE("kohya dora_scale is a module extra") {
    std::mt19937_64 rng(18);
    const std::string m = "lora_unet_mid_block_attentions_0_proj_in";
    const auto dora = T(m + ".dora_scale", io::dtype::F32, {1, 6}, values(1, 6, rng));
    const auto file = image({T(m + ".lora_down.weight", io::dtype::F32, {2, 6}, values(2, 6, rng)),
                             T(m + ".lora_up.weight", io::dtype::F32, {6, 2}, values(6, 2, rng)),
                             scalar(m + ".alpha", io::dtype::F32, 2.0), dora});
    const auto a = io::read_kohya<float>(file.view());
    REQUIRE(a.modules.size() == 1);
    REQUIRE(a.modules[0].extras.size() == 1);
    CHECK(same_tensor(a.modules[0].extras[0], dora));
    CHECK(a.passthrough.empty());
    const auto written = io::kohya_tensors(a);
    REQUIRE(find_tensor(written, dora.name) != nullptr);
    CHECK(same_tensor(*find_tensor(written, dora.name), dora));
  }

  // ------------------------------------------------------------------------------------ detection

  TEST_CASE("detection: PEFT, kohya, mixed, none") {
    std::mt19937_64 rng(19);
    const auto peft_a = T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng));
    const auto peft_b = T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng));
    const std::string k = "lora_unet_x";
    const auto down = T(k + ".lora_down.weight", io::dtype::F32, {4, 6}, values(4, 6, rng));
    const auto up = T(k + ".lora_up.weight", io::dtype::F32, {5, 4}, values(5, 4, rng));
    CHECK(io::detect_format(image({peft_a, peft_b}).view()) == io::adapter_format::peft);
    CHECK(io::detect_format(image({down, up}).view()) == io::adapter_format::kohya);
    CHECK(io::detect_format(image({T(wrap + "wte.lora_embedding_A", io::dtype::F32, {2, 3}, values(2, 3, rng)),
                                   T(wrap + "wte.lora_embedding_B", io::dtype::F32, {3, 2}, values(3, 2, rng))})
                                .view()) == io::adapter_format::peft);
    const auto mixed = image({peft_a, peft_b, down, up});
    for (const auto& e : {catch_error([&] { io::detect_format(mixed.view()); }),
                          catch_error([&] { io::read_adapter<float>(mixed.view()); })}) {
      REQUIRE(e.thrown);
      CHECK(e.code == "unsupported");
      CHECK(e.has("test.safetensors"));
    }
    const auto none = image({T("model.embed.weight", io::dtype::F32, {2, 3}, values(2, 3, rng))});
    const auto e = catch_error([&] { io::read_adapter<float>(none.view()); });
    REQUIRE(e.thrown);
    CHECK(e.code == "invalid_file");
    // An empty file (no tensors at all) is no adapter either.
    const auto e2 = catch_error([&] { io::read_adapter<float>(image({}).view()); });
    REQUIRE(e2.thrown);
    CHECK(e2.code == "invalid_file");
  }

  // ---------------------------------------------------------------------------------- round trips

  TEST_CASE("PEFT round trip: directory and file, factors bit-exact, extras, passthrough, metadata") {
    temp_dir tmp;
    const auto src = roundtrip_peft_tensors();
    io::write_safetensors(tmp / "src.safetensors", src, {{"note", "hello"}});
    io::write_file_atomic(tmp / "adapter_config.json", roundtrip_peft_config);
    const auto a = io::load_adapter<float>(tmp / "src.safetensors");
    REQUIRE(a.modules.size() == 4);
    CHECK(a.find(rt_q)->scale == 2.0);     // 8/4
    CHECK(a.find(rt_v)->scale == 4.0);     // 8/2
    CHECK(a.find(rt_conv)->scale == 1.5);  // 6/4
    CHECK(a.find(rt_emb)->scale == 2.0);
    CHECK(a.find(rt_q)->extras.size() == 2);
    REQUIRE(a.passthrough.size() == 1);
    const auto original = io::safetensors_file::open(tmp / "src.safetensors");

    auto check_saved = [&](const std::string& weights, const io::adapter<float>& b) {
      check_same_adapter(a, b);
      CHECK(metadata_value(b.metadata, "note") == "hello");
      int formats = 0;
      CHECK(metadata_value(b.metadata, "format", &formats) == "pt");  // added when absent
      CHECK(formats == 1);
      CHECK(b.config == io::peft_config_json(a));
      const auto* targets = b.config.find("target_modules");
      REQUIRE(targets != nullptr);
      CHECK(*targets == *config(roundtrip_peft_config).find("target_modules"));
      // Bit-exact in the same dtype: every tensor of the source has the same bytes in the copy.
      const auto saved = io::safetensors_file::open(weights);
      check_bytes_kept(original.view(), saved.view(), factor_keys(src));
      CHECK(saved->tensors().size() == src.size());
    };
    SUBCASE("as a directory") {
      io::save_adapter(a, tmp / "out", io::save_form::directory);
      CHECK(listing(tmp / "out") == std::set<std::string>{"adapter_config.json", "adapter_model.safetensors"});
      CHECK_FALSE(any_temporary(listing(tmp.path)));
      check_saved(tmp / "out/adapter_model.safetensors", io::load_adapter<float>(tmp / "out"));
      // Saving over an existing directory replaces its files.
      io::save_adapter(a, tmp / "out", io::save_form::directory);
      check_saved(tmp / "out/adapter_model.safetensors", io::load_adapter<float>(tmp / "out"));
      CHECK_FALSE(any_temporary(listing(tmp / "out")));
    }
    SUBCASE("as a file in a new directory: the config is written beside it") {
      std::filesystem::create_directory(tmp / "f");
      io::save_adapter(a, tmp / "f/x.safetensors", io::save_form::file);
      CHECK(listing(tmp / "f") == std::set<std::string>{"adapter_config.json", "x.safetensors"});
      check_saved(tmp / "f/x.safetensors", io::load_adapter<float>(tmp / "f/x.safetensors"));
    }
    SUBCASE("as a file beside its own config: the config is kept untouched") {
      const std::string before = file_text(tmp / "adapter_config.json");
      io::save_adapter(a, tmp / "copy.safetensors", io::save_form::file);
      CHECK(file_text(tmp / "adapter_config.json") == before);
      const auto b = io::load_adapter<float>(tmp / "copy.safetensors");
      check_same_adapter(a, b);
      CHECK(b.config == config(roundtrip_peft_config));
      CHECK_FALSE(any_temporary(listing(tmp.path)));
    }
    SUBCASE("metadata that already has format is kept as it is") {
      auto c = a;
      c.metadata = {{"format", "pt"}, {"x", "y"}};
      io::save_adapter(c, tmp / "dir2", io::save_form::directory);
      const auto b = io::load_adapter<float>(tmp / "dir2");
      CHECK(b.metadata == c.metadata);
    }
  }

  TEST_CASE("a save writes modules in the writer's order (dtype descending, then name)") {
    // The reader keeps the header's order; the writer lays tensors out as the reference does (by
    // dtype, then name), so a file whose header had another order comes back in the writer's order
    // with the same modules.
    temp_dir tmp;
    std::mt19937_64 rng(27);
    const std::string a1 = wrap + "a", b2 = wrap + "b", c3 = wrap + "c";
    const auto file = hand_image({T(c3 + ".lora_B.weight", io::dtype::F32, {2, 3}, values(2, 3, rng)),
                                  T(a1 + ".lora_A.weight", io::dtype::F16, {1, 4}, values(1, 4, rng, io::dtype::F16)),
                                  T(b2 + ".lora_A.weight", io::dtype::F32, {2, 4}, values(2, 4, rng)),
                                  T(a1 + ".lora_B.weight", io::dtype::F16, {2, 1}, values(2, 1, rng, io::dtype::F16)),
                                  T(c3 + ".lora_A.weight", io::dtype::F32, {3, 4}, values(3, 4, rng)),
                                  T(b2 + ".lora_B.weight", io::dtype::F32, {2, 2}, values(2, 2, rng))});
    const auto a = io::read_peft<float>(file.view());
    CHECK(module_names(a) == std::vector<std::string>{c3, a1, b2});
    io::save_adapter(a, tmp / "out", io::save_form::directory);
    const auto b = io::load_adapter<float>(tmp / "out");
    CHECK(module_names(b) == std::vector<std::string>{b2, c3, a1});  // F32 by name, then F16
    check_same_adapter(a, b);
  }

  TEST_CASE("PEFT without a config and scale 1 saves as a lone file") {
    temp_dir tmp;
    std::mt19937_64 rng(20);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
    auto a = io::read_peft<float>(file.view());
    io::save_adapter(a, tmp / "w.safetensors", io::save_form::file);
    CHECK(listing(tmp.path) == std::set<std::string>{"w.safetensors"});
    check_same_adapter(a, io::load_adapter<float>(tmp / "w.safetensors"));
    // A scale other than 1 needs a config, which is written beside the file.
    a.modules[0].scale = 0.5;
    io::save_adapter(a, tmp / "w.safetensors", io::save_form::file);
    CHECK(listing(tmp.path) == std::set<std::string>{"adapter_config.json", "w.safetensors"});
    const auto b = io::load_adapter<float>(tmp / "w.safetensors");
    check_same_adapter(a, b);
    CHECK(b.modules[0].scale == 0.5);
  }

  TEST_CASE("kohya round trip: file, factors bit-exact, alpha, extras, passthrough, metadata") {
    temp_dir tmp;
    std::mt19937_64 rng(22);
    const std::string m1 = "lora_unet_down_blocks_0_attentions_0_proj_in";
    const std::string m2 = "lora_unet_down_blocks_0_resnets_0_conv1";
    const std::string m3 = "lora_te_text_model_encoder_layers_0_mlp_fc1";
    const std::string loha = "lora_unet_up_blocks_1_attentions_0_proj_out";
    const std::vector<io::tensor> src = {
        T(m1 + ".lora_down.weight", io::dtype::F16, {4, 6}, values(4, 6, rng, io::dtype::F16)),
        T(m1 + ".lora_up.weight", io::dtype::F16, {5, 4}, values(5, 4, rng, io::dtype::F16)),
        scalar(m1 + ".alpha", io::dtype::F16, 1.0),
        T(m1 + ".dora_scale", io::dtype::F16, {1, 6}, values(1, 6, rng, io::dtype::F16)),
        T(m2 + ".lora_down.weight", io::dtype::BF16, {2, 3, 3, 3}, values(2, 27, rng, io::dtype::BF16)),
        T(m2 + ".lora_up.weight", io::dtype::BF16, {4, 2, 1, 1}, values(4, 2, rng, io::dtype::BF16)),
        scalar(m2 + ".alpha", io::dtype::BF16, 2.0),
        T(m3 + ".lora_down.weight", io::dtype::F32, {3, 6}, values(3, 6, rng)),
        T(m3 + ".lora_up.weight", io::dtype::F32, {7, 3}, values(7, 3, rng)),  // no alpha: s = 1
        T(loha + ".hada_w1_a", io::dtype::F16, {5, 2}, values(5, 2, rng, io::dtype::F16)),
        T(loha + ".hada_w1_b", io::dtype::F16, {2, 6}, values(2, 6, rng, io::dtype::F16)),
        T(loha + ".hada_w2_a", io::dtype::F16, {5, 2}, values(5, 2, rng, io::dtype::F16)),
        T(loha + ".hada_w2_b", io::dtype::F16, {2, 6}, values(2, 6, rng, io::dtype::F16)),
        T("text_encoder_extra.weight", io::dtype::F32, {2, 2}, values(2, 2, rng)),
    };
    const io::metadata_map meta = {{"ss_network_module", "networks.lora"}, {"ss_network_dim", "4"}};
    io::write_safetensors(tmp / "k.safetensors", src, meta);
    const auto a = io::load_adapter<float>(tmp / "k.safetensors");
    REQUIRE(a.modules.size() == 3);
    CHECK(a.find(m1)->scale == 0.25);
    CHECK(a.find(m2)->scale == 1.0);
    CHECK(a.find(m3)->scale == 1.0);
    CHECK(a.passthrough.size() == 5);
    io::save_adapter(a, tmp / "k2.safetensors", io::save_form::file);
    CHECK(listing(tmp.path) == std::set<std::string>{"k.safetensors", "k2.safetensors"});
    const auto b = io::load_adapter<float>(tmp / "k2.safetensors");
    check_same_adapter(a, b);
    CHECK(b.metadata == meta);  // no "format" added for kohya
    const auto original = io::safetensors_file::open(tmp / "k.safetensors");
    const auto saved = io::safetensors_file::open(tmp / "k2.safetensors");
    std::vector<std::string> kept;
    for (const auto& t : src)
      if (t.name.find(".alpha") == std::string::npos) kept.push_back(t.name);
    check_bytes_kept(original.view(), saved.view(), kept);
    // Alpha is written for every module, m3's as r (s = 1), in the factors' dtype.
    for (const auto& [name, alpha, t] : {std::tuple{m1, 1.0, io::dtype::F16}, std::tuple{m2, 2.0, io::dtype::BF16},
                                         std::tuple{m3, 3.0, io::dtype::F32}}) {
      CAPTURE(name);
      const auto* at = saved->find(name + ".alpha");
      REQUIRE(at != nullptr);
      CHECK(at->shape.empty());
      CHECK(at->dtype == t);
      CHECK(saved->scalar(*at) == alpha);
    }
    // kohya is one file: as a directory it is refused, and nothing is written.
    const auto e = catch_error([&] { io::save_adapter(a, tmp / "kdir", io::save_form::directory); });
    REQUIRE(e.thrown);
    CHECK(e.code == "invalid_argument");
    CHECK(listing(tmp.path) == std::set<std::string>{"k.safetensors", "k2.safetensors"});
  }

  TEST_CASE("after per-module rank changes, the written PEFT config reproduces every rank and scale") {
    temp_dir tmp;
    for (const bool rslora : {false, true}) {
      CAPTURE(rslora);
      const auto src = roundtrip_peft_tensors();
      std::string cfg_text = roundtrip_peft_config;
      if (rslora) cfg_text.insert(1, R"("use_rslora": true, )");
      const auto cfg = config(cfg_text);
      const auto file = image(src);
      auto a = io::read_peft<double>(file.view(), &cfg);
      if (rslora) {
        CHECK(a.find(rt_q)->scale == 4.0);  // 8/√4
        CHECK(a.find(rt_v)->scale == doctest::Approx(8.0 / std::sqrt(2.0)).epsilon(1e-15));
      }
      // Truncate as a resize would, keeping each module's scale: q 4 → 2, conv 4 → 3, embedding
      // 4 → 1, v stays 2. One module also gets a new scale that is not α/r of any integer α.
      std::map<std::string, std::pair<long, double>> want;
      for (auto& m : a.modules) {
        const long r = m.name == rt_q ? 2 : m.name == rt_conv ? 3 : m.name == rt_emb ? 1 : m.rank();
        const double s = m.name == rt_emb ? 0.1 : m.scale;
        m.set_factors(m.B.leftCols(r), m.A.topRows(r), s);
        want[m.name] = {r, s};
      }
      CHECK(a.find(rt_conv)->A_file_shape() == shape_t{3, 2, 3, 3});  // conv stays 4-D
      CHECK(a.find(rt_conv)->B_file_shape() == shape_t{3, 3, 1, 1});
      const auto written = io::peft_config_json(a);
      CHECK(io::peft_config_reproduces(written, a));
      const auto* rp = written.find("rank_pattern");
      REQUIRE(rp != nullptr);
      CHECK(rp->size() >= 2);  // at least two modules differ from the most common rank
      auto check = [&](const io::adapter<double>& b) {
        REQUIRE(b.modules.size() == want.size());
        for (const auto& [name, rs] : want) {
          CAPTURE(name);
          const auto* m = b.find(name);
          REQUIRE(m != nullptr);
          CHECK(m->rank() == rs.first);
          CHECK(relatively_equal(m->scale, rs.second));
          CHECK(m->A == a.find(name)->A);
          CHECK(m->B == a.find(name)->B);
        }
      };
      // Read straight from the written tensors and config...
      const auto again = image(io::peft_tensors(a));
      check(io::read_peft<double>(again.view(), &written));
      // ... and through save / load.
      const std::string dir = tmp / (rslora ? "rs" : "plain");
      io::save_adapter(a, dir, io::save_form::directory);
      check(io::load_adapter<double>(dir));
    }
  }

  TEST_CASE("kohya: after a rank change, alpha is written so alpha / r gives the scale back") {
    temp_dir tmp;
    std::mt19937_64 rng(23);
    const std::string m1 = "lora_unet_a", m2 = "lora_unet_b", m3 = "lora_unet_c";
    const auto file = image({T(m1 + ".lora_down.weight", io::dtype::F16, {4, 6}, values(4, 6, rng, io::dtype::F16)),
                             T(m1 + ".lora_up.weight", io::dtype::F16, {5, 4}, values(5, 4, rng, io::dtype::F16)),
                             scalar(m1 + ".alpha", io::dtype::F16, 2.0),
                             T(m2 + ".lora_down.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(m2 + ".lora_up.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)),
                             T(m3 + ".lora_down.weight", io::dtype::F32, {10, 6}, values(10, 6, rng)),
                             T(m3 + ".lora_up.weight", io::dtype::F32, {5, 10}, values(5, 10, rng)),
                             scalar(m3 + ".alpha", io::dtype::F32, 1.0)});
    auto a = io::read_kohya<double>(file.view());
    REQUIRE(a.modules.size() == 3);
    // m1: s = 2/4 = 0.5 → rank 3, α = 1.5 (exact in F16).  m2: s = 1 → rank 3, α = 3.
    // m3: s = 1/10 = 0.1 → rank 3, α = 0.3 (in no binary format exactly).
    std::map<std::string, std::pair<long, double>> want;
    for (auto& m : a.modules) {
      m.set_factors(m.B.leftCols(3), m.A.topRows(3), m.scale);
      want[m.name] = {3, m.scale};
    }
    CHECK(want[m3].second == 0.1);
    io::save_adapter(a, tmp / "resized.safetensors", io::save_form::file);
    const auto b = io::load_adapter<double>(tmp / "resized.safetensors");
    for (const auto& [name, rs] : want) {
      CAPTURE(name);
      const auto* m = b.find(name);
      REQUIRE(m != nullptr);
      CHECK(m->rank() == rs.first);
      // The round trip promises 1e-12 relative. For m3 this needs α stored in F64: α = 0.3 in F32
      // gives α/r = 0.10000000397 (4e-8 off). See the report: kohya_tensors falls back to F32.
      CHECK(relatively_equal(m->scale, rs.second));
    }
  }

  TEST_CASE("saving a PEFT file beside an existing adapter_config.json") {
    temp_dir tmp;
    const auto src = roundtrip_peft_tensors();
    const auto cfg = config(roundtrip_peft_config);
    const auto file = image(src);
    const auto a = io::read_peft<float>(file.view(), &cfg);
    SUBCASE("a config that gives other ranks or scales: io error, config untouched, nothing written") {
      for (const char* other : {R"({"r": 8, "lora_alpha": 8})",
                                R"({"r": 4, "lora_alpha": 16, "rank_pattern": {"v_proj": 2}})"}) {
        CAPTURE(other);
        io::write_file_atomic(tmp / "adapter_config.json", other);
        const auto e = catch_error([&] { io::save_adapter(a, tmp / "x.safetensors", io::save_form::file); });
        REQUIRE(e.thrown);
        CHECK(e.code == "io");
        CHECK(e.has(tmp / "adapter_config.json"));
        CHECK(file_text(tmp / "adapter_config.json") == other);
        CHECK(listing(tmp.path) == std::set<std::string>{"adapter_config.json"});
      }
    }
    SUBCASE("a config that reproduces every rank and scale: accepted, config untouched") {
      // Different text, same rule results: α/r = 2 everywhere except v (8/2) and conv (6/4).
      const std::string same = R"({"lora_alpha": 8, "r": 4, "alpha_pattern": {"unet\\.conv_in": 6},
                                   "rank_pattern": {"model\\.layers\\.0\\.self_attn\\.v_proj": 2}, "comment": "kept"})";
      io::write_file_atomic(tmp / "adapter_config.json", same);
      io::save_adapter(a, tmp / "x.safetensors", io::save_form::file);
      CHECK(file_text(tmp / "adapter_config.json") == same);
      CHECK(listing(tmp.path) == std::set<std::string>{"adapter_config.json", "x.safetensors"});
      const auto b = io::load_adapter<float>(tmp / "x.safetensors");
      check_same_adapter(a, b);
    }
  }

  TEST_CASE("a failed save leaves no temporary files") {
    temp_dir tmp;
    const auto src = roundtrip_peft_tensors();
    const auto cfg = config(roundtrip_peft_config);
    const auto file = image(src);
    auto a = io::read_peft<float>(file.view(), &cfg);
    // Two tensors of the same name: the writer refuses them (invalid_argument) after the
    // directory save has started.
    auto dup = a;
    dup.passthrough.push_back(dup.modules[0].extras.at(0));
    SUBCASE("a new directory") {
      const auto e = catch_error([&] { io::save_adapter(dup, tmp / "out", io::save_form::directory); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_argument");
      CHECK(listing(tmp.path).empty());
    }
    SUBCASE("an existing directory keeps its files") {
      io::save_adapter(a, tmp / "out", io::save_form::directory);
      const std::string config_before = file_text(tmp / "out/adapter_config.json");
      const auto e = catch_error([&] { io::save_adapter(dup, tmp / "out", io::save_form::directory); });
      REQUIRE(e.thrown);
      CHECK(listing(tmp / "out") == std::set<std::string>{"adapter_config.json", "adapter_model.safetensors"});
      CHECK(file_text(tmp / "out/adapter_config.json") == config_before);
      check_same_adapter(a, io::load_adapter<float>(tmp / "out"));
    }
    SUBCASE("a file whose weights cannot be written leaves the directory as it was") {
      // The weights path is an existing directory: the rename onto it fails.
      std::filesystem::create_directory(tmp / "taken.safetensors");
      const auto e = catch_error([&] { io::save_adapter(a, tmp / "taken.safetensors", io::save_form::file); });
      REQUIRE(e.thrown);
      CHECK(e.code == "io");
      INFO("directory after the failed save: ", joined(listing(tmp.path)));
      CHECK_FALSE(any_temporary(listing(tmp.path)));
      // Nothing else either: a save that fails should not leave a new adapter_config.json behind
      // (it would then be "the config beside" any later file saved or loaded in this directory).
      CHECK(listing(tmp.path) == std::set<std::string>{"taken.safetensors"});
    }
    SUBCASE("a file with duplicate tensors") {
      const auto e = catch_error([&] { io::save_adapter(dup, tmp / "d.safetensors", io::save_form::file); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_argument");
      INFO("directory after the failed save: ", joined(listing(tmp.path)));
      CHECK_FALSE(any_temporary(listing(tmp.path)));
      CHECK(listing(tmp.path).empty());
    }
    SUBCASE("a kohya adapter as a directory") {
      auto k = a;
      k.format = io::adapter_format::kohya;
      const auto e = catch_error([&] { io::save_adapter(k, tmp / "kdir", io::save_form::directory); });
      REQUIRE(e.thrown);
      CHECK(e.code == "invalid_argument");
      CHECK(listing(tmp.path).empty());
    }
  }

  TEST_CASE("a PEFT file saved without a config beside a config that gives other scales still round-trips") {
    // The adapter has no config and s = 1 everywhere, so save_adapter writes no config; but
    // load_adapter reads the adapter_config.json it finds beside the file. The save must either
    // refuse (as it does when the adapter needs a config) or the file must load back as saved.
    temp_dir tmp;
    std::mt19937_64 rng(24);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
    const auto a = io::read_peft<float>(file.view());
    REQUIRE(a.modules[0].scale == 1.0);
    const std::string other = R"({"r": 4, "lora_alpha": 16})";  // would give s = 4
    io::write_file_atomic(tmp / "adapter_config.json", other);
    const auto e = catch_error([&] { io::save_adapter(a, tmp / "x.safetensors", io::save_form::file); });
    CHECK(file_text(tmp / "adapter_config.json") == other);
    if (e.thrown) {
      CHECK(e.code == "io");
    } else {
      const auto b = io::load_adapter<float>(tmp / "x.safetensors");
      CHECK(b.modules[0].scale == a.modules[0].scale);
    }
  }

  TEST_CASE("peft_config_json: a module whose name is a dotted suffix of another's") {
    // Model names "layers.0.fc" and "decoder.layers.0.fc": PEFT's rule lets the key for the first
    // match the second too. The written config must still give each module its own rank and scale.
    std::mt19937_64 rng(25);
    const std::string shorter = wrap + "layers.0.fc";
    const std::string longer = wrap + "decoder.layers.0.fc";
    const std::string other = wrap + "encoder.fc2";
    const auto file = image({T(shorter + ".lora_A.weight", io::dtype::F32, {2, 6}, values(2, 6, rng)),
                             T(shorter + ".lora_B.weight", io::dtype::F32, {5, 2}, values(5, 2, rng)),
                             T(longer + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(longer + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)),
                             T(other + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(other + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
    // Written by PEFT with an explicit, unambiguous pattern: longer and other r 4, shorter r 2.
    const auto cfg = config(R"({"r": 4, "lora_alpha": 8, "rank_pattern": {"^layers\\.0\\.fc": 2}})");
    const auto a = io::read_peft<float>(file.view(), &cfg);
    REQUIRE(a.find(shorter)->rank() == 2);
    REQUIRE(a.find(longer)->rank() == 4);
    const auto written = io::peft_config_json(a);
    CHECK(io::peft_config_reproduces(written, a));
    const auto again = image(io::peft_tensors(a));
    const auto e = catch_error([&] {
      const auto b = io::read_peft<float>(again.view(), &written);
      for (const auto& m : a.modules) {
        CAPTURE(m.name);
        CHECK(b.find(m.name)->rank() == m.rank());
        CHECK(relatively_equal(b.find(m.name)->scale, m.scale));
      }
    });
    CHECK_MESSAGE(!e.thrown, e.what);
  }

  TEST_CASE("save_adapter as a directory: a new path with a trailing slash, a missing parent") {
    temp_dir tmp;
    const auto cfg = config(roundtrip_peft_config);
    const auto file = image(roundtrip_peft_tensors());
    const auto a = io::read_peft<float>(file.view(), &cfg);
    SUBCASE("\"out/\" names the directory out") {
      const auto e = catch_error([&] { io::save_adapter(a, tmp.path + "/out/", io::save_form::directory); });
      CHECK_MESSAGE(!e.thrown, e.what);
      CHECK(listing(tmp.path) == std::set<std::string>{"out"});
      if (!e.thrown) check_same_adapter(a, io::load_adapter<float>(tmp / "out"));
    }
    SUBCASE("a missing parent is an io error and leaves nothing") {
      const auto e = catch_error([&] { io::save_adapter(a, tmp / "no/such/out", io::save_form::directory); });
      REQUIRE(e.thrown);
      CHECK(e.code == "io");
      CHECK(listing(tmp.path).empty());
    }
  }

  TEST_CASE("PEFT scales whose alpha is near an integer keep the 1e-12 round-trip promise") {
    // s = 2·(1 + 1e-10) at r = 4 gives α = 8.0000000008. Writing α = 8 instead would bring back
    // s = 2, 1e-10 off, which the 1e-12 promise (and peft_config_reproduces) does not allow.
    temp_dir tmp;
    std::mt19937_64 rng(26);
    const auto file = image({T(q0 + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                             T(q0 + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng))});
    const auto cfg = config(R"({"r": 4, "lora_alpha": 8})");
    auto a = io::read_peft<double>(file.view(), &cfg);
    const double s = 2.0 * (1.0 + 1e-10);
    a.modules[0].scale = s;
    const auto written = io::peft_config_json(a);
    CHECK(io::peft_config_reproduces(written, a));
    io::save_adapter(a, tmp / "out", io::save_form::directory);
    CHECK(relatively_equal(io::load_adapter<double>(tmp / "out").modules[0].scale, s));
    // A second file saved beside the config the first save wrote must be accepted.
    std::filesystem::create_directory(tmp / "f");
    io::save_adapter(a, tmp / "f/one.safetensors", io::save_form::file);
    const auto e = catch_error([&] { io::save_adapter(a, tmp / "f/two.safetensors", io::save_form::file); });
    CHECK_MESSAGE(!e.thrown, e.what);
  }
}
