// Resizing: kohya's rank rules, and truncation equals the dense best rank-k approximation.
#include <doctest/doctest.h>

#include <random>

#include <Eigen/SVD>

#include "lola/lola.hpp"
#include "lola/ops/resize.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

TEST_SUITE("ops.resize") {
  TEST_CASE("rank rules on σ = (4, 3, 2, 1), from their definitions") {
    const Eigen::Vector4d sigma(4, 3, 2, 1);
    const auto pick = [&](lola::rank_rule rule) { return lola::select_rank<double>(sigma, rule, 4); };
    // Σσ² = 30; cumulative σ² = 16, 25, 29, 30.
    CHECK(pick(lola::rank_rule::sv_fro(0.9)) == 2);   // 0.81·30 = 24.3 ≤ 25
    CHECK(pick(lola::rank_rule::sv_fro(0.95)) == 3);  // 0.9025·30 = 27.075 > 25
    CHECK(pick(lola::rank_rule::sv_fro(1.0)) == 4);
    // Σσ = 10; cumulative σ = 4, 7, 9, 10.
    CHECK(pick(lola::rank_rule::sv_cumulative(0.7)) == 2);  // 7 ≥ 7
    CHECK(pick(lola::rank_rule::sv_cumulative(0.71)) == 3);
    CHECK(pick(lola::rank_rule::sv_cumulative(0.1)) == 1);
    // σᵢ > σ₁/X.
    CHECK(pick(lola::rank_rule::sv_ratio(2.5)) == 3);  // > 1.6
    CHECK(pick(lola::rank_rule::sv_ratio(2.0)) == 2);  // > 2 (σ₃ = 2 is not counted)
    CHECK(pick(lola::rank_rule::sv_ratio(1.0)) == 1);  // never below 1
    CHECK(pick(lola::rank_rule::fixed(10)) == 4);      // never above the module's rank
    CHECK(lola::select_rank<double>(Eigen::Vector4d::Zero(), lola::rank_rule::sv_fro(0.5), 4) == 1);
    CHECK(lola::select_rank<double>(Eigen::VectorXd(), lola::rank_rule::fixed(3), 0) == 0);
    CHECK_THROWS_AS(lola::rank_rule::fixed(0), lola::error);
    CHECK_THROWS_AS(lola::rank_rule::sv_fro(0.0), lola::error);
    CHECK_THROWS_AS(lola::rank_rule::sv_cumulative(1.5), lola::error);
    CHECK_THROWS_AS(lola::rank_rule::sv_ratio(0.5), lola::error);
  }

  TEST_CASE_TEMPLATE("truncate(k) is the dense best rank-k approximation, scale kept", T, float,
                     double) {
    std::mt19937_64 rng(601);
    const int d = 30, k = 26, r = 8;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const T s = T(0.25);
    const auto L = lola::factor(B, A, s);
    const matrix_d dense = double(s) * in_double(B) * in_double(A);
    const Eigen::BDCSVD<matrix_d> svd(dense, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const double tolerance = product_tolerance<T>(d + k + r, double(s) * in_double(B).norm() * in_double(A).norm());
    for (int keep : {1, 3, 8}) {
      const auto result = lola::truncate(L, keep);
      CHECK(result.rank == keep);
      CHECK(result.factors.scale() == s);
      CHECK(result.factors.B().cols() == keep);
      const matrix_d best = svd.matrixU().leftCols(keep) *
                            svd.singularValues().head(keep).asDiagonal() *
                            svd.matrixV().leftCols(keep).transpose();
      // Eckart–Young: the truncation's distance to the dense best approximation is bounded by the
      // SVD errors over the gap to the dropped part; these random spectra are well separated, so
      // the tolerance is the SVD bound with a factor σ₁/(σ_k − σ_{k+1}) for the subspace rotation.
      const double gap = keep < r ? svd.singularValues()(keep - 1) - svd.singularValues()(keep)
                                  : svd.singularValues()(keep - 1);
      CHECK((in_double(lola::dense(result.factors)) - best).norm() <=
            tolerance * (1.0 + 2.0 * svd.singularValues()(0) / gap));
      const double retained = best.norm() / dense.norm();
      CHECK(std::abs(result.retained_fro_fraction - retained) <= 4.0 * tolerance / dense.norm());
    }
    CHECK(lola::truncate(L, 100).rank == r);
  }

  TEST_CASE("resize by rule on a constructed spectrum; kohya's left form") {
    std::mt19937_64 rng(602);
    const matrix_d U = lola::random_orthogonal(10, rng).leftCols(4);
    const matrix_d V = lola::random_orthogonal(9, rng).leftCols(4);
    const matrix_d B = U * Eigen::Vector4d(4, 3, 2, 1).asDiagonal();
    const auto L = lola::factor(B, V.transpose().eval(), 2.0);
    const auto fro = lola::resize(L, lola::rank_rule::sv_fro(0.9));
    CHECK(fro.rank == 2);
    CHECK(fro.retained_fro_fraction == doctest::Approx(std::sqrt(25.0 / 30.0)).epsilon(1e-12));
    // left form: A has orthonormal rows, the singular values sit in B.
    CHECK((fro.factors.A() * fro.factors.A().transpose() - matrix_d::Identity(2, 2)).norm() < 1e-13);
    CHECK(fro.factors.B().col(0).norm() == doctest::Approx(4.0));
    CHECK(lola::resize(L, lola::rank_rule::sv_ratio(2.5)).rank == 3);
    CHECK(lola::resize(L, lola::rank_rule::sv_cumulative(0.7)).rank == 2);
    const auto zero = lola::resize(lola::factor(matrix_d(matrix_d::Zero(10, 4)), V.transpose().eval()),
                                   lola::rank_rule::sv_fro(0.5));
    CHECK(zero.rank == 1);
    CHECK(zero.retained_fro_fraction == 1.0);
    CHECK(zero.factors.B().isZero(0));
  }
}
