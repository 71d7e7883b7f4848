// The Gram primitives XᵀX and XᵀY (backend/eigen/gram.hpp) on every memory layout they dispatch
// on, against a double reference, entry by entry.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "lola/backend/eigen/gram.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::row_major;
using lola_test::worst_entry_ratio;

namespace {

/// max over entries of |G − XᵀY| ÷ (γ_m·|X|ᵀ|Y|), with γ_m = m·ε: any order of summing m products
/// in T stays within it (Higham §3.1, u = ε/2 doubled for the reference's own rounding), so a
/// kernel passes iff this is ≤ 1. Exact zeros of |X|ᵀ|Y| demand exact zeros of G.
template <class T, class X, class Y>
double worst_ratio(const matrix<T>& g, const X& x, const Y& y) {
  const matrix_d xd = in_double(x), yd = in_double(y);
  const matrix_d reference = xd.transpose() * yd;
  const matrix_d bound = double(x.rows()) * eps<T>() * (xd.cwiseAbs().transpose() * yd.cwiseAbs());
  return worst_entry_ratio(g, reference, bound);
}

template <class T, class X>
void check_gram(const X& x) {
  matrix<T> g;
  lola::detail::gram_into<T>(x, g);
  REQUIRE(g.rows() == x.cols());
  REQUIRE(g.cols() == x.cols());
  CHECK(worst_ratio<T>(g, x, x) <= 1.0);
  CHECK(g == g.transpose());  // both triangles are written from one computed value
}

template <class T, class X, class Y>
void check_cross(const X& x, const Y& y) {
  matrix<T> g;
  lola::detail::cross_gram_into<T>(x, y, g);
  REQUIRE(g.rows() == x.cols());
  REQUIRE(g.cols() == y.cols());
  CHECK(worst_ratio<T>(g, x, y) <= 1.0);
}

/// A compute scalar S and a stored type T narrower than or equal to it (a file's factors).
template <class S_, class T_>
struct stored_as {
  using S = S_;
  using T = T_;
};

/// m×n standard normal values of T (rounded once from double), stored row-major.
template <class T>
row_major<T> gaussian_stored(Eigen::Index m, Eigen::Index n, std::mt19937_64& rng) {
  return gaussian<double>(m, n, rng).cast<T>();
}

/// The blocked kernels directly, for each lane width the tests can run on this machine: SSE2's
/// 16 bytes and 32 compiled as generic vectors (both run anywhere), and the AVX2 entry point
/// where the processor has it. Each must meet the same bound as gram_into.
template <class S, class X, class Y>
void check_every_width(const X& x, const Y& y, bool same) {
  using namespace lola::detail;
  const auto xr = factor_ref_of<S>(x);
  const auto yr = factor_ref_of<S>(y);
  const auto check = [&](const matrix<S>& g) {
    REQUIRE(g.rows() == x.cols());
    REQUIRE(g.cols() == y.cols());
    CHECK(worst_ratio<S>(g, x, y) <= 1.0);
  };
  matrix<S> g16 = matrix<S>::Zero(x.cols(), y.cols()), g32 = g16;
  if (same) {
    if (x.rows() > 0) cross_gram_blocked_lanes<16, true>(xr, xr, g16);
    if (x.rows() > 0) cross_gram_blocked_lanes<32, true>(xr, xr, g32);
    g16.template triangularView<Eigen::StrictlyUpper>() = g16.transpose();
    g32.template triangularView<Eigen::StrictlyUpper>() = g32.transpose();
  } else {
    if (x.rows() > 0) cross_gram_blocked_lanes<16, false>(xr, yr, g16);
    if (x.rows() > 0) cross_gram_blocked_lanes<32, false>(xr, yr, g32);
  }
  check(g16);
  check(g32);
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma() && x.rows() > 0) {
    matrix<S> g = matrix<S>::Zero(x.cols(), y.cols());
    if (same)
      cross_gram_blocked_avx2<true>(xr, xr, g);
    else
      cross_gram_blocked_avx2<false>(xr, yr, g);
    if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
    check(g);
  }
#endif
}

}  // namespace

TEST_SUITE("backend.gram") {
  TEST_CASE_TEMPLATE("factors stored narrower than S, as a file holds them, within γ_m·|X|ᵀ|Y|", K,
                     stored_as<double, Eigen::bfloat16>, stored_as<double, Eigen::half>, stored_as<double, float>,
                     stored_as<float, Eigen::bfloat16>, stored_as<float, Eigen::half>, stored_as<double, double>) {
    using S = typename K::S;
    using T = typename K::T;
    std::mt19937_64 rng(41);
    // Ranks below, at and above the tile and lane paddings; lengths around the lane width and
    // the block lengths (256 and 512 rows for these ranks in double, 512 and 1024 in float).
    for (int n : {1, 3, 4, 5, 8, 13, 16, 17, 33}) {
      for (int m : {0, 1, 7, 255, 256, 257, 513, 1500}) {
        CAPTURE(n);
        CAPTURE(m);
        // B as a file stores it (d×r, rows contiguous) and A (r×k, read as Aᵀ: columns contiguous).
        const row_major<T> b = gaussian_stored<T>(m, n, rng), a = gaussian_stored<T>(n, m, rng);
        const Eigen::Map<const row_major<T>> B(b.data(), m, n), A(a.data(), n, m);
        const auto Bs = B.template cast<S>();
        const auto As = A.template cast<S>();
        const auto& As_ref = As;
        const auto At = As_ref.transpose();
        check_gram<S>(Bs);
        check_gram<S>(At);
        check_cross<S>(Bs, At);
        check_cross<S>(At, Bs);
        check_every_width<S>(Bs, Bs, true);
        check_every_width<S>(At, At, true);
        check_every_width<S>(Bs, At, false);
        check_every_width<S>(At, Bs, false);
      }
    }
  }

  TEST_CASE_TEMPLATE("factors stored narrower than S give the bits of their decoded copies (the kernels widen blocks "
                     "of rows; the sums keep their order)",
                     K, stored_as<double, Eigen::bfloat16>, stored_as<double, Eigen::half>, stored_as<double, float>,
                     stored_as<float, Eigen::bfloat16>, stored_as<float, Eigen::half>) {
    using S = typename K::S;
    using T = typename K::T;
    std::mt19937_64 rng(43);
    for (int n : {4, 5, 8, 12, 16}) {
      for (int m : {3, 256, 257, 515, 1500}) {
        CAPTURE(n);
        CAPTURE(m);
        const row_major<T> b = gaussian_stored<T>(m, n, rng), a = gaussian_stored<T>(n, m, rng);
        const row_major<T> b2 = gaussian_stored<T>(m, n, rng), a2 = gaussian_stored<T>(n, m, rng);
        const Eigen::Map<const row_major<T>> B(b.data(), m, n), A(a.data(), n, m), B2(b2.data(), m, n),
            A2(a2.data(), n, m);
        const auto Bs = B.template cast<S>(), B2s = B2.template cast<S>();
        const auto As = A.template cast<S>(), A2s = A2.template cast<S>();
        const auto At = As.transpose(), A2t = A2s.transpose();
        // The decoded copies, in the file's layout (row-major B and A).
        const row_major<S> Bd = Bs, B2d = B2s, Ad = As, A2d = A2s;
        matrix<S> stored, decoded;
        const auto same_bits = [&](const auto& x, const auto& y, const auto& xd, const auto& yd) {
          lola::detail::cross_gram_into<S>(x, y, stored);
          lola::detail::cross_gram_into<S>(xd, yd, decoded);
          return stored == decoded;
        };
        CHECK(same_bits(Bs, Bs, Bd, Bd));
        CHECK(same_bits(Bs, B2s, Bd, B2d));
        CHECK(same_bits(At, At, Ad.transpose(), Ad.transpose()));
        CHECK(same_bits(At, A2t, Ad.transpose(), A2d.transpose()));
      }
    }
  }

  TEST_CASE("widen_run, the kernels' lane widening, gives widen_value's bits for every F16 and BF16 pattern") {
    // Every 16-bit pattern (zeros, subnormals, normals, infinities, NaNs with their payloads) at
    // every offset into a lane and with every tail length, into float and double; float into double
    // and double into float (rounding) too. Bit comparison, so a NaN must keep its payload.
    std::vector<std::uint16_t> bits(65536 + 64);
    for (std::size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<std::uint16_t>(i * 40503u);  // a permutation
    const auto check = [](const auto* in, std::size_t n, auto out_scalar) {
      using S = decltype(out_scalar);
      std::vector<S> lanes(n + 1);
      int wrong = 0;
      for (std::size_t offset : {0, 1, 3, 7}) {
        for (std::size_t length : {std::size_t(0), std::size_t(1), std::size_t(9), n - offset - 5}) {
          std::fill(lanes.begin(), lanes.end(), S(-7));
          lola::detail::widen_run(in + offset, lola::index(length), lanes.data());
          for (std::size_t i = 0; i < length; ++i) {
            const S expected = lola::detail::widen_value<S>(in[offset + i]);
            wrong += std::memcmp(&lanes[i], &expected, sizeof(S)) != 0;
          }
          wrong += lanes[length] != S(-7);  // nothing written past the run
        }
      }
      return wrong;
    };
    const auto* h = reinterpret_cast<const Eigen::half*>(bits.data());
    const auto* b = reinterpret_cast<const Eigen::bfloat16*>(bits.data());
    CHECK(check(h, bits.size(), float{}) == 0);
    CHECK(check(h, bits.size(), double{}) == 0);
    CHECK(check(b, bits.size(), float{}) == 0);
    CHECK(check(b, bits.size(), double{}) == 0);
    std::vector<float> floats(bits.size());
    for (std::size_t i = 0; i < bits.size(); ++i) floats[i] = lola::detail::widen_f16_bits(bits[i]) * 1e30f;
    CHECK(check(floats.data(), floats.size(), double{}) == 0);
    std::vector<double> doubles(bits.size());
    for (std::size_t i = 0; i < bits.size(); ++i) doubles[i] = double(floats[i]) * (1 + 0x1p-40);
    CHECK(check(doubles.data(), doubles.size(), float{}) == 0);
    // Integers take widen_value's conversion too (never the lanes' reinterpretation as floats).
    std::vector<std::int32_t> integers(bits.size());
    for (std::size_t i = 0; i < bits.size(); ++i) integers[i] = std::int32_t(bits[i]) - 30000;
    CHECK(check(integers.data(), integers.size(), double{}) == 0);
    CHECK(check(integers.data(), integers.size(), float{}) == 0);
  }

  TEST_CASE("the check detects a Gram computed from values one rounding away from the stored ones") {
    // BF16 keeps 8 significant bits: a Gram of the float values before rounding is off by about
    // 2⁻⁸ relative, far beyond γ_m in double, so a kernel that read the wrong values fails.
    std::mt19937_64 rng(43);
    const matrix<float> exact = gaussian<float>(300, 16, rng);
    const matrix<Eigen::bfloat16> stored = exact.cast<Eigen::bfloat16>();
    matrix<double> g;
    lola::detail::gram_into<double>(exact.cast<double>(), g);
    CHECK(worst_ratio<double>(g, stored.cast<double>(), stored.cast<double>()) > 1.0);
  }

  TEST_CASE_TEMPLATE("XᵀX on every layout, rank and length, within γ_m·|X|ᵀ|X|", T, float, double) {
    std::mt19937_64 rng(17);
    // Ranks: the fixed row kernels (4, 8, 16, 32), tiles with and without leftover columns, one
    // column; lengths around the lane width, the 256-row block and the prefetch distance.
    for (int n : {1, 3, 4, 5, 8, 12, 16, 17, 32, 33}) {
      for (int m : {0, 1, 3, 15, 16, 17, 255, 256, 257, 1500}) {
        CAPTURE(n);
        CAPTURE(m);
        const matrix<T> columns = gaussian<T>(m, n, rng);  // contiguous columns
        check_gram<T>(columns);
        const row_major<T> rows = gaussian<T>(m, n, rng).eval();  // contiguous rows
        check_gram<T>(rows);
        const matrix<T> wide = gaussian<T>(n, m, rng);
        check_gram<T>(wide.transpose());  // Aᵀ of a column-major A: contiguous rows
        const matrix<T> padded = gaussian<T>(m + 5, n + 2, rng);  // strides larger than the shape
        check_gram<T>(padded.block(2, 1, m, n));
        const row_major<T> padded_rows = gaussian<T>(m + 5, n + 2, rng).eval();
        check_gram<T>(padded_rows.block(2, 1, m, n));
        check_gram<T>(T(2) * columns);  // an expression without direct access: Eigen's product
      }
    }
  }

  TEST_CASE_TEMPLATE("XᵀY for two factors, equal and unequal widths, within γ_m·|X|ᵀ|Y|", T, float,
                     double) {
    std::mt19937_64 rng(29);
    for (const auto& widths : {std::pair{4, 4}, std::pair{16, 16}, std::pair{8, 12}, std::pair{5, 3},
                               std::pair{32, 32}, std::pair{17, 16}}) {
      const int p = widths.first, q = widths.second;  // not a structured binding: CAPTURE's lambda takes them
      for (int m : {0, 1, 17, 256, 1000}) {
        CAPTURE(p);
        CAPTURE(q);
        CAPTURE(m);
        check_cross<T>(gaussian<T>(m, p, rng), gaussian<T>(m, q, rng));  // contiguous columns
        const row_major<T> xr = gaussian<T>(m, p, rng).eval(), yr = gaussian<T>(m, q, rng).eval();
        check_cross<T>(xr, yr);  // contiguous rows
        const matrix<T> a = gaussian<T>(p, m, rng), b = gaussian<T>(q, m, rng);
        check_cross<T>(a.transpose(), b.transpose());  // Aᵀ·Āᵀ of column-major A, Ā (O-Align)
        check_cross<T>(gaussian<T>(m, p, rng), yr);    // mixed layouts: Eigen's product
        const matrix<T> padded = gaussian<T>(m + 3, p + q, rng);  // two blocks of one matrix
        check_cross<T>(padded.block(1, 0, m, p), padded.block(2, p, m, q));
      }
    }
  }

  TEST_CASE("the check detects a kernel that drops the rows past the last full lane") {
    std::mt19937_64 rng(5);
    for (int n : {4, 16}) {
      const matrix<float> x = gaussian<float>(257, n, rng);
      matrix<float> short_gram;
      lola::detail::gram_into<float>(x.topRows(256), short_gram);
      CHECK(worst_ratio<float>(short_gram, x, x) > 1.0);
    }
  }
}
