// Finite in, finite out (issue 12, item 5) through the `lola` tool, end to end:
//   - NaN or ±inf in B, in A (F16, BF16, F32, F64 storage, both dialects), in a kohya alpha, in a
//     DoRA magnitude (PEFT lora_magnitude_vector, kohya dora_scale), in a lora_B bias, in a GL-net
//     weight, and in a --template adapter make every subcommand that reads it (inspect,
//     canonicalize, resize, merge, align, glnet, features) exit 1 with one line naming the file,
//     the tensor key and the module, and write nothing;
//   - finite inputs whose results do not fit the output dtype (F16 factors whose canonical,
//     aligned, resized or merged factors exceed 65504) are written finite, with exact powers of two
//     moved between B, A and s, and reproduce ΔW within F16 rounding; where even the scale cannot
//     take the excess, exit 1 with a clear message and no file — never inf in a file, never inf on
//     stdout;
//   - F64 factors whose Grams overflow and underflow (entries 1e160 and 1e-170) give the singular
//     values of a dense double reference.
// Every adapter is written by the test with lola's writer (io::save_adapter, write_safetensors);
// non-finite values are then planted into the written file with tensor::from_matrix, which encodes
// NaN and inf as they are.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SVD>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#include "lola/io/load.hpp"
#include "lola/nn/gl_net_weights.hpp"
#pragma GCC diagnostic pop

#include "support/adapter_module.hpp"
#include "support/run_cli.hpp"
#include "support/test_support.hpp"

namespace io = lola::io;
namespace nn = lola::nn;

namespace {

using namespace lola_test::cli;
using md = Eigen::MatrixXd;
using loaded = io::adapter<double>;

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

constexpr Eigen::Index d = 12, k = 10, r = 4;

const char* const peft_q = "base_model.model.model.layers.0.self_attn.q_proj";
const char* const peft_v = "base_model.model.model.layers.0.self_attn.v_proj";
const char* const kohya_q = "lora_unet_mid_block_attentions_0_to_q";
const char* const kohya_v = "lora_unet_mid_block_attentions_0_to_v";

/// A two-module adapter in memory (modules d×r and r×k, Gaussian factors times `magnitude`,
/// scale alpha/r) in the given dialect and factor dtype.
loaded make_adapter(io::adapter_format format, io::dtype t, std::mt19937_64& rng, double alpha = 8,
                    double magnitude = 1) {
  loaded a;
  a.format = format;
  const bool peft = format == io::adapter_format::peft;
  for (const char* name : {peft ? peft_q : kohya_q, peft ? peft_v : kohya_v})
    a.modules.push_back(lola_test::make_module<double>(name, magnitude * lola_test::gaussian<double>(d, r, rng),
                                                       magnitude * lola_test::gaussian<double>(r, k, rng),
                                                       alpha / static_cast<double>(r), t));
  return a;
}

/// Rewrites the safetensors file at path with flat element i of tensor `key` set to v.
void plant(const std::string& path, const std::string& key, std::size_t i, double v) {
  const auto file = io::safetensors_file::open(path);
  std::vector<io::tensor> tensors;
  bool found = false;
  for (const auto& info : file->tensors()) {
    io::tensor t = io::tensor::copy_of(file.view(), info);
    if (info.name == key) {
      t = lola_test::with_element(t, i, v);
      found = true;
    }
    tensors.push_back(std::move(t));
  }
  REQUIRE_MESSAGE(found, path << " has no tensor " << key);
  io::write_safetensors(path, tensors, file->metadata());
}

/// Every value of every floating tensor in the safetensors file at path (factors, alphas,
/// extras) is finite.
bool all_finite(const std::string& path) {
  const auto file = io::safetensors_file::open(path);
  for (const auto& info : file->tensors()) {
    if (!io::is_math_dtype(info.dtype)) continue;
    if (!file->matrix<double>(info).allFinite()) return false;
  }
  return true;
}

/// The weights file of an adapter path (a PEFT directory or a .safetensors file).
std::string weights_of(const std::string& path) {
  return io::is_directory(path) ? path + "/adapter_model.safetensors" : path;
}

/// Saves in the adapter's natural form: PEFT as a directory, kohya as a file.
void save(const loaded& a, const std::string& path) {
  io::save_adapter(a, path, a.format == io::adapter_format::peft ? io::save_form::directory : io::save_form::file);
}

/// A GL-net for the layout of make_adapter (two modules of d×k).
nn::gl_net<double> make_net(std::mt19937_64& rng) {
  return nn::gl_net<double>::random({d, d}, {k, k}, 3, 2, 5, 2, nn::pooling::flatten, rng);
}

// ------------------------------------------------------------------ ΔW comparisons

/// ‖M̂ − M‖_F for M̂ = M rounded to F16 (u = 2⁻¹¹; half the subnormal spacing 2⁻²⁵ near zero),
/// bounded from the stored M̂.
double f16_rounding_bound(const md& stored) {
  const double u = 0x1p-11;
  return u / (1 - u) * stored.norm() + 0x1p-25 * std::sqrt(static_cast<double>(stored.size()));
}

/// Whether the module b (read back from the tool's output, F16) holds s·B·A of the module a to
/// within the rounding of its F16 factors plus the tool's double-precision work: with e_X the F16
/// rounding of each output factor, ‖ŝB̂Â − sBA‖_F ≤ |ŝ|·(e_B·(‖Â‖_F + e_A) + ‖B̂‖_F·e_A) +
/// 8·n·ε·|s|·‖B‖_F·‖A‖_F (n = d + k + r; backward-stable QR, r×r SVD and GEMMs, both sides).
void check_same_delta(const io::adapter_module<double>& b, const md& want, double want_bound) {
  const md B = b.B, A = b.A;
  const double eb = f16_rounding_bound(B), ea = f16_rounding_bound(A);
  const double bound = std::abs(b.scale) * (eb * (A.norm() + ea) + B.norm() * ea) + want_bound;
  INFO(b.name);
  CHECK((b.scale * (B * A) - want).norm() <= bound);
  CHECK(bound <= 1e-2 * want.norm());  // the check can tell a wrong ΔW
}

double double_bound(const io::adapter_module<double>& m) {
  constexpr double eps = std::numeric_limits<double>::epsilon();
  return 8.0 * static_cast<double>(m.rows() + m.cols() + m.rank()) * eps * std::abs(m.scale) * m.B.stableNorm() * m.A.stableNorm();
}

}  // namespace

TEST_CASE("NaN and inf in any input: every subcommand that reads it exits 1 naming file, key and module, writing nothing") {
  temp_dir t;
  std::mt19937_64 rng(1301);
  const std::string good_peft = t / "good_peft", good_kohya = t / "good_kohya.safetensors";
  save(make_adapter(io::adapter_format::peft, io::dtype::F32, rng), good_peft);
  save(make_adapter(io::adapter_format::kohya, io::dtype::F16, rng), good_kohya);
  const std::string weights = t / "net.safetensors";
  nn::save_gl_net(make_net(rng), weights);

  struct bad_input {
    const char* label;
    io::adapter_format format;
    io::dtype dtype;
    const char* module;
    const char* suffix;  // the key is module + suffix
    double value;
    std::size_t element;
  };
  const auto peft = io::adapter_format::peft;
  const auto kohya = io::adapter_format::kohya;
  const bad_input cases[] = {
      {"PEFT B, F16, NaN", peft, io::dtype::F16, peft_q, ".lora_B.weight", nan_v, 5},
      {"PEFT A, BF16, inf", peft, io::dtype::BF16, peft_v, ".lora_A.weight", inf_v, 7},
      {"PEFT A, F32, -inf", peft, io::dtype::F32, peft_q, ".lora_A.weight", -inf_v, 0},
      {"PEFT B, F64, NaN", peft, io::dtype::F64, peft_v, ".lora_B.weight", nan_v, 47},
      {"PEFT DoRA magnitude, NaN", peft, io::dtype::F32, peft_q, ".lora_magnitude_vector", nan_v, 3},
      {"PEFT lora_B bias, inf", peft, io::dtype::BF16, peft_v, ".lora_B.bias", inf_v, 11},
      {"kohya up, F16, inf", kohya, io::dtype::F16, kohya_q, ".lora_up.weight", inf_v, 2},
      {"kohya down, BF16, NaN", kohya, io::dtype::BF16, kohya_v, ".lora_down.weight", nan_v, 39},
      {"kohya alpha (F16), NaN", kohya, io::dtype::F16, kohya_q, ".alpha", nan_v, 0},
      {"kohya alpha (F32), -inf", kohya, io::dtype::F32, kohya_v, ".alpha", -inf_v, 0},
      {"kohya dora_scale, NaN", kohya, io::dtype::F16, kohya_v, ".dora_scale", nan_v, 6},
  };
  int n = 0;
  for (const auto& c : cases) {
    const std::string label = c.label;
    CAPTURE(label);
    // The input: a clean adapter (with the extra the case needs), written, then the value planted.
    loaded a = make_adapter(c.format, c.dtype, rng, c.format == kohya ? 2.0 : 8.0);
    const std::string suffix = c.suffix;
    for (auto& m : a.modules) {
      if (m.name != c.module) continue;
      if (suffix == ".lora_magnitude_vector" || suffix == ".lora_B.bias")
        m.extras.push_back(io::tensor::from_matrix(m.name + suffix, c.dtype, {std::uint64_t(d)}, Eigen::VectorXd::Ones(d)));
      if (suffix == ".dora_scale")
        m.extras.push_back(io::tensor::from_matrix(m.name + suffix, c.dtype, {std::uint64_t(d), 1}, Eigen::VectorXd::Ones(d)));
    }
    const std::string bad = c.format == peft ? t / ("bad" + std::to_string(++n))
                                             : t / ("bad" + std::to_string(++n) + ".safetensors");
    save(a, bad);
    const std::string key = std::string(c.module) + suffix;
    plant(weights_of(bad), key, c.element, c.value);
    const std::string& good = c.format == peft ? good_peft : good_kohya;
    const std::vector<std::string> mentions = {weights_of(bad), "\"" + key + "\"", "module \"" + std::string(c.module) + "\"",
                                               "not finite"};
    const std::string out = c.format == peft ? t / "out" : t / "out.safetensors";
    const std::string table = t / "features.safetensors";
    const std::vector<std::vector<std::string>> runs = {
        {"inspect", bad},
        {"inspect", bad, "--json"},
        {"canonicalize", bad, "-o", out},
        {"resize", bad, "--rank", "2", "-o", out},
        {"merge", bad, good, "-o", out},
        {"merge", good, bad, "-o", out},
        {"align", bad, "--template", good, "-o", out},
        {"align", good, "--template", bad, "-o", out},  // a non-finite template
        {"glnet", weights, bad},
        {"glnet", weights, good, bad, "--json"},
        {"features", bad, "--kind", "svd", "-o", table},
        {"features", good, bad, "--kind", "raw", "-o", table},
        {"features", good, "--kind", "align", "--template", bad, "-o", table},
    };
    for (const auto& args : runs) {
      check_invalid_input(run_lola(t, args), mentions);
      check_no_output(t, out);
      check_no_output(t, table);
    }
  }
}

TEST_CASE("NaN and inf in GL-net weights: glnet exits 1 naming the weights file and the key") {
  temp_dir t;
  std::mt19937_64 rng(1302);
  const std::string good = t / "good";
  save(make_adapter(io::adapter_format::peft, io::dtype::F32, rng), good);
  const auto net = make_net(rng);
  struct bad_weight {
    io::dtype dtype;
    const char* key;
    double value;
  };
  const bad_weight cases[] = {
      {io::dtype::F32, "equiv_mlp.first_layer.1.w_2", nan_v},
      {io::dtype::F16, "equiv_mlp.equivariant_layers_u.0", inf_v},
      {io::dtype::BF16, "invariant_head.ln1.bias", -inf_v},
      {io::dtype::F64, "invariant_head.linear2.weight", nan_v},
  };
  for (const auto& c : cases) {
    const std::string key = c.key;
    CAPTURE(key);
    const std::string weights = t / (std::string(c.key) + ".safetensors");
    nn::save_gl_net(net, weights, c.dtype);
    // Clean, the weights run (so the failure below is the planted value's).
    check_ok(run_lola(t, {"glnet", weights, good}));
    plant(weights, c.key, 1, c.value);
    check_invalid_input(run_lola(t, {"glnet", weights, good, "--json"}),
                        {weights, "\"" + std::string(c.key) + "\"", "non-finite value at element 1"});
  }
}

TEST_CASE("F16 results beyond 65504 are written finite, with powers of two moved between B, A and s") {
  temp_dir t;
  std::mt19937_64 rng(1303);
  // kohya F16 factors near F16's top (60000 + noise, so nearly rank one): σ₁ ≈ 60000²·r·√(d·k)
  // ≈ 1.6e11 (s = 1), and the balanced canonical factors √σ₁·u₁ have entries ≈ √σ₁/√d ≈ 1.2e5,
  // beyond F16. The input itself fits F16.
  loaded a = make_adapter(io::adapter_format::kohya, io::dtype::F16, rng, double(r));
  for (auto& m : a.modules) {
    m.B = (60000.0 + 500.0 * lola_test::gaussian<double>(d, r, rng).array()).matrix();
    m.A = (60000.0 + 500.0 * lola_test::gaussian<double>(r, k, rng).array()).matrix();
  }
  const std::string in = t / "big.safetensors";
  save(a, in);
  const loaded input = io::load_adapter<double>(in);  // the factors as stored
  for (const auto& m : input.modules) CHECK(m.B.cwiseAbs().maxCoeff() <= 65504.0);

  // A template of the same layout for align: a rotation Q mixes the columns of B, whose rows have
  // norms 60000·√r = 1.2e5.
  const std::string templ = t / "template.safetensors";
  save(make_adapter(io::adapter_format::kohya, io::dtype::F16, rng, double(r)), templ);

  SUBCASE("canonicalize (balanced and left), align: exit 0, finite output, dW within F16 rounding") {
    for (const std::vector<std::string>& extra :
         {std::vector<std::string>{"canonicalize"}, {"canonicalize", "--form", "left"}, {"align", "--template", templ}}) {
      CAPTURE(extra[0]);
      const std::string out = t / "out.safetensors";
      std::vector<std::string> args = {extra[0], in, "-o", out};
      args.insert(args.end(), extra.begin() + 1, extra.end());
      check_ok(run_lola(t, args));
      CHECK(all_finite(out));
      const loaded back = io::load_adapter<double>(out);
      REQUIRE(back.modules.size() == input.modules.size());
      for (std::size_t i = 0; i < back.modules.size(); ++i) {
        const auto& m = input.modules[i];
        CHECK(back.modules[i].B.cwiseAbs().maxCoeff() <= 65504.0);
        CHECK(back.modules[i].A.cwiseAbs().maxCoeff() <= 65504.0);
        check_same_delta(back.modules[i], m.scale * (m.B * m.A), double_bound(m));
      }
      std::filesystem::remove(out);
    }
    // The balanced form moved the excess into the scale (kohya alpha): its factors alone cannot
    // hold σ₁ at F16's top.
    check_ok(run_lola(t, {"canonicalize", in, "-o", t / "balanced.safetensors"}));
    CHECK(io::load_adapter<double>(t / "balanced.safetensors").modules[0].scale > input.modules[0].scale);
  }

  SUBCASE("resize and merge: exit 0, finite output") {
    check_ok(run_lola(t, {"resize", in, "--rank", "2", "-o", t / "resized.safetensors"}));
    CHECK(all_finite(t / "resized.safetensors"));
    // merge in in: [B B]·[A; A] = 2·B·A, rank 4 ≤ K = 4, recompressed exactly.
    check_ok(run_lola(t, {"merge", in, in, "-o", t / "merged.safetensors"}));
    CHECK(all_finite(t / "merged.safetensors"));
    const loaded merged = io::load_adapter<double>(t / "merged.safetensors");
    for (std::size_t i = 0; i < merged.modules.size(); ++i) {
      const auto& m = input.modules[i];
      check_same_delta(merged.modules[i], 2 * m.scale * (m.B * m.A), 2 * double_bound(m));
    }
  }

  SUBCASE("when the scale cannot take the excess (alpha 1e308): exit 1, a clear message, no file") {
    for (auto& m : a.modules) m.scale = 1e308 / double(r);  // α = 1e308, written as F64
    const std::string huge = t / "huge.safetensors";
    save(a, huge);
    const std::string out = t / "out.safetensors";
    // (Both modules fail; the message names whichever the parallel loop met first.)
    check_invalid_input(run_lola(t, {"canonicalize", huge, "-o", out}),
                        {huge, "module \"lora_unet_mid_block_attentions_0_to_", "do not fit F16", "scale"});
    check_no_output(t, out);
    // inspect: σ₁ = s·1.6e11 exceeds double; an error, not "inf" on stdout.
    check_invalid_input(run_lola(t, {"inspect", huge}), {huge, "exceed the range"});
    check_invalid_input(run_lola(t, {"inspect", huge, "--json"}), {huge, "exceed the range"});
  }
}

TEST_CASE("F64 factors whose Grams overflow and underflow: inspect and canonicalize as in a dense double reference") {
  temp_dir t;
  std::mt19937_64 rng(1304);
  // B ~ 1e160 (BᵀB ~ 1e320 > DBL_MAX), A ~ 1e-170 (A·Aᵀ ~ 1e-340, below the smallest subnormal):
  // the plain Gram and Householder routes return inf or 0; σ(s·B·A) ~ 1e-10·√(d·k) is ordinary.
  loaded a = make_adapter(io::adapter_format::peft, io::dtype::F64, rng, 8.0);
  for (auto& m : a.modules) {
    m.B *= 1e160;
    m.A *= 1e-170;
  }
  const std::string in = t / "extreme";
  save(a, in);
  const auto r_json = run_lola(t, {"inspect", in, "--json"});
  check_ok(r_json);
  const auto json = io::parse_json(r_json.out, "lola's stdout");
  const auto& modules = json.find("modules")->items();
  REQUIRE(modules.size() == a.modules.size());
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const auto& m = a.modules[i];
    const md dense = m.scale * (m.B * m.A);  // entries ~1e-10: no overflow in the reference
    const Eigen::VectorXd want = Eigen::BDCSVD<md>(dense).singularValues();
    const auto& got = modules[i].find("singular_values")->items();
    REQUIRE(got.size() == static_cast<std::size_t>(r));
    // σᵢ's absolute error: c·n·ε·|s|·‖B‖·‖A‖ on both sides (the file comment of test_cli.cpp), c = 8·16
    // for the Gram route's constant.
    const double tol = 128.0 * double(d + k + r) * std::numeric_limits<double>::epsilon() * std::abs(m.scale) *
                       m.B.stableNorm() * m.A.stableNorm();
    CHECK(tol <= 1e-8 * want(0));
    for (std::size_t j = 0; j < got.size(); ++j) CHECK(std::abs(got[j].as_double() - want(Eigen::Index(j))) <= tol);
    CHECK(modules[i].find("fro_norm")->as_double() == doctest::Approx(want.norm()).epsilon(1e-12));
  }
  check_ok(run_lola(t, {"canonicalize", in, "-o", t / "out"}));
  const loaded back = io::load_adapter<double>(t / "out");
  for (std::size_t i = 0; i < back.modules.size(); ++i) {
    const auto& m = a.modules[i];
    const md want = m.scale * (m.B * m.A);
    CHECK((back.modules[i].scale * (back.modules[i].B * back.modules[i].A) - want).norm() <= 1e-12 * want.norm());
  }
}
