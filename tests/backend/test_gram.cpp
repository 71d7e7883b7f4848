// The Gram primitive XᵀX (backend/eigen/gram.hpp) on every memory layout it dispatches on, against
// a double reference, entry by entry.
#include <doctest/doctest.h>

#include <random>

#include "lola/backend/eigen/gram.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {

template <class T>
using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// max over entries of |G − XᵀX| ÷ (γ_m·|X|ᵀ|X|), with γ_m = m·ε: any order of summing m products
/// in T stays within it (Higham §3.1, u = ε/2 doubled for the reference's own rounding), so a
/// kernel passes iff this is ≤ 1. Exact zeros of |X|ᵀ|X| demand exact zeros of G.
template <class T, class X>
double worst_ratio(const matrix<T>& g, const X& x) {
  const matrix_d xd = in_double(x);
  const matrix_d reference = xd.transpose() * xd;
  const matrix_d bound = double(x.rows()) * eps<T>() * (xd.cwiseAbs().transpose() * xd.cwiseAbs());
  double worst = 0;
  for (Eigen::Index j = 0; j < g.cols(); ++j)
    for (Eigen::Index i = 0; i < g.rows(); ++i) {
      const double error = std::abs(double(g(i, j)) - reference(i, j));
      worst = std::max(worst, bound(i, j) > 0 ? error / bound(i, j) : (error > 0 ? 1e300 : 0.0));
    }
  return worst;
}

template <class T, class X>
void check_gram(const X& x) {
  matrix<T> g;
  lola::detail::gram_into<T>(x, g);
  REQUIRE(g.rows() == x.cols());
  REQUIRE(g.cols() == x.cols());
  CHECK(worst_ratio<T>(g, x) <= 1.0);
  CHECK(g == g.transpose());  // both triangles are written from one computed value
}

}  // namespace

TEST_SUITE("backend.gram") {
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

  TEST_CASE("the check detects a kernel that drops the rows past the last full lane") {
    std::mt19937_64 rng(5);
    for (int n : {4, 16}) {
      const matrix<float> x = gaussian<float>(257, n, rng);
      matrix<float> short_gram;
      lola::detail::gram_into<float>(x.topRows(256), short_gram);
      CHECK(worst_ratio<float>(short_gram, x) > 1.0);
    }
  }
}
