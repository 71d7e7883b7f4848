// Spectral features, Grams, cosine similarity and marginals against dense references.
#include <doctest/doctest.h>

#include <random>

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include "lola/features/grams.hpp"
#include "lola/features/marginals.hpp"
#include "lola/features/similarity.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/lola.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

TEST_SUITE("features.spectrum") {
  TEST_CASE_TEMPLATE("singular values padded or truncated; summary matches the dense ΔW", T, float,
                     double) {
    std::mt19937_64 rng(501);
    const int d = 24, k = 18, r = 4;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A, T(1.5));
    const matrix_d dense = 1.5 * in_double(B) * in_double(A);
    const Eigen::VectorXd sigma = Eigen::BDCSVD<matrix_d>(dense).singularValues().head(r);
    const double tolerance = product_tolerance<T>(d + k + r, 1.5 * in_double(B).norm() * in_double(A).norm());

    const auto all = lola::singular_values(L);
    CHECK(all.size() == r);
    const auto padded = lola::singular_values(L, 7);
    CHECK(padded.size() == 7);
    CHECK(padded.tail(3).isZero(0));
    CHECK((in_double(padded.head(r)) - sigma).cwiseAbs().maxCoeff() <= tolerance);
    const auto truncated = lola::singular_values(L, 2);
    CHECK(truncated.size() == 2);
    CHECK((in_double(truncated) - sigma.head(2)).cwiseAbs().maxCoeff() <= tolerance);

    const auto summary = lola::spectral_summary(L);
    CHECK(std::abs(summary.frobenius - dense.norm()) <= tolerance);
    CHECK(std::abs(summary.spectral - sigma(0)) <= tolerance);
    CHECK(std::abs(summary.nuclear - sigma.sum()) <= r * tolerance);
    // Stable rank ‖ΔW‖²_F/σ₁²: relative error ≤ 2·tolerance/σ₁ from each of its two terms.
    const double stable = dense.squaredNorm() / (sigma(0) * sigma(0));
    CHECK(std::abs(summary.stable_rank - stable) <= 6.0 * stable * tolerance / sigma(r - 1));
    CHECK(summary.stable_rank >= 1.0 - 1e-6);
    CHECK(summary.stable_rank <= r + 1e-6);
    CHECK(summary.effective_rank >= 1.0 - 1e-6);
    CHECK(summary.effective_rank <= r + 1e-6);
  }

  TEST_CASE("effective and stable rank on constructed spectra") {
    std::mt19937_64 rng(502);
    const matrix_d U = lola::random_orthogonal(8, rng).leftCols(4);
    const matrix_d V = lola::random_orthogonal(6, rng).leftCols(4);
    const auto summary_of = [&](Eigen::Vector4d sigma) {
      return lola::spectral_summary(lola::factor(matrix_d(U * sigma.asDiagonal()), V.transpose().eval()));
    };
    // Equal σ: p = 1/4 each, entropy log 4, effective rank 4; stable rank 4.
    const auto flat = summary_of({2, 2, 2, 2});
    CHECK(flat.effective_rank == doctest::Approx(4.0).epsilon(1e-12));
    CHECK(flat.stable_rank == doctest::Approx(4.0).epsilon(1e-12));
    // One non-zero σ: rank 1 by both measures.
    const auto spike = summary_of({5, 0, 0, 0});
    CHECK(spike.effective_rank == doctest::Approx(1.0).epsilon(1e-12));
    CHECK(spike.stable_rank == doctest::Approx(1.0).epsilon(1e-12));
    const auto zero = summary_of({0, 0, 0, 0});
    CHECK(zero.frobenius == 0.0);
    CHECK(zero.effective_rank == 0.0);
  }

  TEST_CASE_TEMPLATE("Grams are O(r)-equivariant; their eigenvalues O(r)-invariant but not GL(r)", T,
                     float, double) {
    std::mt19937_64 rng(503);
    const int d = 20, k = 14, r = 4;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A);
    const auto g = lola::grams(L);
    CHECK((in_double(g.b_gram) - in_double(B).transpose() * in_double(B)).norm() <=
          product_tolerance<T>(d, in_double(B).squaredNorm()));
    CHECK((in_double(g.a_gram) - in_double(A) * in_double(A).transpose()).norm() <=
          product_tolerance<T>(k, in_double(A).squaredNorm()));
    const matrix<T> Q = lola::random_orthogonal<T>(r, rng);
    const auto moved = lola::grams(lola::act_orthogonal(L, Q));
    // (BQ)ᵀ(BQ) = Qᵀ(BᵀB)Q: both sides carry γ_d‖B‖² from the Gram plus γ_r from the rotations.
    const double tolerance = product_tolerance<T>(d + 2 * r, in_double(B).squaredNorm());
    CHECK((in_double(moved.b_gram) - in_double(Q).transpose() * in_double(g.b_gram) * in_double(Q)).norm() <=
          tolerance);
    const auto eigenvalues = [](const auto& M) {
      return Eigen::SelfAdjointEigenSolver<matrix_d>(in_double(M)).eigenvalues().eval();
    };
    CHECK((eigenvalues(moved.b_gram) - eigenvalues(g.b_gram)).norm() <= tolerance);
    const matrix<T> G = lola::random_gl<T>(r, 10.0, rng);
    const auto skewed = lola::grams(lola::act(L, G));
    CHECK((eigenvalues(skewed.b_gram) - eigenvalues(g.b_gram)).norm() > tolerance);
  }

  TEST_CASE_TEMPLATE("cosine similarity and marginals", T, float, double) {
    std::mt19937_64 rng(504);
    const int d = 15, k = 11;
    const matrix<T> B1 = gaussian<T>(d, 3, rng), A1 = gaussian<T>(3, k, rng);
    const matrix<T> B2 = gaussian<T>(d, 2, rng), A2 = gaussian<T>(2, k, rng);
    const auto L1 = lola::factor(B1, A1, T(0.5)), L2 = lola::factor(B2, A2, T(-2));
    const matrix_d W1 = 0.5 * in_double(B1) * in_double(A1), W2 = -2.0 * in_double(B2) * in_double(A2);
    const double cosine = W1.cwiseProduct(W2).sum() / (W1.norm() * W2.norm());
    // Each of the three reductions is accurate to γ_{d+k+r₁r₂} relative to the norm products, and
    // the cosine's denominator is no smaller than its numerator's scale for these random factors.
    const double tolerance = 3.0 * product_tolerance<T>(d + k + 9, 1.0) *
                             (in_double(B1).norm() * in_double(A1).norm() / W1.norm()) *
                             (in_double(B2).norm() * in_double(A2).norm() / W2.norm());
    CHECK(std::abs(lola::cosine_similarity(L1, L2) - cosine) <= tolerance);
    CHECK(lola::cosine_similarity(L1, L1) == doctest::Approx(1.0).epsilon(10 * eps<T>()));
    const matrix<T> G = lola::random_gl<T>(3, 10.0, rng);
    CHECK(std::abs(lola::cosine_similarity(lola::act(L1, G), L2) - cosine) <= 10.0 * tolerance);
    const matrix<T> zero = matrix<T>::Zero(d, 3);
    CHECK(lola::cosine_similarity(lola::factor(zero, A1), L2) == T(0));

    const double marginal_tolerance = product_tolerance<T>(k + 3, 0.5 * in_double(B1).norm() * in_double(A1).norm() * std::sqrt(double(k)));
    CHECK((in_double(lola::row_sums(L1)) - W1.rowwise().sum()).norm() <= marginal_tolerance);
    CHECK((in_double(lola::column_sums(L1)) - W1.colwise().sum().transpose()).norm() <=
          product_tolerance<T>(d + 3, 0.5 * in_double(B1).norm() * in_double(A1).norm() * std::sqrt(double(d))));
  }
}
