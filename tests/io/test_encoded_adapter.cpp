// io::encoded_adapter (issue 13, item 6): editing an adapter_view without a decoded copy. What is
// asserted:
//   - an encoded copy saved unchanged writes the bytes the decoded adapter writes, for PEFT files
//     in F32, F16, BF16 and F64 (with a conv module, an embedding module, a DoRA magnitude and a
//     passthrough tensor) and for kohya files;
//   - canonical forms and a resize written through encoded modules give files equal, byte for byte,
//     to those written through load_adapter<double> and adapter_module::set_factors, factors fitted
//     to F16 by powers of two included; and a deliberately different edit changes the bytes, so
//     the comparison can fail;
//   - set_factors refuses factors of another d or k, ranks that disagree and non-finite values,
//     naming the module;
//   - edit_modules keeps the factors of a module whose edit does not set them (its output starts
//     from encoded_adapter::frame_of, which holds none), with factors read at open or on visit;
//   - canonicalize_adapter and resize_adapter (whole adapters through ops/edit_modules.hpp) write
//     the bytes of the module-by-module edit on the decoded adapter, on one thread or two, and
//     report one progress call per module; edit_modules names the first failing module in
//     module order;
//   - BF16 narrowing equals Eigen's conversion bit for bit on every upper half and the rounding
//     boundaries below it (a truncating conversion is caught), and encode_elements reports the
//     first finite value that became inf.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/matrix.hpp"
#include "lola/canon/canonical_form.hpp"
#include "lola/canon/canonicalize_adapter.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/encoded_adapter.hpp"
#include "lola/io/load.hpp"
#include "lola/ops/edit_modules.hpp"
#include "lola/ops/resize.hpp"
#include "lola/ops/resize_adapter.hpp"
#include "support/adapter_module.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"
#include "support/test_support.hpp"

namespace {

namespace io = lola::io;
using lola_test::contains;
using lola_test::make_module;
using lola_test::temp_dir;
using lola_test::thrown_by;

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A rows×cols factor of i.i.d. normal entries with standard deviation sigma.
Eigen::MatrixXd random_factor(int rows, int cols, double sigma, std::mt19937_64& rng) {
  return sigma * lola_test::gaussian<double>(rows, cols, rng);
}

/// A PEFT adapter of every module kind lola writes: linear (r = 16 and r = 4), a conv kernel
/// (A r×in×kh×kw, B out×r×1×1), an embedding, a DoRA magnitude on one module, and a tensor that is
/// no LoRA factor (passthrough).
io::adapter<double> peft_adapter(io::dtype t, std::mt19937_64& rng) {
  io::adapter<double> a;
  a.format = io::adapter_format::peft;
  const auto add = [&](const std::string& name, int d, int r, int k, double scale) -> io::adapter_module<double>& {
    a.modules.push_back(make_module<double>("base_model.model." + name, random_factor(d, r, 0.125, rng),
                                            random_factor(r, k, 0.125, rng), scale, t));
    return a.modules.back();
  };
  add("layers.0.q_proj", 96, 16, 80, 2.0);
  auto& v = add("layers.0.v_proj", 40, 4, 64, 2.0);
  v.extras.push_back(io::tensor::from_matrix(v.name + ".lora_magnitude_vector", t, {40},
                                             random_factor(40, 1, 1.0, rng).cwiseAbs()));
  auto& conv = add("unet.conv_in", 24, 4, 3 * 3 * 3, 2.0);
  conv.kind = io::module_kind::conv;
  conv.A_shape = {4, 3, 3, 3};
  conv.B_shape = {24, 4, 1, 1};
  auto& embedding = add("embed_tokens", 32, 4, 50, 2.0);
  embedding.kind = io::module_kind::embedding;
  embedding.transposed = true;
  // κ(B) ≈ 1e3: off the Gram route, so whole-adapter edits decompose it alone (Householder).
  auto& ill = add("layers.1.k_proj", 48, 6, 40, 0.5);
  ill.B.col(1) = ill.B.col(0) + 1e-3 * ill.B.col(2);
  a.passthrough.push_back(io::tensor::from_matrix("base_model.model.score.weight", io::dtype::F32, {2, 8},
                                                  random_factor(2, 8, 1.0, rng)));
  return a;
}

/// The same linear modules as a kohya file (scales from α = s·r).
io::adapter<double> kohya_adapter(io::dtype t, std::mt19937_64& rng) {
  io::adapter<double> a;
  a.format = io::adapter_format::kohya;
  a.modules.push_back(make_module<double>("lora_unet_down_blocks_0_attn_to_q", random_factor(64, 8, 0.125, rng),
                                          random_factor(8, 48, 0.125, rng), 0.5, t));
  a.modules.push_back(make_module<double>("lora_te_text_model_encoder_layers_0_mlp_fc1",
                                          random_factor(72, 4, 0.125, rng), random_factor(4, 40, 0.125, rng),
                                          1.0, t));
  return a;
}

/// Where a save in `form` goes inside `dir`: the directory dir/name, or the file dir/name/a.safetensors
/// (its adapter_config.json beside it, so each file gets a directory of its own).
std::string place(const temp_dir& dir, const std::string& name, io::save_form form) {
  if (form == io::save_form::directory) return dir / name;
  std::filesystem::create_directory(dir / name);
  return dir / name + "/a.safetensors";
}

/// The files a save in `form` wrote at `path` (the config too), concatenated with separators.
std::string saved_bytes(const std::string& path, io::save_form form) {
  const std::string folder = form == io::save_form::file ? path.substr(0, path.rfind('/')) : path;
  const std::string weights = form == io::save_form::file ? path : folder + "/adapter_model.safetensors";
  return bytes_of(weights) + "\n--\n" + bytes_of(folder + "/adapter_config.json");
}

/// Saves `original`, then edits every module of the file twice — through load_adapter<double> and
/// adapter_module::set_factors, and through adapter_view and encoded_module::set_factors — and
/// returns both saved outputs. edit(e, m) maps module m's low-rank expression e to its new (B, A).
template <class Edit>
std::pair<std::string, std::string> both_outputs(const io::adapter<double>& original, io::save_form form,
                                                 Edit edit) {
  temp_dir dir;
  const std::string in = place(dir, "in", form);
  io::save_adapter(original, in, form);

  auto decoded = io::load_adapter<double>(in);
  for (auto& m : decoded.modules) {
    const auto [B, A] = edit(m.delta(), m);
    m.set_factors(B, A, m.scale);
  }
  const std::string decoded_path = place(dir, "decoded", form);
  io::save_adapter(decoded, decoded_path, form);

  const auto view = io::adapter_view::open(in);
  auto encoded = io::encoded_adapter::copy_of(view);
  for (std::size_t i = 0; i < view.modules.size(); ++i) {
    const auto& m = view.modules[i];
    m.visit([&](const auto& B, const auto& A) {
      using lola::detail::as_compute;
      const auto [new_B, new_A] = edit(lola::factor(as_compute<double>(B), as_compute<double>(A), m.scale), m);
      encoded.modules[i].set_factors(new_B, new_A, m.scale);
    });
  }
  const std::string encoded_path = place(dir, "encoded", form);
  io::save_adapter(encoded, encoded_path, form);
  return {saved_bytes(decoded_path, form), saved_bytes(encoded_path, form)};
}

/// The files save_adapter writes for `edited` in `form`, as saved_bytes reads them.
std::string saved_bytes_of(const io::encoded_adapter& edited, io::save_form form) {
  temp_dir dir;
  const std::string out = place(dir, "out", form);
  io::save_adapter(edited, out, form);
  return saved_bytes(out, form);
}

/// Options that read every module's factors on visit (factor_reads::on_visit; the default reads
/// these small modules at open).
io::load_options every_module_on_visit() {
  io::load_options o;
  o.min_bytes_read_on_visit = 0;
  return o;
}

using factors = std::pair<Eigen::MatrixXd, Eigen::MatrixXd>;

const auto unchanged = [](const auto& e, const auto&) {
  return factors(lola::detail::as_compute<double>(e.B()), lola::detail::as_compute<double>(e.A()));
};
const auto canonical_left = [](const auto& e, const auto&) {
  const auto c = lola::canonicalize(e, lola::canonical_form::left);
  return factors(c.factors.B(), c.factors.A());
};
const auto canonical_balanced = [](const auto& e, const auto&) {
  const auto c = lola::canonicalize(e, lola::canonical_form::balanced);
  return factors(c.factors.B(), c.factors.A());
};
const auto resized = [](const auto& e, const auto&) {
  const auto r = lola::resize(e, lola::rank_rule::fixed(2));
  return factors(r.factors.B(), r.factors.A());
};

}  // namespace

TEST_SUITE("io.encoded_adapter") {
  TEST_CASE("saved unchanged, an encoded copy writes the decoded adapter's bytes") {
    std::mt19937_64 rng(3);
    for (auto t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      const auto [decoded, encoded] = both_outputs(peft_adapter(t, rng), io::save_form::directory, unchanged);
      CHECK(decoded == encoded);
      const auto [k_decoded, k_encoded] = both_outputs(kohya_adapter(t, rng), io::save_form::file, unchanged);
      CHECK(k_decoded == k_encoded);
    }
  }

  TEST_CASE("canonical forms and a resize through encoded modules: the same files, byte for byte") {
    std::mt19937_64 rng(5);
    for (auto t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      const auto a = peft_adapter(t, rng);
      for (auto form : {io::save_form::directory, io::save_form::file}) {
        const auto [left_d, left_e] = both_outputs(a, form, canonical_left);
        CHECK(left_d == left_e);
        const auto [balanced_d, balanced_e] = both_outputs(a, form, canonical_balanced);
        CHECK(balanced_d == balanced_e);
        const auto [resized_d, resized_e] = both_outputs(a, form, resized);
        CHECK(resized_d == resized_e);
      }
      const auto k = kohya_adapter(t, rng);
      const auto [kd, ke] = both_outputs(k, io::save_form::file, resized);
      CHECK(kd == ke);
    }
  }

  TEST_CASE("factors an F16 file cannot hold are fitted by powers of two on both paths alike") {
    std::mt19937_64 rng(7);
    io::adapter<double> a;
    a.modules.push_back(make_module<double>("base_model.model.big", random_factor(64, 4, 125.0, rng),
                                            random_factor(4, 48, 125.0, rng), 1.0, io::dtype::F16));
    // U·Σ of the left form exceeds F16's largest finite value 65504 by far: the fit must move
    // powers of two into A (entries of Vᵀ are at most 1).
    const auto c = lola::canonicalize(a.modules[0].delta(), lola::canonical_form::left);
    REQUIRE(c.factors.B().cwiseAbs().maxCoeff() > 4 * 65504.0);
    const auto [decoded, encoded] = both_outputs(a, io::save_form::directory, canonical_left);
    CHECK(decoded == encoded);
    temp_dir dir;
    io::save_adapter(a, dir / "in", io::save_form::directory);
    const auto view = io::adapter_view::open(dir / "in");
    auto out = io::encoded_adapter::copy_of(view);
    out.modules[0].set_factors(c.factors.B(), c.factors.A(), 1.0);
    io::save_adapter(out, dir / "out", io::save_form::directory);
    const auto back = io::load_adapter<double>(dir / "out");
    const auto& m = back.modules[0];
    CHECK(m.B.cwiseAbs().maxCoeff() <= 65504.0);
    // ΔW kept to F16's rounding: |Δ(s·B·A)| ≤ 2·2⁻¹¹·|s·B|·|A| entry-wise (both factors rounded once).
    const Eigen::MatrixXd want = c.factors.B() * c.factors.A();
    const Eigen::MatrixXd got = m.scale * m.B * m.A;
    const Eigen::MatrixXd bound = 2 * std::ldexp(1.0, -11) * (m.scale * m.B.cwiseAbs()) * m.A.cwiseAbs();
    CHECK(((got - want).cwiseAbs().array() <= bound.array()).all());
  }

  TEST_CASE("the comparison can fail: one module edited differently changes the bytes") {
    std::mt19937_64 rng(11);
    const auto a = peft_adapter(io::dtype::F32, rng);
    std::size_t calls = 0;
    // The second call of the edit (the view path's first module) scales B by 1 + 2⁻²⁰.
    const auto perturbed = [&](const auto& e, const auto& m) {
      auto f = canonical_left(e, m);
      if (++calls == a.modules.size() + 1) f.first *= 1 + std::ldexp(1.0, -20);
      return f;
    };
    const auto [decoded, encoded] = both_outputs(a, io::save_form::directory, perturbed);
    CHECK(decoded != encoded);
  }

  TEST_CASE("whole adapters: canonicalize_adapter and resize_adapter write the module-by-module edit") {
    std::mt19937_64 rng(17);
    for (auto t : {io::dtype::F32, io::dtype::BF16, io::dtype::F16}) {
      CAPTURE(io::dtype_name(t));
      const auto a = peft_adapter(t, rng);
      temp_dir dir;
      io::save_adapter(a, dir / "in", io::save_form::directory);
      const auto view = io::adapter_view::open(dir / "in");
      const std::string left = both_outputs(a, io::save_form::directory, canonical_left).first;
      const std::string balanced = both_outputs(a, io::save_form::directory, canonical_balanced).first;
      const std::string resized_2 = both_outputs(a, io::save_form::directory, resized).first;
      for (int threads : {1, 2}) {
        CAPTURE(threads);
        std::atomic<std::size_t> calls{0}, modules{0};
        lola::module_pass pass;
        pass.ex.threads = threads;
        pass.module_done = [&](std::size_t n) {
          ++calls;
          modules = n;
        };
        const auto c_left = lola::canonicalize_adapter(view, lola::canonical_form::left, pass);
        CHECK(saved_bytes_of(c_left.adapter, io::save_form::directory) == left);
        CHECK(c_left.degenerate == 0);
        const auto c_balanced = lola::canonicalize_adapter(view, lola::canonical_form::balanced, pass);
        CHECK(saved_bytes_of(c_balanced.adapter, io::save_form::directory) == balanced);
        const auto r = lola::resize_adapter(view, lola::rank_rule::fixed(2), lola::canonical_form::left, pass);
        CHECK(saved_bytes_of(r.adapter, io::save_form::directory) == resized_2);
        CHECK(calls == 3 * view.modules.size());
        CHECK(modules == view.modules.size());
        // The retained fractions are resize's, module by module.
        REQUIRE(r.retained_fro_fraction.size() == view.modules.size());
        for (std::size_t i = 0; i < view.modules.size(); ++i)
          view.modules[i].visit([&](const auto& B, const auto& A) {
            using lola::detail::as_compute;
            const auto one = lola::resize(lola::factor(as_compute<double>(B), as_compute<double>(A),
                                                       view.modules[i].scale),
                                          lola::rank_rule::fixed(2));
            CHECK(r.retained_fro_fraction[i] == one.retained_fro_fraction);
          });
      }
      // The comparison can fail: another rank writes other bytes.
      const auto r3 = lola::resize_adapter(view, lola::rank_rule::fixed(3));
      CHECK(saved_bytes_of(r3.adapter, io::save_form::directory) != resized_2);
      // Every factor read on visit (by the edit, once): the same files.
      const auto on_visit = io::adapter_view::open(dir / "in", every_module_on_visit(), io::factor_reads::on_visit);
      const auto c_visit = lola::canonicalize_adapter(on_visit, lola::canonical_form::left);
      CHECK(saved_bytes_of(c_visit.adapter, io::save_form::directory) == left);
      const auto r_visit = lola::resize_adapter(on_visit, lola::rank_rule::fixed(2), lola::canonical_form::left);
      CHECK(saved_bytes_of(r_visit.adapter, io::save_form::directory) == resized_2);
    }
  }

  TEST_CASE("edit_modules: a module the edit does not set keeps its factors, read at open or on visit") {
    std::mt19937_64 rng(23);
    temp_dir dir;
    io::save_adapter(peft_adapter(io::dtype::BF16, rng), dir / "in", io::save_form::directory);
    for (const auto reads : {io::factor_reads::at_open, io::factor_reads::on_visit}) {
      const auto view = io::adapter_view::open(dir / "in", every_module_on_visit(), reads);
      REQUIRE(view.modules.size() >= 2);
      // Even modules resized to rank 2, odd ones left as they are.
      const auto edited = lola::edit_modules(view, [](std::size_t i, const auto& e, io::encoded_module& m) {
        if (i % 2 != 0) return;
        const auto r = lola::resize(e, lola::rank_rule::fixed(2));
        m.set_factors(r.factors.B(), r.factors.A(), m.scale);
      });
      auto expected = io::encoded_adapter::copy_of(view);
      for (std::size_t i = 0; i < view.modules.size(); i += 2)
        view.modules[i].visit([&](const auto& B, const auto& A) {
          using lola::detail::as_compute;
          const auto r = lola::resize(lola::factor(as_compute<double>(B), as_compute<double>(A), view.modules[i].scale),
                                      lola::rank_rule::fixed(2));
          expected.modules[i].set_factors(r.factors.B(), r.factors.A(), view.modules[i].scale);
        });
      for (std::size_t i = 0; i < view.modules.size(); ++i) CHECK(edited.modules[i].has_factors());
      CHECK(saved_bytes_of(edited, io::save_form::directory) == saved_bytes_of(expected, io::save_form::directory));
      // A frame holds no factor bytes until they are set.
      const auto frame = io::encoded_adapter::frame_of(view);
      CHECK_FALSE(frame.modules[0].has_factors());
      CHECK(frame.modules[0].A().data.empty());
      CHECK(frame.modules[0].B().shape == view.modules[0].B_shape);
    }
  }

  TEST_CASE("edit_modules: an edit's error names its module, the first in module order of several") {
    std::mt19937_64 rng(19);
    temp_dir dir;
    io::save_adapter(peft_adapter(io::dtype::BF16, rng), dir / "in", io::save_form::directory);
    const auto view = io::adapter_view::open(dir / "in");
    REQUIRE(view.modules.size() >= 4);
    for (int threads : {1, 2}) {
      lola::module_pass pass;
      pass.ex.threads = threads;
      const auto e = thrown_by([&] {
        lola::edit_modules(
            view,
            [](std::size_t i, const auto&, io::encoded_module&) {
              if (i == 1 || i == 3) throw lola::error(lola::error_code::numerical, "edit " + std::to_string(i));
            },
            pass);
      });
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(std::string(e.what()) == "lola: module \"" + view.modules[1].name + "\": edit 1");
    }
  }

  TEST_CASE("set_factors refuses other shapes and non-finite values, naming the module") {
    std::mt19937_64 rng(13);
    temp_dir dir;
    io::save_adapter(peft_adapter(io::dtype::BF16, rng), dir / "in", io::save_form::directory);
    const auto view = io::adapter_view::open(dir / "in");
    auto out = io::encoded_adapter::copy_of(view);
    auto& m = out.modules[0];
    const Eigen::MatrixXd B = Eigen::MatrixXd::Ones(m.rows(), 2), A = Eigen::MatrixXd::Ones(2, m.cols());
    const auto other_d = thrown_by([&] { m.set_factors(Eigen::MatrixXd::Ones(m.rows() + 1, 2), A, 1.0); });
    CHECK(other_d.code() == lola::error_code::shape_mismatch);
    CHECK(contains(other_d.what(), m.name));
    const auto ranks = thrown_by([&] { m.set_factors(B, Eigen::MatrixXd::Ones(3, m.cols()), 1.0); });
    CHECK(ranks.code() == lola::error_code::shape_mismatch);
    Eigen::MatrixXd nan_B = B;
    nan_B(1, 1) = std::numeric_limits<double>::quiet_NaN();
    const auto nan = thrown_by([&] { m.set_factors(nan_B, A, 1.0); });
    CHECK(nan.code() == lola::error_code::numerical);
    CHECK(contains(nan.what(), "module \"" + m.name + "\": B is not finite"));
    const auto scale = thrown_by([&] { m.set_factors(B, A, std::numeric_limits<double>::infinity()); });
    CHECK(contains(scale.what(), "the scale is not finite"));
    CHECK(m.rank() == view.modules[0].rank());  // a refused edit leaves the module as it was
    m.set_factors(B, A, 3.0);
    CHECK(m.rank() == 2);
    CHECK(m.B().shape == std::vector<std::uint64_t>{std::uint64_t(m.rows()), 2});
  }

  TEST_CASE("BF16 narrowing: Eigen's rounding bit for bit, and the first overflow reported") {
    const auto bits_of = [](Eigen::bfloat16 v) { return Eigen::numext::bit_cast<std::uint16_t>(v); };
    const auto float_of = [](std::uint32_t u) {
      float f;
      std::memcpy(&f, &u, sizeof f);
      return f;
    };
    // Each upper half with the lower halves at and around the rounding point (ties to even).
    long mismatches = 0, truncation_mismatches = 0;
    for (std::uint32_t hi = 0; hi < 0x10000u; ++hi)
      for (std::uint32_t lo : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0x4321u}) {
        const std::uint32_t u = hi << 16 | lo;
        const float f = float_of(u);
        const std::uint16_t want = bits_of(Eigen::bfloat16(f));
        mismatches += io::detail::narrow_to_bf16_bits(f) != want;
        truncation_mismatches += static_cast<std::uint16_t>(u >> 16) != want;
      }
    CHECK(mismatches == 0);
    CHECK(truncation_mismatches > 0);

    // inf stays inf and is not an overflow; 3.4e38 is finite and beyond BF16's range (≈ 3.3895e38).
    const double values[] = {1.0, std::numeric_limits<double>::infinity(), 3.4e38, 4e38,
                             std::numeric_limits<double>::quiet_NaN()};
    std::byte out[2 * 5];
    CHECK(io::encode_elements(values, 5, io::dtype::BF16, out) == 2);
    CHECK(io::encode_elements(values, 2, io::dtype::BF16, out) == 2);  // none: n
  }

  TEST_CASE("encode_elements in blocks: each value's bits as the one-value conversion, the first overflow past a block") {
    // 1000 values cross several of encode_elements' 256-value blocks. The reference is the same
    // function called on one value at a time (no block structure), which the narrowing test above
    // ties to Eigen's conversions.
    std::mt19937 rng(7);
    std::normal_distribution<double> normal(0.0, 3.0);
    std::vector<double> values(1000);
    for (auto& v : values) v = normal(rng);
    values[10] = std::numeric_limits<double>::infinity();  // inf as input: encoded as inf, not an overflow
    values[300] = -std::numeric_limits<double>::infinity();
    values[400] = std::numeric_limits<double>::quiet_NaN();
    for (const io::dtype t : {io::dtype::F64, io::dtype::F32, io::dtype::F16, io::dtype::BF16}) {
      CAPTURE(io::dtype_name(t));
      const std::size_t width = io::dtype_bits(t) / 8;
      std::vector<std::byte> blocked(values.size() * width), single(values.size() * width);
      CHECK(io::encode_elements(values.data(), values.size(), t, blocked.data()) == values.size());
      for (std::size_t i = 0; i < values.size(); ++i) io::encode_elements(&values[i], 1, t, single.data() + i * width);
      CHECK(blocked == single);
    }
    // A finite value beyond F16's range at 700, another at 900: the first is reported, and both are
    // written as inf like every other value.
    values[700] = 70000.0;
    values[900] = -1e6;
    std::vector<std::byte> out(values.size() * 2);
    CHECK(io::encode_elements(values.data(), values.size(), io::dtype::F16, out.data()) == 700);
    std::uint16_t at_900;
    std::memcpy(&at_900, out.data() + 2 * 900, 2);
    CHECK(at_900 == 0xFC00u);  // -inf
    values[900] = -3.4e39;  // beyond float: F32 and BF16 report it
    CHECK(io::encode_elements(values.data(), values.size(), io::dtype::F32, std::vector<std::byte>(4000).data()) == 900);
    CHECK(io::encode_elements(values.data(), values.size(), io::dtype::BF16, out.data()) == 900);
  }

  TEST_CASE("tensor::encode: column-major, wide, strided and expression inputs give the row-major bytes") {
    // encode reads a row-major matrix in place and anything else in tiles of at most 256 columns;
    // the bytes must not depend on the path. Shapes: B-like (tall, whole rows per tile), A-like
    // (wider than a tile: row segments), and a single row and column.
    std::mt19937 rng(3);
    std::normal_distribution<double> normal;
    for (const auto& [rows, cols] : std::vector<std::pair<lola::index, lola::index>>{{700, 16}, {5, 600}, {1, 300}, {513, 1}}) {
      CAPTURE(rows);
      CAPTURE(cols);
      Eigen::MatrixXd m(rows, cols);
      for (lola::index j = 0; j < cols; ++j)
        for (lola::index i = 0; i < rows; ++i) m(i, j) = normal(rng);
      const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = m;
      const std::vector<std::uint64_t> shape{std::uint64_t(rows), std::uint64_t(cols)};
      for (const io::dtype t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16}) {
        CAPTURE(io::dtype_name(t));
        const auto want = io::tensor::from_matrix("w", t, shape, row_major).data;
        CHECK(io::tensor::from_matrix("w", t, shape, m).data == want);
        CHECK(io::tensor::from_matrix("w", t, shape, (m * 2.0) * 0.5).data == want);  // an expression
        Eigen::MatrixXd padded = Eigen::MatrixXd::Zero(rows + 3, cols);
        padded.topRows(rows) = m;
        CHECK(io::tensor::from_matrix("w", t, shape, padded.topRows(rows)).data == want);  // outer stride ≠ rows
        // A wrong transposition would differ (unless the matrix is a single row or column).
        if (rows > 1 && cols > 1) {
          const Eigen::MatrixXd transposed_values = Eigen::Map<const Eigen::MatrixXd>(row_major.data(), rows, cols);
          CHECK(io::tensor::from_matrix("w", t, shape, transposed_values).data != want);
        }
      }
    }
  }
}
