// io::adapter_view (issue 13, item 5): factors read as the file stores them, widened as the kernels
// read them. What is asserted:
//   - the widening of every F16 and BF16 bit pattern equals Eigen's conversion, bit for bit (and a
//     deliberately wrong widening, without the 2^112 rescaling, is caught by the same comparison);
//   - the stored-bits finiteness scan finds the first NaN or inf in each dtype;
//   - σ, U and Vᵀ of every module computed from the view equal those computed from load_adapter's
//     decoded factors bit for bit, in float and in double, for F32, F16, BF16 and F64 files, ranks
//     that take the fixed-rank kernels and ranks that do not, an ill-conditioned factor (the
//     Householder route), a module with mixed dtypes and a tensor at an odd offset (both decoded
//     per module), and a kohya file;
//   - the view holds no decoded copy: a module's maps point into the file image;
//   - a non-finite factor or extra is refused with load_adapter's message;
//   - featurize (every kind) and the GL-net forward over views equal those over the decoded
//     adapters, bit for bit.
// Factors read on visit (factor_reads::on_visit), the same properties, and:
//   - modules under load_options::min_bytes_read_on_visit are read and checked at open, the others
//     on visit (the other cases set it to 0: every module on visit);
//   - open() reads no factor (the modules hold no bytes; the image's factor bytes are zeros), the
//     tensors around them (alphas, extras, passthrough, a LyCORIS module kept as passthrough) are
//     read whole;
//   - a non-finite factor is refused by the visit with load_adapter's message, a non-finite extra
//     by open(); of several failing modules σ reports the first in module order, whichever of its
//     passes (batched Gram route, module by module) met it;
//   - a file truncated or rewritten in place after open is error_code::io "changed while being
//     read" at the next visit; one replaced by a rename is still read as it was opened;
//   - a visit inside a visit (another module) leaves the outer maps intact; encoded_adapter's copy
//     is byte-identical to the one read at open.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/features/adapter_spectra.hpp"
#include "lola/features/featurize.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/encoded_adapter.hpp"
#include "lola/io/load.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "lola/nn/gl_net.hpp"
#include "support/adapter_module.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace io = lola::io;
using lola_test::contains;
using lola_test::make_module;
using lola_test::temp_dir;
using lola_test::thrown_by;

bool same_bits(float a, float b) {
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

/// A d×r factor with i.i.d. normal entries of scale 1/8 (normal in every dtype).
Eigen::MatrixXd random_factor(int rows, int cols, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 0.125);
  Eigen::MatrixXd x(rows, cols);
  for (double& v : x.reshaped()) v = normal(rng);
  return x;
}

/// Modules that reach every kernel: r = 16 (fixed-rank kernels), r = 6 (Eigen's product and the
/// 4×4 tiles with a remainder), d not a multiple of 4, an ill-conditioned B (two columns equal to
/// 1e-6 relative: κ ≈ 1e6, the Householder route), and a wide module (d < r).
io::adapter<float> test_adapter(io::dtype t, std::mt19937_64& rng) {
  io::adapter<float> a;
  a.format = io::adapter_format::peft;
  const auto add = [&](const std::string& name, Eigen::MatrixXd B, const Eigen::MatrixXd& A, double scale) {
    a.modules.push_back(make_module<float>("base_model.model." + name, B, A, scale, t));
  };
  add("layers.0.q_proj", random_factor(301, 16, rng), random_factor(16, 257, rng), 2.0);
  add("layers.0.v_proj", random_factor(130, 6, rng), random_factor(6, 96, rng), 0.5);
  Eigen::MatrixXd ill = random_factor(200, 8, rng);
  ill.col(1) = ill.col(0) + 1e-6 * ill.col(2);
  add("layers.1.q_proj", ill, random_factor(8, 150, rng), 1.0);
  add("layers.1.v_proj", random_factor(5, 8, rng), random_factor(8, 64, rng), 1.5);
  return a;
}

template <class S, class Module>
lola::low_rank_svd<S> svd_of(const Module& m) {
  return m.visit([&](const auto& B, const auto& A) {
    using lola::detail::as_compute;
    lola::low_rank_svd<S> svd;
    svd.compute_factors(as_compute<S>(B), as_compute<S>(A), static_cast<S>(m.scale),
                        lola::compute_u | lola::compute_vt);
    return svd;
  });
}

/// Options that read every module's factors on visit (factor_reads::on_visit; the default reads
/// modules under 16 KiB, as most of these files' are, at open).
io::load_options all_on_visit() {
  io::load_options o;
  o.min_bytes_read_on_visit = 0;
  return o;
}

/// σ, U and Vᵀ of every module from the view and from load_adapter<S> are the same bits.
template <class S>
void check_view_equals_decoded(const std::string& path, io::factor_reads reads = io::factor_reads::at_open) {
  const auto decoded = io::load_adapter<S>(path);
  const auto view = io::adapter_view::open(path, all_on_visit(), reads);
  REQUIRE(view.modules.size() == decoded.modules.size());
  CHECK(view.format == decoded.format);
  CHECK(view.warnings == decoded.warnings);
  const auto sigma_view = lola::adapter_singular_values<S>(view);
  const auto sigma_decoded = lola::adapter_singular_values<S>(decoded);
  for (std::size_t i = 0; i < view.modules.size(); ++i) {
    CAPTURE(view.modules[i].name);
    CHECK(view.modules[i].name == decoded.modules[i].name);
    CHECK(view.modules[i].scale == decoded.modules[i].scale);
    CHECK(sigma_view[i] == sigma_decoded[i]);
    const auto a = svd_of<S>(view.modules[i]);
    const auto b = svd_of<S>(decoded.modules[i]);
    CHECK(a.singularValues() == b.singularValues());
    CHECK(a.matrixU() == b.matrixU());
    CHECK(a.matrixVt() == b.matrixVt());
  }
}

/// A safetensors image with the tensors at the given byte offsets, in the given order, no padding.
struct raw_tensor {
  std::string name, dtype, shape;
  std::string bytes;
};
std::string raw_image(const std::vector<raw_tensor>& tensors) {
  std::string header = "{", data;
  for (const auto& t : tensors) {
    if (header.size() > 1) header += ",";
    header += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + t.shape + ",\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + t.bytes.size()) + "]}";
    data += t.bytes;
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::string image(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return image + header + data;
}

std::string encoded(const Eigen::MatrixXd& m, io::dtype t) {
  std::string out(static_cast<std::size_t>(m.size()) * io::dtype_bits(t) / 8, '\0');
  const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = m;
  io::encode_elements(row_major.data(), static_cast<std::size_t>(m.size()), t, reinterpret_cast<std::byte*>(out.data()));
  return out;
}

void write_text(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_SUITE("io.adapter_view") {
  TEST_CASE("F16 and BF16 widen exactly: every bit pattern, as Eigen converts it") {
    int wrong = 0;
    for (std::uint32_t b = 0; b < 65536; ++b) {
      const auto bits = static_cast<std::uint16_t>(b);
      const float h = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
      const float f = lola::detail::widen_f16_bits(bits);
      if (std::isnan(h)) {
        CHECK(std::isnan(f));
      } else {
        CHECK(same_bits(f, h));
      }
      const float bh = static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits));
      const float bf = lola::detail::widen_bf16_bits(bits);
      if (std::isnan(bh)) {
        CHECK(std::isnan(bf));
      } else {
        CHECK(same_bits(bf, bh));
      }
      // The wrong variant: the shifted bits without the 2^112 rescaling.
      const float unscaled = lola::detail::float_from_bits(std::uint32_t(bits & 0x7FFFu) << 13);
      if (!std::isnan(h) && !std::isinf(h) && h != 0 && std::abs(h) != unscaled) ++wrong;
    }
    CHECK(wrong > 60000);  // every nonzero finite half but none would be wrong without it
  }

  TEST_CASE("the stored-bits scan finds the first value that is not finite, in every dtype") {
    for (const auto t : {io::dtype::F64, io::dtype::F32, io::dtype::F16, io::dtype::BF16}) {
      CAPTURE(io::dtype_name(t));
      Eigen::MatrixXd x = Eigen::MatrixXd::Constant(1, 9000, 0.75);
      const auto finite = encoded(x, t);
      CHECK(io::first_non_finite_stored(reinterpret_cast<const std::byte*>(finite.data()), t, 9000) == 9000);
      x(0, 8999) = -INFINITY;
      x(0, 4100) = NAN;
      x(0, 4500) = INFINITY;
      const auto planted = encoded(x, t);
      CHECK(io::first_non_finite_stored(reinterpret_cast<const std::byte*>(planted.data()), t, 9000) == 4100);
      CHECK(io::first_non_finite_stored(reinterpret_cast<const std::byte*>(planted.data()), t, 4100) == 4100);
    }
  }

  TEST_CASE("σ, U and Vᵀ from the view equal those from the decoded adapter, bit for bit") {
    std::mt19937_64 rng(20261206);
    for (const auto t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      temp_dir dir;
      io::save_adapter(test_adapter(t, rng), dir / "a", io::save_form::directory);
      check_view_equals_decoded<double>(dir / "a");
      check_view_equals_decoded<float>(dir / "a");
    }
  }

  TEST_CASE("the view holds no decoded copy: the factors it visits are the file's bytes") {
    std::mt19937_64 rng(1);
    temp_dir dir;
    io::save_adapter(test_adapter(io::dtype::BF16, rng), dir / "a", io::save_form::directory);
    auto opened = io::adapter_view::open(dir / "a");
    const auto view = std::move(opened);  // the views survive a move
    for (const auto& m : view.modules) {
      const bool in_file = m.visit([&](const auto& B, const auto& A) {
        using T = typename std::decay_t<decltype(B)>::Scalar;
        return std::is_same_v<T, Eigen::bfloat16> &&
               static_cast<const void*>(B.data()) == static_cast<const void*>(m.B.data) &&
               static_cast<const void*>(A.data()) == static_cast<const void*>(m.A.data);
      });
      CHECK(in_file);
    }
    check_view_equals_decoded<double>(dir / "a");
  }

  TEST_CASE("mixed dtypes and a tensor at an odd offset are decoded per module, with equal results") {
    std::mt19937_64 rng(3);
    const Eigen::MatrixXd B = random_factor(40, 4, rng), A = random_factor(4, 24, rng);
    const Eigen::MatrixXd B2 = random_factor(36, 4, rng), A2 = random_factor(4, 20, rng);
    // A one-byte U8 tensor first puts every following tensor at an odd offset.
    const std::string image = raw_image({
        {"base_model.model.pad", "U8", "[1]", std::string(1, '\x01')},
        {"base_model.model.odd.lora_A.weight", "F16", "[4,24]", encoded(A, io::dtype::F16)},
        {"base_model.model.odd.lora_B.weight", "F16", "[40,4]", encoded(B, io::dtype::F16)},
        {"base_model.model.mixed.lora_A.weight", "BF16", "[4,20]", encoded(A2, io::dtype::BF16)},
        {"base_model.model.mixed.lora_B.weight", "F32", "[36,4]", encoded(B2, io::dtype::F32)},
    });
    temp_dir dir;
    write_text(dir / "adapter_model.safetensors", image);
    const auto view = io::adapter_view::open(dir / "adapter_model.safetensors");
    REQUIRE(view.modules.size() == 2);
    CHECK(reinterpret_cast<std::uintptr_t>(view.modules[0].A.data) % 2 == 1);
    CHECK_FALSE(view.modules[0].A.readable_as<Eigen::half>());
    CHECK(view.modules[1].B.type != view.modules[1].A.type);
    CHECK(view.passthrough.size() == 1);
    check_view_equals_decoded<double>(dir / "adapter_model.safetensors");
    check_view_equals_decoded<float>(dir / "adapter_model.safetensors");
  }

  TEST_CASE("a kohya file: scales from alphas, σ equal to the decoded adapter's") {
    std::mt19937_64 rng(4);
    io::adapter<float> a;
    a.format = io::adapter_format::kohya;
    a.modules.push_back(make_module<float>("lora_unet_down_blocks_0_attn1_to_q", random_factor(64, 8, rng),
                                           random_factor(8, 48, rng), 0.5, io::dtype::F16));
    temp_dir dir;
    io::save_adapter(a, dir / "k.safetensors", io::save_form::file);
    const auto view = io::adapter_view::open(dir / "k.safetensors");
    CHECK(view.format == io::adapter_format::kohya);
    CHECK(view.modules[0].scale == 0.5);
    check_view_equals_decoded<double>(dir / "k.safetensors");
  }

  TEST_CASE("a factor or extra that is not finite is refused with load_adapter's message") {
    std::mt19937_64 rng(5);
    const Eigen::MatrixXd B = random_factor(12, 4, rng), A = random_factor(4, 10, rng);
    for (const auto t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      Eigen::MatrixXd bad_A = A;
      bad_A(2, 7) = NAN;
      Eigen::VectorXd magnitude = Eigen::VectorXd::Ones(12);
      magnitude(3) = INFINITY;
      temp_dir dir;
      const std::string factor_path = dir / "factor.safetensors", extra_path = dir / "extra.safetensors";
      write_text(factor_path, raw_image({{"m.lora_A.weight", std::string(io::dtype_name(t)), "[4,10]", encoded(bad_A, t)},
                                         {"m.lora_B.weight", std::string(io::dtype_name(t)), "[12,4]", encoded(B, t)}}));
      write_text(extra_path, raw_image({{"m.lora_A.weight", std::string(io::dtype_name(t)), "[4,10]", encoded(A, t)},
                                        {"m.lora_B.weight", std::string(io::dtype_name(t)), "[12,4]", encoded(B, t)},
                                        {"m.lora_magnitude_vector", "F32", "[12]", encoded(magnitude, io::dtype::F32)}}));
      for (const auto& path : {factor_path, extra_path}) {
        const auto from_view = thrown_by([&] { io::adapter_view::open(path); });
        const auto from_load = thrown_by([&] { io::load_adapter<double>(path); });
        CHECK(from_view.code() == lola::error_code::invalid_file);
        CHECK(std::string(from_view.what()) == from_load.what());
        CHECK(contains(from_view.what(), "not finite"));
      }
    }
  }

  TEST_CASE("featurize and the GL-net forward over views equal those over decoded adapters, bit for bit") {
    std::mt19937_64 rng(6);
    for (const auto t : {io::dtype::F32, io::dtype::BF16}) {
      CAPTURE(io::dtype_name(t));
      temp_dir dir;
      io::save_adapter(test_adapter(t, rng), dir / "a", io::save_form::directory);
      io::save_adapter(test_adapter(t, rng), dir / "b", io::save_form::directory);
      // The O-Align template is a third adapter: aligning an adapter to itself takes the Gram
      // kernel for BᵀB̄ (one operand), its view the cross-Gram (two), equal only to rounding.
      const auto templ = test_adapter(t, rng);
      const auto da = io::load_adapter<double>(dir / "a"), db = io::load_adapter<double>(dir / "b");
      for (const auto reads : {io::factor_reads::at_open, io::factor_reads::on_visit}) {
      CAPTURE(int(reads));
      const auto va = io::adapter_view::open(dir / "a", all_on_visit(), reads),
                 vb = io::adapter_view::open(dir / "b", all_on_visit(), reads);
      const std::vector<const io::adapter<double>*> decoded = {&da, &db};
      const std::vector<const io::adapter_view*> views = {&va, &vb};
      for (auto kind : {lola::feature_kind::raw, lola::feature_kind::svd, lola::feature_kind::dense,
                        lola::feature_kind::align, lola::feature_kind::canonical}) {
        const std::string kind_name = lola::to_string(kind);
        CAPTURE(kind_name);
        lola::featurize_options<double> options;
        options.kind = kind;
        options.fold_scale = true;
        const io::adapter<double> templ_double = [&] {
          io::adapter<double> out;
          for (const auto& m : templ.modules)
            out.modules.push_back(make_module<double>(m.name, m.B, m.A, m.scale, t));
          return out;
        }();
        options.templ = &templ_double;
        CHECK(lola::featurize(views, options) == lola::featurize(decoded, options));
      }
      std::vector<lola::index> n, m;
      for (std::size_t j : io::lexicographic_module_order(da)) {
        n.push_back(da.modules[j].rows());
        m.push_back(da.modules[j].cols());
      }
      const auto net = lola::nn::gl_net<double>::random(n, m, 6, 2, 8, 3, lola::nn::pooling::flatten, rng);
      lola::nn::gl_net_options options;
      options.fold_scale = true;
      const Eigen::MatrixXd from_views = net.forward(views, options), from_decoded = net.forward(decoded, options);
      CHECK(from_views == from_decoded);
      CHECK(net.forward(va, options) == net.forward(da, options));
      }
    }
  }

  TEST_CASE("factors read on visit: the results of factors read at open, bit for bit, and no factor read by open") {
    std::mt19937_64 rng(7);
    for (const auto t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      temp_dir dir;
      io::save_adapter(test_adapter(t, rng), dir / "a", io::save_form::directory);
      check_view_equals_decoded<double>(dir / "a", io::factor_reads::on_visit);
      check_view_equals_decoded<float>(dir / "a", io::factor_reads::on_visit);
      const auto view = io::adapter_view::open(dir / "a", all_on_visit(), io::factor_reads::on_visit);
      for (const auto& m : view.modules) {
        CAPTURE(m.name);
        CHECK(m.deferred != nullptr);
        CHECK(m.A.data == nullptr);
        CHECK(m.B.data == nullptr);
        // Nothing was read into the image where the factors lie.
        for (const auto* f : {m.A.tensor, m.B.tensor}) {
          const std::byte* bytes = view.file().bytes(*f);
          CHECK(std::all_of(bytes, bytes + f->byte_count(), [](std::byte b) { return b == std::byte{0}; }));
        }
      }
    }
    // Odd offsets, mixed dtypes and a passthrough tensor; a kohya file with alphas, a DoRA scale and
    // a LyCORIS module (its lora_down / lora_up kept as passthrough: the reader reads them whole).
    const Eigen::MatrixXd B = random_factor(40, 4, rng), A = random_factor(4, 24, rng);
    const Eigen::MatrixXd B2 = random_factor(36, 4, rng), A2 = random_factor(4, 20, rng);
    temp_dir dir;
    write_text(dir / "odd.safetensors",
               raw_image({{"base_model.model.pad", "U8", "[1]", std::string(1, '\x01')},
                          {"base_model.model.odd.lora_A.weight", "F16", "[4,24]", encoded(A, io::dtype::F16)},
                          {"base_model.model.odd.lora_B.weight", "F16", "[40,4]", encoded(B, io::dtype::F16)},
                          {"base_model.model.mixed.lora_A.weight", "BF16", "[4,20]", encoded(A2, io::dtype::BF16)},
                          {"base_model.model.mixed.lora_B.weight", "F32", "[36,4]", encoded(B2, io::dtype::F32)}}));
    check_view_equals_decoded<double>(dir / "odd.safetensors", io::factor_reads::on_visit);
    const Eigen::VectorXd alpha = Eigen::VectorXd::Constant(1, 2.0), dora = Eigen::VectorXd::LinSpaced(40, 0.5, 1.5);
    write_text(dir / "kohya.safetensors",
               raw_image({{"lora_unet_a.alpha", "F32", "[]", encoded(alpha, io::dtype::F32)},
                          {"lora_unet_a.dora_scale", "F32", "[40]", encoded(dora, io::dtype::F32)},
                          {"lora_unet_a.lora_down.weight", "BF16", "[4,24]", encoded(A, io::dtype::BF16)},
                          {"lora_unet_a.lora_up.weight", "BF16", "[40,4]", encoded(B, io::dtype::BF16)},
                          {"lora_unet_b.lora_down.weight", "F16", "[4,20]", encoded(A2, io::dtype::F16)},
                          {"lora_unet_b.lora_mid.weight", "F16", "[4,4]", encoded(Eigen::MatrixXd::Identity(4, 4), io::dtype::F16)},
                          {"lora_unet_b.lora_up.weight", "F16", "[36,4]", encoded(B2, io::dtype::F16)}}));
    check_view_equals_decoded<double>(dir / "kohya.safetensors", io::factor_reads::on_visit);
    const auto at_open = io::adapter_view::open(dir / "kohya.safetensors");
    const auto on_visit = io::adapter_view::open(dir / "kohya.safetensors", all_on_visit(), io::factor_reads::on_visit);
    REQUIRE(on_visit.modules.size() == 1);
    CHECK(on_visit.modules[0].scale == 0.5);  // α / r = 2 / 4
    CHECK(on_visit.modules[0].extras == at_open.modules[0].extras);
    REQUIRE(on_visit.passthrough.size() == at_open.passthrough.size());
    for (std::size_t i = 0; i < on_visit.passthrough.size(); ++i) {
      CAPTURE(at_open.passthrough[i].name);
      CHECK(on_visit.passthrough[i].name == at_open.passthrough[i].name);
      CHECK(on_visit.passthrough[i].data == at_open.passthrough[i].data);
    }
    // The encoded copy (what canonicalize and resize start from) is the same bytes.
    for (const std::string name : {"odd.safetensors", "kohya.safetensors"}) {
      CAPTURE(name);
      const auto a = io::encoded_adapter::copy_of(io::adapter_view::open(dir / name));
      const auto b =
          io::encoded_adapter::copy_of(io::adapter_view::open(dir / name, all_on_visit(), io::factor_reads::on_visit));
      REQUIRE(a.modules.size() == b.modules.size());
      for (std::size_t i = 0; i < a.modules.size(); ++i) {
        CHECK(a.modules[i].A().data == b.modules[i].A().data);
        CHECK(a.modules[i].B().data == b.modules[i].B().data);
        REQUIRE(a.modules[i].extras.size() == b.modules[i].extras.size());
        for (std::size_t e = 0; e < a.modules[i].extras.size(); ++e)
          CHECK(a.modules[i].extras[e].data == b.modules[i].extras[e].data);
      }
    }
  }

  TEST_CASE("factors read on visit: modules under min_bytes_read_on_visit are read and checked at open") {
    // small: 8×4 and 4×8 F32, 256 bytes; large: 64×16 and 16×48 F32, 7 KiB. Threshold 1 KiB.
    std::mt19937_64 rng(12);
    const Eigen::MatrixXd Bs = random_factor(8, 4, rng), As = random_factor(4, 8, rng);
    const Eigen::MatrixXd Bl = random_factor(64, 16, rng), Al = random_factor(16, 48, rng);
    const auto f32 = io::dtype::F32;
    auto image = [&](const Eigen::MatrixXd& small_A, const Eigen::MatrixXd& large_A) {
      return raw_image({{"large.lora_A.weight", "F32", "[16,48]", encoded(large_A, f32)},
                        {"large.lora_B.weight", "F32", "[64,16]", encoded(Bl, f32)},
                        {"small.lora_A.weight", "F32", "[4,8]", encoded(small_A, f32)},
                        {"small.lora_B.weight", "F32", "[8,4]", encoded(Bs, f32)}});
    };
    temp_dir dir;
    write_text(dir / "two.safetensors", image(As, Al));
    io::load_options options;
    options.min_bytes_read_on_visit = 1024;
    const auto view = io::adapter_view::open(dir / "two.safetensors", options, io::factor_reads::on_visit);
    const auto at_open = io::adapter_view::open(dir / "two.safetensors");
    REQUIRE(view.modules.size() == 2);
    const auto& large = view.modules[0];
    const auto& small = view.modules[1];
    REQUIRE(large.name == "large");
    CHECK(large.deferred != nullptr);
    CHECK(large.A.data == nullptr);
    CHECK(small.deferred == nullptr);
    REQUIRE(small.A.data != nullptr);
    CHECK(std::memcmp(small.A.data, at_open.modules[1].A.data, small.A.byte_count()) == 0);
    CHECK(std::memcmp(small.B.data, at_open.modules[1].B.data, small.B.byte_count()) == 0);
    CHECK(lola::adapter_singular_values<double>(view) == lola::adapter_singular_values<double>(at_open));
    // The default threshold (16 KiB) reads both at open; a non-finite small factor is refused by
    // open() with load_adapter's message, a non-finite large one by the visit.
    for (const auto& m : io::adapter_view::open(dir / "two.safetensors", {}, io::factor_reads::on_visit).modules)
      CHECK(m.deferred == nullptr);
    Eigen::MatrixXd bad = As;
    bad(2, 5) = NAN;
    write_text(dir / "small_nan.safetensors", image(bad, Al));
    const auto small_open =
        thrown_by([&] { io::adapter_view::open(dir / "small_nan.safetensors", options, io::factor_reads::on_visit); });
    CHECK(std::string(small_open.what()) ==
          thrown_by([&] { io::load_adapter<double>(dir / "small_nan.safetensors"); }).what());
    bad = Al;
    bad(9, 40) = INFINITY;
    write_text(dir / "large_inf.safetensors", image(As, bad));
    const auto deferred_inf =
        io::adapter_view::open(dir / "large_inf.safetensors", options, io::factor_reads::on_visit);
    CHECK(contains(thrown_by([&] { lola::adapter_singular_values<double>(deferred_inf); }).what(), "element [9, 40]"));
  }

  TEST_CASE("factors read on visit: a visit inside a visit keeps the outer factors") {
    std::mt19937_64 rng(8);
    temp_dir dir;
    io::save_adapter(test_adapter(io::dtype::BF16, rng), dir / "a", io::save_form::directory);
    const auto decoded = io::load_adapter<double>(dir / "a");
    const auto view = io::adapter_view::open(dir / "a", all_on_visit(), io::factor_reads::on_visit);
    const auto as_double = [](const auto& x) -> Eigen::MatrixXd { return x.template cast<double>(); };
    for (std::size_t i = 0; i < view.modules.size(); ++i)
      view.modules[i].visit([&](const auto& B, const auto& A) {
        const std::size_t j = (i + 1) % view.modules.size();
        view.modules[j].visit([&](const auto& inner_B, const auto& inner_A) {
          CHECK(as_double(inner_B) == decoded.modules[j].B);
          CHECK(as_double(inner_A) == decoded.modules[j].A);
        });
        CHECK(as_double(B) == decoded.modules[i].B);
        CHECK(as_double(A) == decoded.modules[i].A);
      });
  }

  TEST_CASE("factors read on visit: a non-finite factor is refused by the visit, with load_adapter's message") {
    std::mt19937_64 rng(9);
    const Eigen::MatrixXd B = random_factor(12, 4, rng), A = random_factor(4, 10, rng);
    for (const auto t : {io::dtype::F32, io::dtype::F16, io::dtype::BF16, io::dtype::F64}) {
      CAPTURE(io::dtype_name(t));
      Eigen::MatrixXd bad_B = B;
      bad_B(7, 1) = -INFINITY;
      Eigen::VectorXd magnitude = Eigen::VectorXd::Ones(12);
      magnitude(3) = NAN;
      temp_dir dir;
      const std::string factor_path = dir / "factor.safetensors", extra_path = dir / "extra.safetensors";
      const std::string dt(io::dtype_name(t));
      write_text(factor_path, raw_image({{"m.lora_A.weight", dt, "[4,10]", encoded(A, t)},
                                         {"m.lora_B.weight", dt, "[12,4]", encoded(bad_B, t)}}));
      write_text(extra_path, raw_image({{"m.lora_A.weight", dt, "[4,10]", encoded(A, t)},
                                        {"m.lora_B.weight", dt, "[12,4]", encoded(B, t)},
                                        {"m.lora_magnitude_vector", "F32", "[12]", encoded(magnitude, io::dtype::F32)}}));
      const auto from_load = thrown_by([&] { io::load_adapter<double>(factor_path); });
      const auto view = io::adapter_view::open(factor_path, all_on_visit(), io::factor_reads::on_visit);
      const auto from_visit = thrown_by([&] { lola::adapter_singular_values<double>(view); });
      CHECK(from_visit.code() == lola::error_code::invalid_file);
      CHECK(std::string(from_visit.what()) == from_load.what());  // naming the file and module once
      CHECK(contains(from_visit.what(), "element [7, 1]"));
      const auto from_copy = thrown_by([&] { io::encoded_adapter::copy_of(view); });
      CHECK(std::string(from_copy.what()) == from_load.what());
      const auto extra_open =
          thrown_by([&] { io::adapter_view::open(extra_path, all_on_visit(), io::factor_reads::on_visit); });
      CHECK(std::string(extra_open.what()) == thrown_by([&] { io::load_adapter<double>(extra_path); }).what());
    }
  }

  TEST_CASE("factors read on visit: of several modules that fail, the first in module order is reported") {
    // m0 (d, k < r) is computed module by module; m1 by the batched Gram route, which runs first.
    std::mt19937_64 rng(11);
    Eigen::MatrixXd A0 = random_factor(8, 4, rng), A1 = random_factor(4, 30, rng);
    const Eigen::MatrixXd B0 = random_factor(6, 8, rng), B1 = random_factor(20, 4, rng);
    A0(1, 2) = NAN;
    A1(3, 3) = NAN;
    const auto f32 = io::dtype::F32;
    temp_dir dir;
    write_text(dir / "two.safetensors", raw_image({{"m0.lora_A.weight", "F32", "[8,4]", encoded(A0, f32)},
                                                   {"m0.lora_B.weight", "F32", "[6,8]", encoded(B0, f32)},
                                                   {"m1.lora_A.weight", "F32", "[4,30]", encoded(A1, f32)},
                                                   {"m1.lora_B.weight", "F32", "[20,4]", encoded(B1, f32)}}));
    const auto from_load = thrown_by([&] { io::load_adapter<double>(dir / "two.safetensors"); });
    CHECK(contains(from_load.what(), "\"m0.lora_A.weight\""));
    const auto view = io::adapter_view::open(dir / "two.safetensors", all_on_visit(), io::factor_reads::on_visit);
    CHECK(contains(thrown_by([&] { lola::adapter_singular_values<double>(view); }).message(), from_load.message()));
    // A later module's layout error: reported by open() when the factors are read on visit, after
    // the earlier module's non-finite factor when they are read at open.
    write_text(dir / "later.safetensors", raw_image({{"m0.lora_A.weight", "F32", "[8,4]", encoded(A0, f32)},
                                                     {"m0.lora_B.weight", "F32", "[6,8]", encoded(B0, f32)},
                                                     {"m1.lora_A.weight", "F32", "[4,30]", encoded(A1, f32)}}));
    CHECK(contains(thrown_by([&] { io::adapter_view::open(dir / "later.safetensors"); }).what(), "not finite"));
    CHECK(contains(thrown_by([&] {
                     io::adapter_view::open(dir / "later.safetensors", all_on_visit(), io::factor_reads::on_visit);
                   })
                       .what(),
                   "module \"m1\" has lora_A but no lora_B"));
  }

  TEST_CASE("factors read on visit: a file changed after open is an error at the next visit, a file replaced is read as opened") {
    std::mt19937_64 rng(10);
    temp_dir dir;
    io::save_adapter(test_adapter(io::dtype::BF16, rng), dir / "a", io::save_form::directory);
    const std::string weights = dir / "a/adapter_model.safetensors";
    const auto expected = lola::adapter_singular_values<double>(io::load_adapter<double>(dir / "a"));
    std::string original;
    {
      std::ifstream in(weights, std::ios::binary);
      original.assign(std::istreambuf_iterator<char>(in), {});
    }
    const auto bump_mtime = [&] {  // a timestamp later than any the filesystem's tick could merge
      struct stat st {};
      REQUIRE(::stat(weights.c_str(), &st) == 0);
      const struct timespec times[2] = {st.st_atim, {st.st_mtim.tv_sec + 10, st.st_mtim.tv_nsec}};
      REQUIRE(::utimensat(AT_FDCWD, weights.c_str(), times, 0) == 0);
    };
    {  // truncated
      const auto view = io::adapter_view::open(dir / "a", all_on_visit(), io::factor_reads::on_visit);
      REQUIRE(::truncate(weights.c_str(), static_cast<off_t>(original.size() / 2)) == 0);
      const auto e = thrown_by([&] { lola::adapter_singular_values<double>(view); });
      CHECK(e.code() == lola::error_code::io);
      CHECK(contains(e.what(), "changed while being read"));
      CHECK(contains(e.what(), weights));
    }
    {  // rewritten in place, same size, other bytes
      write_text(weights, original);
      const auto view = io::adapter_view::open(dir / "a", all_on_visit(), io::factor_reads::on_visit);
      std::string flipped = original;
      for (std::size_t i = flipped.size() - 64; i < flipped.size(); ++i) flipped[i] = static_cast<char>(flipped[i] ^ 0x01);
      {
        std::fstream f(weights, std::ios::binary | std::ios::in | std::ios::out);
        f.write(flipped.data(), static_cast<std::streamsize>(flipped.size()));
      }
      bump_mtime();
      const auto e = thrown_by([&] { lola::adapter_singular_values<double>(view); });
      CHECK(e.code() == lola::error_code::io);
      CHECK(contains(e.what(), "changed while being read"));
    }
    {  // replaced by a rename: the open file is still the one read
      write_text(weights, original);
      const auto view = io::adapter_view::open(dir / "a", all_on_visit(), io::factor_reads::on_visit);
      write_text(dir / "other", std::string(original.size(), '\x7f'));
      REQUIRE(::rename((dir / "other").c_str(), weights.c_str()) == 0);
      CHECK(lola::adapter_singular_values<double>(view) == expected);
    }
  }
}
