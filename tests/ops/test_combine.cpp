// Combining modules: exact weighted sums, SVD re-compression, and PEFT's cat / linear / svd.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include <Eigen/SVD>

#include "lola/lola.hpp"
#include "lola/ops/combine.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

namespace {
template <class T>
struct three_modules {
  static constexpr int d = 18, k = 14;
  std::vector<lola::low_rank_matrix<T>> modules;
  std::vector<T> weights{T(1), T(-0.5), T(2)};
  matrix_d weighted_sum = matrix_d::Zero(d, k);
  double norm_sum = 0;  // Σ |wᵢsᵢ|·‖Bᵢ‖‖Aᵢ‖, the scale of every rounding bound
  explicit three_modules(std::vector<int> ranks) {
    std::mt19937_64 rng(701);
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const T s = T(0.5 + i);
      modules.emplace_back(gaussian<T>(d, ranks[i], rng), gaussian<T>(ranks[i], k, rng), s);
      weighted_sum += double(weights[i]) * in_double(lola::dense(modules[i]));
      norm_sum += std::abs(double(weights[i] * s)) * in_double(modules[i].B()).norm() *
                  in_double(modules[i].A()).norm();
    }
  }
};
}  // namespace

TEST_SUITE("ops.combine") {
  TEST_CASE_TEMPLATE("weighted_sum and cat are exact: ranks add", T, float, double) {
    three_modules<T> m({2, 3, 4});
    const double tolerance = product_tolerance<T>(9, m.norm_sum);
    for (auto type : {lola::combination::weighted_sum, lola::combination::cat}) {
      const auto sum = lola::combine(m.modules, m.weights, type);
      CHECK(sum.rank() == 9);
      CHECK(sum.scale() == T(1));
      CHECK((in_double(lola::dense(sum)) - m.weighted_sum).norm() <= tolerance);
    }
    // cat puts the weights on A, as PEFT does: B is the plain concatenation.
    const auto cat = lola::combine(m.modules, m.weights, lola::combination::cat);
    CHECK(cat.B().leftCols(2) == m.modules[0].B());
  }

  TEST_CASE_TEMPLATE("SVD re-compression equals the dense best rank-k approximation of the sum", T,
                     float, double) {
    three_modules<T> m({2, 3, 4});
    const Eigen::BDCSVD<matrix_d> svd(m.weighted_sum, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const auto& sigma = svd.singularValues();
    const double tolerance = product_tolerance<T>(m.d + m.k + 9, m.norm_sum);
    for (int k : {1, 4, 9}) {
      const matrix_d best = svd.matrixU().leftCols(k) * sigma.head(k).asDiagonal() *
                            svd.matrixV().leftCols(k).transpose();
      // Subspace rotation amplifies the SVD error by σ₁/(σ_k − σ_{k+1}) (Wedin).
      const double gap = k < 9 ? sigma(k - 1) - sigma(k) : sigma(k - 1);
      const double bound = tolerance * (1.0 + 2.0 * sigma(0) / gap);
      const auto compressed = lola::combine(m.modules, m.weights, lola::combination::weighted_sum, k);
      CHECK(compressed.rank() == k);
      CHECK((in_double(lola::dense(compressed)) - best).norm() <= bound);
      const auto peft_svd = lola::combine(m.modules, m.weights, lola::combination::svd, k);
      CHECK((in_double(lola::dense(peft_svd)) - best).norm() <= bound);
      // PEFT's svd puts every singular value in B: A has orthonormal rows.
      CHECK((in_double(peft_svd.A()) * in_double(peft_svd.A()).transpose() - matrix_d::Identity(k, k)).norm() <=
            100.0 * k * lola_test::eps<T>());
    }
    // The default svd rank is the largest input rank.
    CHECK(lola::combine(m.modules, m.weights, lola::combination::svd).rank() == 4);
  }

  TEST_CASE_TEMPLATE("within a rank budget: exact up to it, the best approximation beyond, with the kept fraction",
                     T, float, double) {
    three_modules<T> m({2, 3, 4});
    const Eigen::BDCSVD<matrix_d> svd(m.weighted_sum, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const auto& sigma = svd.singularValues();
    const double tolerance = product_tolerance<T>(m.d + m.k + 9, m.norm_sum);
    for (int k : {9, 12}) {  // Σ rᵢ = 9 fits: the exact sum, rank 9, nothing lost
      const auto fits = lola::weighted_sum_within_rank(m.modules, m.weights, k);
      CHECK(fits.rank == 9);
      CHECK(fits.factors.rank() == 9);
      CHECK(fits.retained_fro_fraction == T(1));
      CHECK((in_double(lola::dense(fits.factors)) - m.weighted_sum).norm() <= product_tolerance<T>(9, m.norm_sum));
    }
    for (int k : {1, 4}) {
      const auto cut = lola::weighted_sum_within_rank(m.modules, m.weights, k);
      CHECK(cut.rank == k);
      const matrix_d best = svd.matrixU().leftCols(k) * sigma.head(k).asDiagonal() *
                            svd.matrixV().leftCols(k).transpose();
      const double bound = tolerance * (1.0 + 2.0 * sigma(0) / (sigma(k - 1) - sigma(k)));  // Wedin, as above
      CHECK((in_double(lola::dense(cut.factors)) - best).norm() <= bound);
      // ‖ΔW_k‖/‖ΔW‖ from the dense σ; each σᵢ is off by at most the tolerance (Weyl).
      const double fraction = sigma.head(k).norm() / sigma.norm();
      CHECK(std::abs(double(cut.retained_fro_fraction) - fraction) <= 4.0 * tolerance / sigma.norm());
    }
    const auto nothing = lola::weighted_sum_within_rank(m.modules, m.weights, 0);
    CHECK(nothing.rank == 0);
    CHECK(nothing.retained_fro_fraction == T(0));
    CHECK_THROWS_AS(lola::weighted_sum_within_rank(m.modules, m.weights, -1), lola::error);
  }

  TEST_CASE_TEMPLATE("PEFT linear combines A and B separately: cross terms, not the weighted sum", T,
                     float, double) {
    three_modules<T> m({3, 3, 3});
    const auto linear = lola::combine(m.modules, m.weights, lola::combination::linear);
    CHECK(linear.rank() == 3);
    // (Σ √|cᵢ|·Bᵢ)·(Σ sign(cⱼ)·√|cⱼ|·Aⱼ), written out term by term, cᵢ = wᵢ·sᵢ.
    matrix_d expected = matrix_d::Zero(m.d, m.k);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        const double ci = double(m.weights[i] * m.modules[i].scale());
        const double cj = double(m.weights[j] * m.modules[j].scale());
        expected += std::sqrt(std::abs(ci)) * std::sqrt(std::abs(cj)) * (cj < 0 ? -1.0 : 1.0) *
                    in_double(m.modules[i].B()) * in_double(m.modules[j].A());
      }
    const double tolerance = product_tolerance<T>(9, 9 * m.norm_sum);
    CHECK((in_double(lola::dense(linear)) - expected).norm() <= tolerance);
    CHECK((in_double(lola::dense(linear)) - m.weighted_sum).norm() > 0.1 * m.weighted_sum.norm());
  }

  TEST_CASE("bad combinations are reported") {
    three_modules<double> m({2, 3, 4});
    CHECK_THROWS_AS(lola::combine(m.modules, std::vector<double>{1.0, 2.0}), lola::error);
    try {
      (void)lola::combine(m.modules, m.weights, lola::combination::linear);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("rank 2") != std::string::npos);
    }
    std::vector<lola::low_rank_matrix<double>> mixed = m.modules;
    mixed.emplace_back(matrix_d(matrix_d::Ones(5, 2)), matrix_d(matrix_d::Ones(2, 14)));
    try {
      (void)lola::combine(mixed, std::vector<double>{1, 1, 1, 1});
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("module 3 is 5x14") != std::string::npos);
    }
    CHECK_THROWS_AS(lola::combine(std::vector<lola::low_rank_matrix<double>>{}, std::vector<double>{}),
                    lola::error);
  }
}
