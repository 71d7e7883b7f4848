// The thin products X·C (backend/eigen/thin_product.hpp) on every layout of X and of the output
// they dispatch on, against a double reference, entry by entry.
#include <doctest/doctest.h>

#include <random>

#include "lola/backend/eigen/thin_product.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::row_major;
using lola_test::worst_entry_ratio;

namespace {

/// max over entries of |out − X·C| ÷ (γ_n·|X|·|C|) with γ_n = n·ε: each entry is one dot product
/// of length n, so any summation order stays within it (Higham §3.1, u = ε/2 doubled for the
/// reference's own rounding); ≤ 1 passes. Exact zeros of the bound demand exact zeros.
template <class T, class O, class X>
double worst_ratio(const O& out, const X& x, const matrix<T>& c) {
  const matrix_d xd = in_double(x), cd = in_double(c);
  const matrix_d reference = xd * cd;
  const matrix_d bound = double(x.cols()) * eps<T>() * (xd.cwiseAbs() * cd.cwiseAbs());
  return worst_entry_ratio(out, reference, bound);
}

/// X·C into a column-major matrix, a row-major one, and blocks of larger ones of both kinds.
template <class T, class X>
void check_product(const X& x, const matrix<T>& c) {
  const Eigen::Index m = x.rows(), k = c.cols();
  matrix<T> columns(m, k);
  lola::detail::thin_product_into<T>(x, c, columns);
  CHECK(worst_ratio<T>(columns, x, c) <= 1.0);
  row_major<T> rows(m, k);
  lola::detail::thin_product_into<T>(x, c, rows);
  CHECK(worst_ratio<T>(rows, x, c) <= 1.0);
  matrix<T> wide = matrix<T>::Constant(k + 3, m + 2, T(7));  // out = block of a transpose
  lola::detail::thin_product_into<T>(x, c, wide.block(1, 2, k, m).transpose());
  CHECK(worst_ratio<T>(wide.block(1, 2, k, m).transpose(), x, c) <= 1.0);
  CHECK((wide.topRows(1).array() == T(7)).all());  // nothing written outside the block
  CHECK((wide.bottomRows(2).array() == T(7)).all());
  matrix<T> tall = matrix<T>::Constant(m + 4, k + 1, T(7));
  lola::detail::thin_product_into<T>(x, c, tall.block(3, 1, m, k));
  CHECK(worst_ratio<T>(tall.block(3, 1, m, k), x, c) <= 1.0);
  CHECK((tall.col(0).array() == T(7)).all());
  CHECK((tall.topRows(3).array() == T(7)).all());
}

/// A compute scalar S and a stored type T narrower than or equal to it (a file's factors).
template <class S_, class T_>
struct stored_as {
  using S = S_;
  using T = T_;
};

/// The blocked kernel directly, at each lane width the tests can run here (16 and 32 bytes, both
/// as generic vectors, and the AVX2 entry point where the processor has it), into a column-major
/// and a row-major output: each within the same bound as thin_product_into.
template <class S, class X>
void check_every_width(const X& x, const matrix<S>& c) {
  using namespace lola::detail;
  const auto xr = factor_ref_of<S>(x);
  const Eigen::Index m = x.rows(), k = c.cols();
  const auto run = [&](auto&& kernel) {
    matrix<S> columns = matrix<S>::Zero(m, k);
    row_major<S> rows = row_major<S>::Zero(m, k);
    if (m > 0 && k > 0) {
      kernel(columns.data(), 1, m);
      kernel(rows.data(), k, 1);
    }
    CHECK(worst_ratio<S>(columns, x, c) <= 1.0);
    CHECK(worst_ratio<S>(rows, x, c) <= 1.0);
  };
  run([&](S* out, Eigen::Index row_step, Eigen::Index col_step) {
    thin_product_blocked_lanes<16>(xr, c.data(), c.outerStride(), k, out, row_step, col_step);
  });
  run([&](S* out, Eigen::Index row_step, Eigen::Index col_step) {
    thin_product_blocked_lanes<32>(xr, c.data(), c.outerStride(), k, out, row_step, col_step);
  });
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma())
    run([&](S* out, Eigen::Index row_step, Eigen::Index col_step) {
      thin_product_blocked_avx2(xr, c.data(), c.outerStride(), k, out, row_step, col_step);
    });
#endif
}

}  // namespace

TEST_SUITE("backend.thin_product") {
  TEST_CASE_TEMPLATE("X stored narrower than S, as a file holds it, within γ_n·|X|·|C|", K,
                     stored_as<double, Eigen::bfloat16>, stored_as<double, Eigen::half>, stored_as<double, float>,
                     stored_as<float, Eigen::bfloat16>, stored_as<float, Eigen::half>) {
    using S = typename K::S;
    using T = typename K::T;
    std::mt19937_64 rng(31);
    // Lengths around the kernel's tile of rows and its block (several blocks at 1500).
    for (int n : {1, 3, 4, 8, 16, 17}) {
      for (int k : {1, 3, 4, 5, n}) {
        for (int m : {0, 1, 11, 12, 13, 47, 48, 49, 1500}) {
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(m);
          const matrix<S> c = gaussian<S>(n, k, rng);
          // B as a file stores it (rows contiguous) and Aᵀ of a stored A (columns contiguous).
          const row_major<T> b = gaussian<double>(m, n, rng).cast<T>(), a = gaussian<double>(n, m, rng).cast<T>();
          const Eigen::Map<const row_major<T>> B(b.data(), m, n), A(a.data(), n, m);
          const auto Bs = B.template cast<S>();
          const auto As = A.template cast<S>();
          const auto& As_ref = As;
          const auto At = As_ref.transpose();
          check_product<S>(Bs, c);
          check_product<S>(At, c);
          check_every_width<S>(Bs, c);
          check_every_width<S>(At, c);
        }
      }
    }
  }

  TEST_CASE_TEMPLATE("X·C on every layout, rank and length, within γ_n·|X|·|C|", T, float, double) {
    std::mt19937_64 rng(23);
    // Ranks with and without the fixed row kernels; output widths around the 4-column tile;
    // lengths around one lane, the 3-lane tile and beyond.
    for (int n : {1, 3, 4, 8, 16, 17, 32}) {
      for (int k : {1, 3, 4, 5, n}) {
        for (int m : {0, 1, 15, 47, 48, 49, 100, 257}) {
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(m);
          const matrix<T> c = gaussian<T>(n, k, rng);
          check_product<T>(gaussian<T>(m, n, rng), c);                 // contiguous columns
          check_product<T>(row_major<T>(gaussian<T>(m, n, rng)), c);   // contiguous rows
          const matrix<T> wide = gaussian<T>(n, m, rng);
          check_product<T>(wide.transpose(), c);  // Aᵀ of a column-major A
          const matrix<T> padded = gaussian<T>(m + 5, n + 2, rng);
          check_product<T>(padded.block(2, 1, m, n), c);
          check_product<T>(T(2) * padded.block(2, 1, m, n), c);  // no direct access: Eigen
        }
      }
    }
  }

  TEST_CASE("the check detects a product that drops one column of X") {
    std::mt19937_64 rng(9);
    for (int n : {4, 16}) {
      const matrix<float> x = gaussian<float>(100, n, rng), c = gaussian<float>(n, n, rng);
      matrix<float> dropped(100, n);
      lola::detail::thin_product_into<float>(x.leftCols(n - 1), c.topRows(n - 1), dropped);
      CHECK(worst_ratio<float>(dropped, x, c) > 1.0);
    }
  }
}
