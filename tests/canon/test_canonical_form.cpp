// Canonical forms are constant on GL(r) orbits; the sign rule and the degeneracy report.
#include <doctest/doctest.h>

#include <random>

#include <Eigen/Eigenvalues>

#include "lola/canon/canonical_form.hpp"
#include "lola/lola.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {
// How far the canonical factors may move when G is applied first. ΔW is perturbed by the action and
// the SVD by η·σ₁ with η = (8·r + 16·2·(d + k + r + 2))·ε·cond(G)·‖B‖‖A‖/σ₁ (test_low_rank_svd.cpp);
// by Wedin's theorem each singular vector turns by at most η/gap with gap = min_relative_gap, and
// each column of B* = U·√Σ (or U·Σ) has norm ≤ √σ₁ (or σ₁). Summed over r columns, with a factor 4
// for the √Σ and V sides.
template <class T>
double canonical_tolerance(int d, int k, int r, double cond, double norm_product, double sigma1,
                           double gap, double column_norm) {
  const double eta = (8.0 * r + 32.0 * (d + k + r + 2)) * eps<T>() * cond * norm_product / sigma1;
  return 4.0 * std::sqrt(double(r)) * eta / gap * column_norm;
}
}  // namespace

TEST_SUITE("canon.canonical_form") {
  TEST_CASE_TEMPLATE("balanced and left forms are GL(r)-invariant, cond up to 1e3", T, float,
                     double) {
    std::mt19937_64 rng(303);
    const int d = 40, k = 28, r = 5;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A, T(2));
    const double np = in_double(B).norm() * in_double(A).norm();
    for (auto form : {lola::canonical_form::balanced, lola::canonical_form::left}) {
      const auto reference = lola::canonicalize(L, form);
      REQUIRE(reference.rank == r);
      REQUIRE_FALSE(reference.degenerate);
      CHECK(reference.factors.scale() == T(2));
      const double sigma1 = reference.singular_values(0);
      const double column = form == lola::canonical_form::balanced ? std::sqrt(sigma1) : sigma1;
      for (double cond : {1.0, 10.0, 100.0, 1000.0}) {
        const matrix<T> G = lola::random_gl<T>(r, cond, rng);
        const auto moved = lola::canonicalize(lola::act(L, G), form);
        const double tol = canonical_tolerance<T>(d, k, r, cond, np, sigma1,
                                                  reference.min_relative_gap, column);
        CHECK((in_double(moved.factors.B()) - in_double(reference.factors.B())).norm() <= tol);
        CHECK((in_double(moved.factors.A()) - in_double(reference.factors.A())).norm() <=
              tol * (form == lola::canonical_form::left ? 1.0 / sigma1 : 1.0));
      }
      // s·B*·A* = s·B·A.
      CHECK((in_double(lola::dense(reference.factors)) - 2.0 * in_double(B) * in_double(A)).norm() <=
            lola_test::product_tolerance<T>(d + k + r, 2.0 * np));
    }
  }

  TEST_CASE("without the sign rule the form is not invariant: the rule is doing the work") {
    // The deliberately wrong variant: B* = U·√Σ straight from the SVD of the transformed factors.
    std::mt19937_64 rng(304);
    const int d = 20, k = 15, r = 4;
    const matrix_d B = gaussian<double>(d, r, rng), A = gaussian<double>(r, k, rng);
    const auto L = lola::factor(B, A);
    const auto reference = lola::canonicalize(L);
    bool wrong_variant_moved = false;
    for (int trial = 0; trial < 20; ++trial) {
      const matrix_d G = lola::random_gl(r, 10.0, rng);
      const lola::low_rank_svd<double> svd(lola::act(L, G));
      const matrix_d raw = svd.matrixU() * svd.singularValues().cwiseSqrt().asDiagonal();
      wrong_variant_moved |= (raw - reference.factors.B()).norm() > 1e-6;
      CHECK((lola::canonicalize(lola::act(L, G)).factors.B() - reference.factors.B()).norm() <= 1e-9);
    }
    CHECK(wrong_variant_moved);
  }

  TEST_CASE("sign rule: largest-magnitude entry of each U column is positive, ties to the lowest index") {
    // ΔW = U·diag(3, 2, 1)·Vᵀ with U's columns chosen to exercise the rule: column 0 has its largest
    // entry negative, column 1 a tie (±1/√2) whose first entry is negative.
    matrix_d U = matrix_d::Zero(4, 3), V = matrix_d::Zero(3, 3);
    U(2, 0) = -1.0;
    U(0, 1) = -std::sqrt(0.5);
    U(1, 1) = std::sqrt(0.5);
    U(3, 2) = 1.0;
    V = matrix_d::Identity(3, 3);
    const matrix_d B = U * Eigen::Vector3d(3, 2, 1).asDiagonal();
    const auto c = lola::canonicalize(lola::factor(B, V.transpose().eval()), lola::canonical_form::left);
    const auto& Bs = c.factors.B();
    CHECK(Bs(2, 0) == doctest::Approx(3.0));
    CHECK(Bs(0, 1) == doctest::Approx(2.0 * std::sqrt(0.5)));  // first of the tied pair made positive
    CHECK(Bs(1, 1) == doctest::Approx(-2.0 * std::sqrt(0.5)));
    CHECK(Bs(3, 2) == doctest::Approx(1.0));
    CHECK((c.factors.A() * c.factors.A().transpose() - matrix_d::Identity(3, 3)).norm() < 1e-14);
  }

  TEST_CASE("repeated singular values are flagged degenerate; distinct ones are not") {
    std::mt19937_64 rng(5);
    const matrix_d U = lola::random_orthogonal(6, rng).leftCols(4);
    const matrix_d V = lola::random_orthogonal(5, rng).leftCols(4);
    const auto with_sigma = [&](Eigen::Vector4d sigma) {
      const matrix_d B = U * sigma.asDiagonal();
      return lola::canonicalize(lola::factor(B, V.transpose().eval()));
    };
    const auto repeated = with_sigma({3, 2, 2, 1});
    CHECK(repeated.degenerate);
    CHECK(repeated.min_relative_gap <= 1e-14);
    const auto distinct = with_sigma({3, 2, 1.5, 1});
    CHECK_FALSE(distinct.degenerate);
    CHECK(distinct.min_relative_gap == doctest::Approx(0.5 / 3.0));
    lola::canonical_options<double> strict;
    strict.gap_threshold = 0.2;
    CHECK(lola::canonicalize(lola::factor(matrix_d(U * Eigen::Vector4d(3, 2, 1.5, 1).asDiagonal()),
                                          V.transpose().eval()),
                             lola::canonical_form::balanced, strict)
              .degenerate);
  }

  TEST_CASE("rank-deficient, zero and r > min(d, k): components beyond the rank are exactly zero") {
    std::mt19937_64 rng(6);
    const matrix_d B = gaussian<double>(10, 2, rng) * gaussian<double>(2, 5, rng);
    const matrix_d A = gaussian<double>(5, 8, rng);
    const auto c = lola::canonicalize(lola::factor(B, A));
    CHECK(c.rank == 2);
    CHECK(c.factors.B().rows() == 10);
    CHECK(c.factors.B().cols() == 5);
    CHECK(c.factors.B().rightCols(3).isZero(0));
    CHECK(c.factors.A().bottomRows(3).isZero(0));
    CHECK((lola::dense(c.factors) - B * A).norm() <= 1e-12 * (B * A).norm());

    const auto zero = lola::canonicalize(lola::factor(matrix_d(matrix_d::Zero(4, 3)), A.topRows(3).eval()));
    CHECK(zero.rank == 0);
    CHECK_FALSE(zero.degenerate);
    CHECK(zero.factors.B().isZero(0));
    CHECK(zero.factors.A().isZero(0));

    const matrix_d Bw = gaussian<double>(3, 6, rng), Aw = gaussian<double>(6, 2, rng);
    const auto wide = lola::canonicalize(lola::factor(Bw, Aw));
    CHECK(wide.rank == 2);
    CHECK(wide.factors.B().cols() == 6);
    CHECK((lola::dense(wide.factors) - Bw * Aw).norm() <= 1e-12 * (Bw * Aw).norm());
  }

  TEST_CASE("qr_form: orthonormal B, same ΔW, determined up to O(r)") {
    std::mt19937_64 rng(7);
    const matrix_d B = gaussian<double>(12, 4, rng), A = gaussian<double>(4, 9, rng);
    const auto q = lola::qr_form(lola::factor(B, A, 0.5));
    CHECK((q.B().transpose() * q.B() - matrix_d::Identity(4, 4)).norm() <= 1e-14 * 16);
    CHECK((lola::dense(q) - 0.5 * B * A).norm() <= 1e-13 * (B * A).norm());
    // Under an orthogonal element Q, B·Q has the same column space: the qr forms differ by an O(r)
    // element only, so their Grams A*·A*ᵀ share eigenvalues; a GL element changes R and so A*.
    const matrix_d Q = lola::random_orthogonal(4, rng);
    const auto moved = lola::qr_form(lola::act_orthogonal(lola::factor(B, A, 0.5), Q));
    const auto spectrum = [](const matrix_d& M) {
      return Eigen::SelfAdjointEigenSolver<matrix_d>(M * M.transpose()).eigenvalues().eval();
    };
    CHECK((spectrum(moved.A()) - spectrum(q.A())).norm() <= 1e-12 * spectrum(q.A()).norm());
  }
}
