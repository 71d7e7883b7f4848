// merge_into / unmerge_from: W ± s·B·A in one GEMM, including targets the expression reads.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "lola/backend/eigen/merge.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/product.hpp"
#include "lola/expr/sum.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

namespace {
// fl(W + fl(s·B·A)): the product bound plus one rounding of the sum, ε·(‖W‖ + ‖ΔW‖).
template <class T>
double merge_tolerance(int r, double w_norm, double norm_product) {
  return product_tolerance<T>(r, norm_product) + 2 * eps<T>() * (w_norm + norm_product);
}
}  // namespace

TEST_SUITE("expr.merge") {
  TEST_CASE_TEMPLATE("merge_into adds ΔW, unmerge_from takes it back", T, float, double) {
    std::mt19937_64 rng(12);
    const int d = 33, k = 21, r = 5;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const T s = T(0.125);
    const auto L = lola::factor(B, A, s);
    const matrix<T> W0 = gaussian<T>(d, k, rng);
    const matrix_d reference = in_double(W0) + double(s) * in_double(B) * in_double(A);
    const double n = double(s) * in_double(B).norm() * in_double(A).norm();
    const double tolerance = merge_tolerance<T>(r, in_double(W0).norm(), n);

    matrix<T> W = W0;
    lola::merge_into(W, L);
    CHECK((in_double(W) - reference).norm() <= tolerance);
    lola::unmerge_from(W, L);
    CHECK((in_double(W) - in_double(W0)).norm() <= 2 * tolerance);

    // A row-major Map over external memory (the layout of a weight read from a file).
    std::vector<T> storage(d * k);
    Eigen::Map<Eigen::Matrix<T, -1, -1, Eigen::RowMajor>> mapped(storage.data(), d, k);
    mapped = W0;
    lola::merge_into(mapped, L);
    CHECK((in_double(mapped) - reference).norm() <= tolerance);

    // A block of a larger matrix: only the block changes.
    matrix<T> big = gaussian<T>(d + 4, k + 3, rng);
    const matrix<T> big0 = big;
    big.block(2, 1, d, k) = W0;
    lola::merge_into(big.block(2, 1, d, k), L);
    CHECK((in_double(big.block(2, 1, d, k)) - reference).norm() <= tolerance);
    CHECK(big.topRows(2) == big0.topRows(2));
    CHECK(big.col(0) == big0.col(0));
  }

  TEST_CASE_TEMPLATE("merging a sum merges both terms", T, float, double) {
    std::mt19937_64 rng(13);
    const matrix<T> B1 = gaussian<T>(10, 2, rng), A1 = gaussian<T>(2, 8, rng);
    const matrix<T> B2 = gaussian<T>(10, 3, rng), A2 = gaussian<T>(3, 8, rng);
    matrix<T> W = matrix<T>::Zero(10, 8);
    lola::merge_into(W, lola::factor(B1, A1, T(2)) - lola::factor(B2, A2));
    const matrix_d reference = 2 * in_double(B1) * in_double(A1) - in_double(B2) * in_double(A2);
    const double n = 2 * in_double(B1).norm() * in_double(A1).norm() +
                     in_double(B2).norm() * in_double(A2).norm();
    CHECK((in_double(W) - reference).norm() <= merge_tolerance<T>(5, 0, n));
  }

  // Two sizes: 6×6 (rank 2) is small enough for Eigen's coefficient-based product, which reads W
  // while writing it; 48×48 (rank 8) goes through blocked GEMM.
  TEST_CASE("aliasing: factors that are views of W, and W as a dense factor") {
    for (const int d : {6, 48}) {
      CAPTURE(d);
      const int k = d, r = d / 6 + 1;
      std::mt19937_64 rng(14);
      const Eigen::MatrixXd W0 = gaussian<double>(d, k, rng);
      const Eigen::MatrixXd A = gaussian<double>(r, k, rng), B = gaussian<double>(d, r, rng);
      {  // B is the first r columns of W itself.
        Eigen::MatrixXd W = W0;
        lola::merge_into(W, lola::factor(W.leftCols(r), A));
        CHECK((W - (W0 + W0.leftCols(r) * A)).norm() <=
              merge_tolerance<double>(r, W0.norm(), W0.leftCols(r).norm() * A.norm()));
      }
      {  // A is the first r rows of W itself.
        Eigen::MatrixXd W = W0;
        lola::merge_into(W, lola::factor(B, W.topRows(r)));
        CHECK((W - (W0 + B * W0.topRows(r))).norm() <=
              merge_tolerance<double>(r, W0.norm(), B.norm() * W0.topRows(r).norm()));
      }
      {  // W multiplies the low-rank term: W += W·(B·A).
        Eigen::MatrixXd W = W0;
        lola::merge_into(W, W * lola::factor(B, A));
        CHECK((W - (W0 + W0 * B * A)).norm() <=
              merge_tolerance<double>(d + r, W0.norm(), W0.norm() * B.norm() * A.norm()));
      }
    }
  }

  TEST_CASE("overlap detection is by address range") {
    const Eigen::MatrixXd W = Eigen::MatrixXd::Ones(10, 10);
    const Eigen::MatrixXd other = W;
    CHECK_FALSE(lola::detail::may_read_memory_of(other.leftCols(3), W));
    CHECK(lola::detail::may_read_memory_of(W.leftCols(3), W));
    CHECK(lola::detail::may_read_memory_of(W.block(3, 3, 2, 2), W));
    CHECK(lola::detail::may_read_memory_of(W.transpose(), W));
    CHECK_FALSE(lola::detail::may_read_memory_of(W.rightCols(2), W.leftCols(2)));
    CHECK(lola::detail::may_read_memory_of(2.0 * other, W));  // an expression: assumed to read W
  }

  TEST_CASE("the aliasing hazard is real: a plain product into W that reads W goes wrong") {
    // What merge_into guards against, shown with Eigen directly at the small size, where the
    // product is evaluated coefficient by coefficient straight into W: B is a view of W's first
    // columns, so later coefficients read columns that were already overwritten.
    std::mt19937_64 rng(14);
    const int d = 6, k = 6, r = 2;
    const Eigen::MatrixXd W0 = gaussian<double>(d, k, rng);
    const Eigen::MatrixXd A = gaussian<double>(r, k, rng);
    Eigen::MatrixXd W = W0;
    W.noalias() += W.leftCols(r) * A;
    CHECK((W - (W0 + W0.leftCols(r) * A)).norm() > 1e-6 * W0.norm());
  }

  TEST_CASE("shape mismatch names W and the expression") {
    const Eigen::MatrixXd B = Eigen::MatrixXd::Ones(4, 2), A = Eigen::MatrixXd::Ones(2, 3);
    Eigen::MatrixXd W = Eigen::MatrixXd::Zero(3, 4);
    try {
      lola::merge_into(W, lola::factor(B, A));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("W is 3x4") != std::string::npos);
      CHECK(std::string(e.what()).find("4x3") != std::string::npos);
    }
    CHECK(W.isZero(0));
    CHECK_THROWS_AS(lola::unmerge_from(W, lola::factor(B, A)), lola::error);
  }
}
