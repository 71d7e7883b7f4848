// Finite in, finite out (issue 12, item 5), in the library:
//   - every reader rejects NaN and ±inf in what it computes with — factors in each storage dtype,
//     kohya alphas, module extras (DoRA magnitude, lora_B bias), GL-net weights — naming the file,
//     the tensor key, the module and the element, and keeps passthrough tensors bit-exact;
//   - the writer never turns a finite value into inf: tensor::from_matrix refuses, and
//     adapter_module::fit_to_dtypes moves exact powers of two between B, A and s first;
//   - the factor-space SVD and the spectral summaries neither overflow nor underflow where the
//     result is representable: float factors with entries 1e20 and 1e-25 give σ to working accuracy.
// Each rule is shown able to fail: the unchecked conversion, the raw cast, the plain Gram, Eigen's
// unscaled Householder QR and the plain norm are run on the same data and give NaN, inf or 0.
//
// Test values have magnitudes in [0.5, 2) (normal in every dtype) unless a test says otherwise.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/QR>
#include <Eigen/SVD>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#include "lola/canon/canonical_form.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/io/load.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "lola/nn/gl_net_weights.hpp"
#pragma GCC diagnostic pop

#include "support/adapter_module.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace io = lola::io;
namespace nn = lola::nn;

namespace {

using lola_test::contains;
using lola_test::thrown_by;
using lola_test::with_element;
using rm = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using shape_t = std::vector<std::uint64_t>;

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

const char* const source = "finite_test.safetensors";

/// rows × cols values with magnitudes in [0.5, 2) and random signs.
rm values(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> magnitude(0.5, 2.0);
  std::bernoulli_distribution negative(0.5);
  rm m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = magnitude(rng) * (negative(rng) ? -1 : 1);
  return m;
}

io::tensor T(const std::string& name, io::dtype t, shape_t shape, const rm& m) {
  return io::tensor::from_matrix(name, t, std::move(shape), m);
}

io::tensor scalar(const std::string& name, io::dtype t, double value) {
  Eigen::Matrix<double, 1, 1> v;
  v(0, 0) = value;
  return io::tensor::from_matrix(name, t, {}, v);
}

io::safetensors_file image(const std::vector<io::tensor>& tensors) {
  return io::safetensors_file::from_bytes(io::serialize_safetensors(tensors), source);
}

const char* word_for(double bad) { return std::isnan(bad) ? "NaN" : bad > 0 ? "inf" : "-inf"; }

/// The message names the file, the key, the module and what is there.
void check_names(const lola::error& e, const std::string& key, const std::string& module,
                 const std::string& detail) {
  INFO(e.what());
  CHECK(e.code() == lola::error_code::invalid_file);
  CHECK(contains(e.what(), source));
  CHECK(contains(e.what(), "\"" + key + "\""));
  CHECK(contains(e.what(), "module \"" + module + "\""));
  CHECK(contains(e.what(), "not finite"));
  CHECK(contains(e.what(), detail));
}

const io::dtype math_dtypes[] = {io::dtype::F16, io::dtype::BF16, io::dtype::F32, io::dtype::F64};

}  // namespace

TEST_SUITE("io.finite: readers") {
  TEST_CASE("NaN and +-inf in A or B, in every storage dtype and both dialects, are errors naming file, key, module and element") {
    std::mt19937_64 rng(1201);
    const std::string peft = "base_model.model.layers.0.self_attn.q_proj";
    const std::string kohya = "lora_unet_mid_block_attentions_0_proj_in";
    for (io::dtype t : math_dtypes)
      for (bool in_A : {true, false})
        for (double bad : {nan_v, inf_v, -inf_v})
          for (bool is_peft : {true, false}) {
            const std::string& m = is_peft ? peft : kohya;
            const std::string a_key = m + (is_peft ? ".lora_A.weight" : ".lora_down.weight");
            const std::string b_key = m + (is_peft ? ".lora_B.weight" : ".lora_up.weight");
            CAPTURE(io::dtype_name(t));
            CAPTURE(in_A);
            CAPTURE(bad);
            CAPTURE(m);
            io::tensor A = T(a_key, t, {4, 6}, values(4, 6, rng));
            io::tensor B = T(b_key, t, {5, 4}, values(5, 4, rng));
            // element [2, 1]: flat 2·6 + 1 in A (4×6), 2·4 + 1 in B (5×4)
            if (in_A)
              A = with_element(A, 13, bad);
            else
              B = with_element(B, 9, bad);
            const auto file = image({A, B});
            const std::string& key = in_A ? a_key : b_key;
            const std::string detail = "element [2, 1] of " + std::string(io::dtype_name(t)) +
                                       (in_A ? " [4, 6]" : " [5, 4]") + " is " + word_for(bad);
            check_names(thrown_by([&] { io::read_adapter<float>(file.view()); }), key, m, detail);
            check_names(thrown_by([&] { io::read_adapter<double>(file.view()); }), key, m, detail);
            // Without the check (the plain conversion the reader used before), the factor it
            // would compute with holds the value.
            CHECK_FALSE(file->matrix<double>(*file->find(key)).allFinite());
          }
  }

  TEST_CASE_TEMPLATE("decode_finite_elements converts exactly as decode_elements, and finds the first non-finite value", S, float, double) {
    // Every F16 and BF16 bit pattern, and F32 patterns of every exponent (incl. subnormals, inf,
    // NaN): the fused loops (checks on the stored bits) convert bit for bit as decode_elements does.
    for (io::dtype t : {io::dtype::F16, io::dtype::BF16, io::dtype::F32}) {
      CAPTURE(io::dtype_name(t));
      const std::size_t n = t == io::dtype::F32 ? 512 * 256 : 65536;
      std::vector<std::byte> bytes(n * io::dtype_bits(t) / 8);
      std::size_t first = n;
      for (std::size_t i = 0; i < n; ++i) {
        if (t == io::dtype::F32) {
          // exponent i / 256 (0 … 511 covers both signs), a spread of mantissas
          const auto bits = static_cast<std::uint32_t>((i / 256) << 23 | ((i % 256) * 0x8101u & 0x7FFFFFu));
          std::memcpy(bytes.data() + 4 * i, &bits, 4);
          if (first == n && ((bits >> 23) & 0xFF) == 0xFF) first = i;
        } else {
          const auto bits = static_cast<std::uint16_t>(i);
          std::memcpy(bytes.data() + 2 * i, &bits, 2);
          const std::uint16_t exponent = t == io::dtype::F16 ? 0x7C00 : 0x7F80;
          if (first == n && (bits & exponent) == exponent) first = i;
        }
      }
      std::vector<S> want(n), got(n);
      io::decode_elements(bytes.data(), t, n, want.data());
      // All values up to the first non-finite one, then its index.
      CHECK(io::decode_finite_elements(bytes.data(), t, n, got.data()) == first);
      CHECK(std::memcmp(got.data(), want.data(), first * sizeof(S)) == 0);
      // Finite patterns only (the non-finite ones dropped): converted bit for bit, none reported.
      std::vector<std::byte> finite;
      std::vector<S> finite_want;
      const std::size_t width = io::dtype_bits(t) / 8;
      for (std::size_t i = 0; i < n; ++i)
        if (std::isfinite(want[i])) {
          finite.insert(finite.end(), bytes.begin() + std::ptrdiff_t(i * width), bytes.begin() + std::ptrdiff_t((i + 1) * width));
          finite_want.push_back(want[i]);
        }
      std::vector<S> finite_got(finite_want.size());
      CHECK(io::decode_finite_elements(finite.data(), t, finite_want.size(), finite_got.data()) == finite_want.size());
      CHECK(std::memcmp(finite_got.data(), finite_want.data(), finite_want.size() * sizeof(S)) == 0);
    }
  }

  TEST_CASE("the element is found across conversion blocks, and a finite F64 beyond float is refused for float only") {
    std::mt19937_64 rng(1202);
    const std::string m = "base_model.model.mlp.up_proj";
    // A is 3 × 5000 (15000 elements, four blocks of 4096): the first non-finite is [2, 7], flat
    // 10007, in the third block; a later one must not be reported instead.
    io::tensor A = T(m + ".lora_A.weight", io::dtype::F16, {3, 5000}, values(3, 5000, rng));
    A = with_element(with_element(A, 10007, -inf_v), 14999, nan_v);
    const io::tensor B = T(m + ".lora_B.weight", io::dtype::F16, {2, 3}, values(2, 3, rng));
    check_names(thrown_by([&] { io::read_adapter<float>(image({A, B}).view()); }), m + ".lora_A.weight", m,
                "element [2, 7] of F16 [3, 5000] is -inf");
    // The last element alone.
    const io::tensor last = with_element(T(m + ".lora_A.weight", io::dtype::BF16, {3, 5000}, values(3, 5000, rng)),
                                         14999, nan_v);
    check_names(thrown_by([&] { io::read_adapter<double>(image({last, B}).view()); }), m + ".lora_A.weight", m,
                "element [2, 4999] of BF16 [3, 5000] is NaN");

    // 1e300 in F64: finite, so a double reader takes it; float cannot hold it.
    const io::tensor big = with_element(T(m + ".lora_B.weight", io::dtype::F64, {2, 3}, values(2, 3, rng)), 4, 1e300);
    const io::tensor a_ok = T(m + ".lora_A.weight", io::dtype::F64, {3, 4}, values(3, 4, rng));
    const auto file = image({a_ok, big});
    CHECK(io::read_adapter<double>(file.view()).modules[0].B(1, 1) == 1e300);
    check_names(thrown_by([&] { io::read_adapter<float>(file.view()); }), m + ".lora_B.weight", m,
                "element [1, 1] of F64 [2, 3] is 1e+300, beyond the range of the compute type");
  }

  TEST_CASE("DoRA magnitudes and lora_B biases must be finite; passthrough tensors are kept bit-exact unchecked") {
    std::mt19937_64 rng(1203);
    const std::string m = "base_model.model.layers.0.self_attn.v_proj";
    const io::tensor A = T(m + ".lora_A.weight", io::dtype::F32, {4, 6}, values(4, 6, rng));
    const io::tensor B = T(m + ".lora_B.weight", io::dtype::F32, {5, 4}, values(5, 4, rng));
    for (const char* suffix : {".lora_magnitude_vector", ".lora_B.bias"})
      for (io::dtype t : math_dtypes)
        for (double bad : {nan_v, inf_v, -inf_v}) {
          CAPTURE(suffix);
          CAPTURE(io::dtype_name(t));
          const io::tensor extra = with_element(T(m + suffix, t, {5}, values(1, 5, rng)), 3, bad);
          const auto file = image({A, B, extra});
          check_names(thrown_by([&] { io::read_adapter<double>(file.view()); }), m + suffix, m,
                      "element [3] of " + std::string(io::dtype_name(t)) + " [5] is " + word_for(bad));
          // Unchecked, the extra is carried along with its NaN (what the reader did before).
          const io::tensor copy = io::tensor::copy_of(file.view(), *file->find(m + suffix));
          double held = 0;
          io::decode_elements(copy.data.data() + 3 * io::dtype_bits(t) / 8, t, 1, &held);
          CHECK_FALSE(std::isfinite(held));
        }
    // kohya's dora_scale.
    const std::string k = "lora_te_text_model_encoder_layers_0_mlp_fc1";
    const auto kfile = image({T(k + ".lora_down.weight", io::dtype::F16, {4, 6}, values(4, 6, rng)),
                              T(k + ".lora_up.weight", io::dtype::F16, {5, 4}, values(5, 4, rng)),
                              scalar(k + ".alpha", io::dtype::F16, 4.0),
                              with_element(T(k + ".dora_scale", io::dtype::F16, {5, 1}, values(5, 1, rng)), 0, -inf_v)});
    check_names(thrown_by([&] { io::read_adapter<float>(kfile.view()); }), k + ".dora_scale", k,
                "element [0, 0] of F16 [5, 1] is -inf");

    // A passthrough tensor (not a LoRA factor) with NaN is read, and kept byte for byte.
    const io::tensor head = with_element(T("base_model.model.lm_head.weight", io::dtype::BF16, {3, 4}, values(3, 4, rng)), 5, nan_v);
    const auto file = image({A, B, head});
    const auto a = io::read_adapter<double>(file.view());
    REQUIRE(a.passthrough.size() == 1);
    CHECK(a.passthrough[0].data == head.data);
  }

  TEST_CASE("kohya alpha: NaN and +-inf in any dtype are errors naming the key; a negative alpha negates dW") {
    std::mt19937_64 rng(1204);
    const std::string m = "lora_unet_down_blocks_0_attentions_0_proj_out";
    auto with_alpha = [&](const io::tensor& alpha) {
      return image({T(m + ".lora_down.weight", io::dtype::F32, {4, 6}, values(4, 6, rng)),
                    T(m + ".lora_up.weight", io::dtype::F32, {5, 4}, values(5, 4, rng)), alpha});
    };
    for (io::dtype t : math_dtypes)
      for (double bad : {nan_v, inf_v, -inf_v}) {
        CAPTURE(io::dtype_name(t));
        const auto file = with_alpha(scalar(m + ".alpha", t, bad));
        const auto e = thrown_by([&] { io::read_adapter<double>(file.view()); });
        INFO(e.what());
        CHECK(e.code() == lola::error_code::invalid_file);
        CHECK(contains(e.what(), source));
        CHECK(contains(e.what(), "module \"" + m + "\""));
        CHECK(contains(e.what(), "\"" + m + ".alpha\""));
        CHECK(contains(e.what(), std::string("is not finite: ") + word_for(bad)));
      }
    CHECK(io::read_adapter<double>(with_alpha(scalar(m + ".alpha", io::dtype::F32, -2.0)).view()).modules[0].scale == -0.5);
  }

  TEST_CASE("GL-net weights: a non-finite value in any tensor and dtype is an error naming the file, the key and the element") {
    std::mt19937_64 rng(1205);
    const auto net = nn::gl_net<double>::random({6, 5}, {4, 7}, 3, 2, 5, 2, nn::pooling::flatten, rng);
    for (io::dtype t : math_dtypes) {
      auto tensors = nn::gl_net_tensors(net, t);
      for (std::size_t which : {std::size_t{0}, tensors.size() / 2, tensors.size() - 1}) {
        CAPTURE(io::dtype_name(t));
        CAPTURE(tensors[which].name);
        auto bad = tensors;
        bad[which] = with_element(bad[which], 1, which == 0 ? nan_v : -inf_v);
        const auto file = image(bad);
        const auto e = thrown_by([&] { nn::read_gl_net<double>(file.view()); });
        INFO(e.what());
        CHECK(e.code() == lola::error_code::invalid_file);
        CHECK(contains(e.what(), source));
        CHECK(contains(e.what(), "\"" + tensors[which].name + "\""));
        CHECK(contains(e.what(), std::string("holds a non-finite value at element 1: ") + (which == 0 ? "NaN" : "-inf")));
      }
    }
    // A finite F64 weight beyond float's range: read as double, refused as float.
    auto tensors = nn::gl_net_tensors(net, io::dtype::F64);
    tensors[2] = with_element(tensors[2], 0, -1e300);
    const auto file = image(tensors);
    CHECK_NOTHROW(nn::read_gl_net<double>(file.view()));
    const auto e = thrown_by([&] { nn::read_gl_net<float>(file.view()); });
    CHECK(contains(e.what(), "-1e+300, beyond the range of the compute type"));
  }
}

TEST_SUITE("io.finite: writers") {
  TEST_CASE("from_matrix refuses a finite value its dtype would round to inf, and names the tensor and element") {
    struct limit {
      io::dtype t;
      double largest, fits, too_big;  // too_big: the first values that round to inf
    };
    // F16: 65504 + half its spacing of 32 rounds up to inf; below that, to 65504. BF16: max
    // (2 − 2⁻⁷)·2¹²⁷, spacing 2¹²⁰. F32 from double: FLT_MAX + half an ulp (2¹⁰³) rounds to inf.
    const limit limits[] = {
        {io::dtype::F16, 65504.0, 65519.0, 65520.0},
        // (BF16 encodes through float: "fits" is the float just below the rounding midpoint.)
        {io::dtype::BF16, 0x1.fep127, 0x1.fep127 + 0x1p119 - 0x1p104, 0x1.fep127 + 0x1p119},
        {io::dtype::F32, 0x1.fffffep127, 0x1.fffffep127 + 0x1p103 - 0x1p80, 0x1.fffffep127 + 0x1p103},
    };
    for (const auto& l : limits)
      for (double sign : {1.0, -1.0}) {
        CAPTURE(io::dtype_name(l.t));
        CHECK(io::dtype_max(l.t) == l.largest);
        Eigen::Matrix<double, 1, 3> v(0.5, sign * l.fits, 2.0);
        const auto ok = io::tensor::from_matrix("ok", l.t, {3}, v);
        double back[3];
        io::decode_elements(ok.data.data(), l.t, 3, back);
        CHECK(back[1] == sign * l.largest);  // rounded to the largest finite value, not inf
        v(1) = sign * l.too_big;
        const auto e = thrown_by([&] { io::tensor::from_matrix("m.lora_B.weight", l.t, {3}, v); });
        INFO(e.what());
        CHECK(e.code() == lola::error_code::numerical);
        CHECK(contains(e.what(), "\"m.lora_B.weight\""));
        CHECK(contains(e.what(), "element 1"));
        CHECK(contains(e.what(), std::string(io::dtype_name(l.t)) + " cannot hold"));
        // The raw cast (what the writer used to do, and PyTorch does) gives inf there.
        std::byte raw[3 * 4];
        CHECK(io::encode_elements(v.data(), 3, l.t, raw) == 1);
        io::decode_elements(raw, l.t, 3, back);
        CHECK(std::isinf(back[1]));
      }
    // NaN and inf are encoded as they are (readers reject them); F64 holds every double.
    const Eigen::Vector3d odd(nan_v, -inf_v, 1e308);
    const auto f = io::tensor::from_matrix("odd", io::dtype::F32, {3}, Eigen::Vector3d(nan_v, -inf_v, 1.0));
    double back[3];
    io::decode_elements(f.data.data(), io::dtype::F32, 3, back);
    CHECK(std::isnan(back[0]));
    CHECK(back[1] == -inf_v);
    CHECK_NOTHROW(io::tensor::from_matrix("d", io::dtype::F64, {3}, odd));
  }

  TEST_CASE("fit_to_dtypes: factors that fit are untouched; otherwise exact powers of two move between B, A and s") {
    std::mt19937_64 rng(1206);
    io::adapter_module<double> m;
    m.name = "base_model.model.layers.3.mlp.down_proj";
    m.B_dtype = m.A_dtype = io::dtype::F16;
    m.B_shape = {6, 3};
    m.A_shape = {3, 5};
    const double s = 0.75;

    SUBCASE("the common case: nothing changes, bit for bit") {
      const rm B = values(6, 3, rng), A = values(3, 5, rng);
      m.set_factors(B, A, s);
      CHECK(m.B == B);
      CHECK(m.A == A);
      CHECK(m.scale == s);
    }

    SUBCASE("B too large for F16, A small: the power of two moves from B to A, s and B·A unchanged") {
      const rm B = values(6, 3, rng) * 0x1p20, A = values(3, 5, rng) * 0x1p-20;
      m.set_factors(B, A, s);
      CHECK(m.scale == s);
      CHECK(m.B.cwiseAbs().maxCoeff() <= 65504.0);
      CHECK(m.A.cwiseAbs().maxCoeff() <= 65504.0);
      const double ratio = m.B(0, 0) / B(0, 0);  // 2^-e
      int e = 0;
      CHECK(std::frexp(ratio, &e) == 0.5);  // a power of two
      CHECK(m.B == B * ratio);
      CHECK(m.A == A / ratio);
      CHECK(m.B * m.A == B * A);  // exactly: the power of two commutes with every rounding
      // The middle of the feasible exponents: both factors keep about the same headroom below
      // F16's largest value (and so above its subnormals).
      const double balance = m.B.cwiseAbs().maxCoeff() / m.A.cwiseAbs().maxCoeff();
      CHECK(balance >= 0.25);
      CHECK(balance <= 4.0);
    }

    SUBCASE("both too large: the excess moves into s, s·B·A unchanged, and the module is written finite") {
      const rm B = values(6, 3, rng) * 1e5, A = values(3, 5, rng) * 1e5;
      {
        // Without the fit (factors assigned directly), the writer refuses, naming the tensor.
        io::adapter<double> raw;
        raw.modules.push_back(m);
        raw.modules[0].B = B;
        raw.modules[0].A = A;
        raw.modules[0].scale = s;
        const auto e = thrown_by([&] { io::peft_tensors(raw); });
        CHECK(e.code() == lola::error_code::numerical);
        CHECK(contains(e.what(), m.name + ".lora_A.weight"));
      }
      m.set_factors(B, A, s);
      CHECK(m.scale > s);
      int e = 0;
      CHECK(std::frexp(m.scale / s, &e) == 0.5);
      CHECK(m.B.cwiseAbs().maxCoeff() <= 65504.0);
      CHECK(m.A.cwiseAbs().maxCoeff() <= 65504.0);
      CHECK(m.scale * (m.B * m.A) == s * (B * A));

      // Written in F16 (PEFT, with its config) and read back: finite, and s·B·A within F16
      // rounding. Each stored entry is x(1 + δ) with |δ| ≤ u = 2⁻¹¹ (all are normal: within a
      // factor 8 of the largest), so ‖ŝB̂Â − sBA‖_F ≤ |s|·‖B‖_F·‖A‖_F·(2u + u²).
      lola_test::temp_dir dir("lola_finite");
      io::adapter<double> a;
      a.modules.push_back(m);
      io::save_adapter(a, dir / "out", io::save_form::directory);
      const auto back = io::load_adapter<double>(dir / "out");
      const auto& b = back.modules[0];
      CHECK(b.B.allFinite());
      CHECK(b.A.allFinite());
      const double u = 0x1p-11;
      const rm want = s * (B * A);
      CHECK((b.scale * (b.B * b.A) - want).norm() <= std::abs(s) * B.norm() * A.norm() * (2 * u + u * u));
    }

    SUBCASE("when the scale cannot take the excess: a clear error naming the module") {
      const rm B = values(6, 3, rng) * 1e5, A = values(3, 5, rng) * 1e5;
      const auto e = thrown_by([&] { m.set_factors(B, A, 1e308); });
      INFO(e.what());
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(contains(e.what(), "module \"" + m.name + "\""));
      CHECK(contains(e.what(), "do not fit F16"));
      CHECK(contains(e.what(), "scale"));
    }

    SUBCASE("non-finite factors are refused") {
      rm B = values(6, 3, rng);
      B(1, 1) = nan_v;
      const auto e = thrown_by([&] { m.set_factors(B, values(3, 5, rng), s); });
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(contains(e.what(), "module \"" + m.name + "\": B is not finite"));
    }
  }

  TEST_CASE("kohya writer: alpha = s·r must be finite, and goes to the first dtype that holds it") {
    std::mt19937_64 rng(1207);
    io::adapter<double> a;
    a.format = io::adapter_format::kohya;
    io::adapter_module<double> m;
    m.name = "lora_unet_a";
    m.B_dtype = m.A_dtype = io::dtype::F16;
    m.B_shape = {6, 4};
    m.A_shape = {4, 5};
    m.B = values(6, 4, rng);
    m.A = values(4, 5, rng);
    m.scale = 25000.0;  // α = 1e5: beyond F16, exact in F32
    a.modules.push_back(m);
    const auto tensors = io::kohya_tensors(a);
    const auto& alpha = tensors[2];
    REQUIRE(alpha.name == "lora_unet_a.alpha");
    CHECK(alpha.dtype == io::dtype::F32);
    a.modules[0].scale = 1e308;  // α = 4e308
    const auto e = thrown_by([&] { io::kohya_tensors(a); });
    CHECK(e.code() == lola::error_code::numerical);
    CHECK(contains(e.what(), "module \"lora_unet_a\""));
    CHECK(contains(e.what(), "alpha"));
  }
}

TEST_SUITE("io.finite: norms and Grams") {
  // Tolerance: σᵢ of the factor-space SVD carries an absolute error of order ε·‖B‖·‖A‖ (Householder
  // or κ ≤ 4 Cholesky of the Gram, then a backward-stable r×r SVD; linalg/low_rank_svd.hpp), with a
  // constant up to 16 on the Gram route: 16 · product_tolerance<T>(d + k + r, ‖B‖_F·‖A‖_F). The
  // rescaling by powers of two adds no rounding. The reference is BDCSVD of B·A formed in double
  // from the same (exactly representable) entries; for these magnitudes the dense product has no
  // overflow or underflow (its entries are ~1e-5).
  template <class T>
  void check_scaled_svd(const lola_test::matrix<T>& B, const lola_test::matrix<T>& A) {
    const lola_test::matrix_d Bd = B.template cast<double>(), Ad = A.template cast<double>();
    const Eigen::VectorXd want = Eigen::BDCSVD<Eigen::MatrixXd>(Bd * Ad).singularValues();
    // (stableNorm: the test's own ‖B‖_F must not overflow either.)
    const double tol = 16 * lola_test::product_tolerance<T>(double(B.rows() + A.cols() + A.rows()),
                                                            Bd.stableNorm() * Ad.stableNorm());
    REQUIRE(tol <= 1e-2 * want(0));  // the check below can tell a wrong σ

    lola::low_rank_svd<T> svd(lola::factor(B, A, T(1)), lola::compute_uv);
    REQUIRE(svd.info() == Eigen::Success);
    const auto& got = svd.singularValues();
    REQUIRE(got.size() == std::min({B.rows(), A.cols(), A.rows()}));
    CHECK(got.allFinite());
    for (Eigen::Index i = 0; i < got.size(); ++i) CHECK(std::abs(double(got(i)) - want(i)) <= tol);
    // U Σ Vᵀ reproduces B·A, with orthonormal U.
    const lola_test::matrix_d U = svd.matrixU().template cast<double>(), V = svd.matrixV().template cast<double>();
    CHECK((U * got.template cast<double>().asDiagonal() * V.transpose() - Bd * Ad).norm() <= 4 * tol * std::sqrt(double(got.size())));
    CHECK((U.transpose() * U - Eigen::MatrixXd::Identity(U.cols(), U.cols())).norm() <= 1e3 * lola_test::eps<T>());
    // The canonical factors are finite and reproduce B·A.
    const auto c = lola::canonicalize(lola::factor(B, A, T(1)));
    const lola_test::matrix_d Bc = c.factors.B().template cast<double>(), Ac = c.factors.A().template cast<double>();
    CHECK(Bc.allFinite());
    CHECK((Bc * Ac - Bd * Ad).norm() <= 4 * tol * std::sqrt(double(got.size())));
  }

  TEST_CASE_TEMPLATE("factor-space SVD of factors whose Grams overflow and underflow: sigma as in double", T, float, double) {
    std::mt19937_64 rng(1208);
    // float: B ~ 1e20 (column norms² ~ 1e40·d > FLT_MAX), A ~ 1e-25 (Gram entries ~ 1e-50, below
    // float's smallest subnormal 1.4e-45); σ(B·A) ~ 1e-5·√(d·k) is an ordinary number.
    // double: the same with 1e160 and 1e-170 (squares 1e320 and 1e-340).
    const T big = std::is_same_v<T, float> ? T(1e20) : T(1e160);
    const T tiny = std::is_same_v<T, float> ? T(1e-25) : T(1e-165);
    const Eigen::Index d = 64, k = 48, r = 4;
    const lola_test::matrix<T> B = big * lola_test::gaussian<T>(d, r, rng);
    const lola_test::matrix<T> A = tiny * lola_test::gaussian<T>(r, k, rng);

    // The plain computations fail on these factors: the Gram of B is inf, that of Aᵀ is 0, and
    // Eigen's Householder QR (unscaled squared norms) gives a non-finite R for B and, for Aᵀ,
    // takes each column's tail for zero (|R₀₀| is its first entry, not its norm).
    lola::detail::dense_matrix<T> g;
    lola::detail::gram_into(B, g);
    CHECK_FALSE(g.allFinite());
    lola::detail::gram_into(A.transpose(), g);
    CHECK(g.isZero(0));
    CHECK_FALSE(Eigen::HouseholderQR<lola_test::matrix<T>>(B).matrixQR().allFinite());
    const lola_test::matrix<T> At = A.transpose();
    const double R00 = std::abs(double(Eigen::HouseholderQR<lola_test::matrix<T>>(At).matrixQR()(0, 0)));
    CHECK(R00 < 0.5 * At.col(0).template cast<double>().stableNorm());

    SUBCASE("well-conditioned factors: the Gram route, after rescaling") {
      lola::detail::factor_space_svd<T> parts;
      REQUIRE(parts.compute(B, A, T(1), false));
      CHECK(parts.b_space.via_gram());
      CHECK(parts.a_space.via_gram());
      CHECK(parts.b_space.exponent() > 0);
      CHECK(parts.a_space.exponent() < 0);
      check_scaled_svd<T>(B, A);
      // Swapped: B tiny, A huge.
      const lola_test::matrix<T> Bs = tiny * lola_test::gaussian<T>(d, r, rng);
      const lola_test::matrix<T> As = big * lola_test::gaussian<T>(r, k, rng);
      check_scaled_svd<T>(Bs, As);
    }
    SUBCASE("an ill-conditioned factor: Householder on the rescaled copy") {
      Eigen::Matrix<T, Eigen::Dynamic, 1> column_scales(r);
      column_scales << T(1), T(1e-1), T(1e-2), T(1e-3);
      const lola_test::matrix<T> Bi = B * column_scales.asDiagonal();
      lola::detail::factor_space_svd<T> parts;
      REQUIRE(parts.compute(Bi, A, T(1), false));
      CHECK_FALSE(parts.b_space.via_gram());
      check_scaled_svd<T>(Bi, A);
    }
    SUBCASE("a wide factor (d < r)") {
      check_scaled_svd<T>(lola_test::matrix<T>(B.topRows(2)), A);
    }
  }

  TEST_CASE("spectral summaries are computed from sigma / sigma_1: no overflow where the result is representable") {
    Eigen::VectorXd sigma(3);
    sigma << 1e200, 5e199, 0.0;
    CHECK(std::isinf(sigma.norm()));  // the plain norm squares 1e200
    const auto s = lola::spectral_summary_from(sigma);
    CHECK(s.frobenius == doctest::Approx(std::sqrt(1.25) * 1e200).epsilon(1e-15));
    CHECK(s.nuclear == doctest::Approx(1.5e200).epsilon(1e-15));
    CHECK(s.stable_rank == doctest::Approx(1.25).epsilon(1e-15));
    const double p = 2.0 / 3.0, q = 1.0 / 3.0;
    CHECK(s.effective_rank == doctest::Approx(std::exp(-(p * std::log(p) + q * std::log(q)))).epsilon(1e-14));
    Eigen::VectorXf sf(2);
    sf << 3e19f, 4e19f;
    std::sort(sf.data(), sf.data() + 2, std::greater<float>());
    CHECK(std::isinf(sf.norm()));
    CHECK(lola::spectral_summary_from(sf).frobenius == doctest::Approx(5e19).epsilon(1e-6));
  }

  TEST_CASE("singular values beyond the compute type are an error, not inf") {
    std::mt19937_64 rng(1209);
    const Eigen::MatrixXd B = 1e200 * lola_test::gaussian<double>(8, 2, rng);
    const Eigen::MatrixXd A = 1e200 * lola_test::gaussian<double>(2, 8, rng);
    // The decomposition itself reports σ = inf (it is, in double) ...
    const lola::low_rank_svd<double> svd(lola::factor(B, A, 1.0), lola::singular_values_only);
    CHECK(svd.info() == Eigen::Success);
    CHECK(std::isinf(svd.singularValues()(0)));
    // ... and the features refuse to hand it on.
    const auto e = thrown_by([&] { lola::singular_values(lola::factor(B, A, 1.0)); });
    CHECK(e.code() == lola::error_code::numerical);
    CHECK(contains(e.what(), "exceed the range"));
    // While a scale that brings σ back into range gives it, finite.
    const auto sigma = lola::singular_values(lola::factor(B, A, 1e-300));
    CHECK(sigma.allFinite());
    CHECK(sigma(0) > 0);
  }
}
