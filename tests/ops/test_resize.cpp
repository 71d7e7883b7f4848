// Resizing: kohya's rank rules, and truncation equals the dense best rank-k approximation.
#include <doctest/doctest.h>

#include <limits>
#include <random>
#include <string>

#include <Eigen/SVD>

#include "lola/lola.hpp"
#include "lola/ops/resize.hpp"
#include "support/errors.hpp"
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

  TEST_CASE("a fixed rank is an exact integer over the whole range of lola::index") {
    const Eigen::Vector4d sigma(4, 3, 2, 1);
    constexpr lola::index largest = std::numeric_limits<lola::index>::max();
    // 2^53 + 1 is the first integer a double cannot hold: a rule that kept k as a double would
    // select 2^53 here, and would convert 2^63 - 1 back from 2^63 (undefined behaviour).
    const lola::index odd = (lola::index(1) << 53) + 1;
    CHECK(lola::select_rank<double>(sigma, lola::rank_rule::fixed(odd), odd + 1) == odd);
    CHECK(lola::select_rank<double>(sigma, lola::rank_rule::fixed(largest), largest) == largest);
    CHECK(lola::select_rank<double>(sigma, lola::rank_rule::fixed(largest), 4) == 4);
    CHECK(lola::select_rank<double>(sigma, lola::rank_rule::fixed(largest - 1), largest) == largest - 1);
    // Ranks below 1 are invalid_argument naming the rank, from fixed() and from a rule whose field
    // was set directly.
    for (lola::index bad : {lola::index(0), lola::index(-1), std::numeric_limits<lola::index>::min()}) {
      const lola::error e = lola_test::thrown_by([&] { (void)lola::rank_rule::fixed(bad); });
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(lola_test::contains(e.what(), "must be >= 1, got " + std::to_string(bad)));
    }
    lola::rank_rule zero = lola::rank_rule::fixed(1);
    zero.rank = 0;
    CHECK_THROWS_AS(lola::select_rank<double>(sigma, zero, 4), lola::error);
  }

  TEST_CASE("singular values beyond the compute type: resize names itself, before any rank is chosen") {
    std::mt19937_64 rng(1210);
    const Eigen::MatrixXd B = 1e200 * lola_test::gaussian<double>(8, 2, rng);
    const Eigen::MatrixXd A = 1e200 * lola_test::gaussian<double>(2, 8, rng);
    for (const lola::rank_rule& rule : {lola::rank_rule::fixed(1), lola::rank_rule::sv_fro(0.9)}) {
      try {
        (void)lola::resize(lola::factor(B, A, 1.0), rule);
        FAIL("no exception");
      } catch (const lola::error& e) {
        CHECK(e.code() == lola::error_code::numerical);
        CHECK(std::string(e.what()).find("resize: the singular values of the 8x8 module exceed the range") !=
              std::string::npos);
      }
    }
  }

  TEST_CASE("resize to the largest rank keeps every component: dW unchanged, no overflow") {
    std::mt19937_64 rng(603);
    const int d = 12, k = 9, r = 5;
    // Numerical rank 3 < r: the huge rank keeps all min(r, d, k) = 5 components, the two zero ones
    // included, so the product is the input's exactly up to rounding.
    const matrix_d B = gaussian<double>(d, 3, rng) * gaussian<double>(3, r, rng);
    const matrix_d A = gaussian<double>(r, k, rng);
    const auto L = lola::factor(B, A, 0.5);
    for (lola::index huge : {std::numeric_limits<lola::index>::max(), (lola::index(1) << 53) + 1,
                             lola::index(r)}) {
      const auto result = lola::resize(L, lola::rank_rule::fixed(huge));
      CHECK(result.rank == r);
      CHECK(result.factors.B().cols() == r);
      CHECK(result.factors.scale() == 0.5);
      CHECK(result.retained_fro_fraction == doctest::Approx(1.0).epsilon(1e-14));
      const matrix_d dense = 0.5 * B * A;
      // One SVD of a 5-column product: rounding is a small multiple of ε·‖ΔW‖.
      CHECK((lola::dense(result.factors) - dense).norm() <= 1e-13 * dense.norm());
    }
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

  TEST_CASE_TEMPLATE("rank rules and the retained fraction hold where Σσ² overflows", T, float, double) {
    // σ near the top of the range: Σσ² is inf in T (and in double for T = double), so a fraction
    // taken as a ratio of sums of squares is inf/inf. The same module scaled down by an exact power
    // of two has σ scaled by exactly that power, the same ratios σᵢ/σ₁, and must give the same rank
    // and fraction. The two σ come from different routes of the factor-space SVD (rescaled and
    // direct), each with relative error of order 16·(d + k)·ε in σᵢ/σ₁ (low_rank_svd.hpp), and the
    // fraction moves by at most r times that.
    std::mt19937_64 rng(1401);
    const int d = 30, k = 20, r = 5;
    const int shift = std::numeric_limits<T>::max_exponent - 8;
    matrix<T> B = gaussian<T>(d, r, rng);
    const matrix<T> A = gaussian<T>(r, k, rng);
    const matrix<T> B_huge = B.unaryExpr([shift](T v) { return std::ldexp(v, shift); });
    for (const auto& rule : {lola::rank_rule::sv_fro(0.8), lola::rank_rule::sv_cumulative(0.7)}) {
      const auto small = lola::resize(lola::factor(B, A), rule);
      const auto huge = lola::resize(lola::factor(B_huge, A), rule);
      REQUIRE(std::isfinite(double(huge.singular_values(0))));
      CHECK(huge.rank == small.rank);
      CHECK(std::isfinite(double(huge.retained_fro_fraction)));
      CHECK(double(huge.retained_fro_fraction) ==
            doctest::Approx(double(small.retained_fro_fraction)).epsilon(r * 16.0 * (d + k) * lola_test::eps<T>()));
    }
  }
}

