// Inner product, norm and trace of ΔW from the factors, against dense references.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "lola/backend/eigen/reductions.hpp"
#include "lola/canon/canonical_form.hpp"
#include "lola/core/random.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "lola/expr/transposed.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

TEST_SUITE("expr.reductions") {
  TEST_CASE_TEMPLATE("inner, norm and trace match the dense ΔW", T, float, double) {
    std::mt19937_64 rng(8);
    const int d = 17, k = 17, r1 = 4, r2 = 3;
    const matrix<T> B1 = gaussian<T>(d, r1, rng), A1 = gaussian<T>(r1, k, rng);
    const matrix<T> B2 = gaussian<T>(d, r2, rng), A2 = gaussian<T>(r2, k, rng);
    const T s1 = T(0.5), s2 = T(3);
    const auto L1 = lola::factor(B1, A1, s1);
    const auto L2 = lola::factor(B2, A2, s2);
    const matrix_d W1 = double(s1) * in_double(B1) * in_double(A1);
    const matrix_d W2 = double(s2) * in_double(B2) * in_double(A2);
    const double n1 = double(s1) * in_double(B1).norm() * in_double(A1).norm();
    const double n2 = double(s2) * in_double(B2).norm() * in_double(A2).norm();

    // ⟨ΔW₁, ΔW₂⟩ through the r₁×r₂ cross Grams: inner lengths d and k, then r₁·r₂ terms.
    CHECK(std::abs(lola::inner(L1, L2) - W1.cwiseProduct(W2).sum()) <=
          product_tolerance<T>(d + k + r1 * r2, n1 * n2));
    CHECK(std::abs(lola::inner(L1, L1) - W1.squaredNorm()) <=
          product_tolerance<T>(d + k + r1 * r1, n1 * n1));
    // ‖ΔW‖_F through the QR of B: Householder on d rows, then R·A with r terms.
    CHECK(std::abs(lola::norm(L1) - W1.norm()) <= product_tolerance<T>(d + r1, n1));
    CHECK(std::abs(lola::norm(L1 + L2) - (W1 + W2).norm()) <=
          product_tolerance<T>(d + r1 + r2, n1 + n2));
    CHECK(std::abs(lola::norm(T(-2) * L1) - 2 * W1.norm()) <= product_tolerance<T>(d + r1, 2 * n1));
    // tr(ΔW) = s·Σ Bᵢⱼ Aⱼᵢ: d·r products summed.
    CHECK(std::abs(lola::trace(L1) - W1.trace()) <= product_tolerance<T>(d * r1, n1));
    CHECK(std::abs(lola::trace(lola::transpose(L1)) - W1.trace()) <=
          product_tolerance<T>(d * r1, n1));
  }

  TEST_CASE("trace of a non-square ΔW and inner of mismatched shapes throw") {
    const Eigen::MatrixXd B = Eigen::MatrixXd::Ones(4, 2), A = Eigen::MatrixXd::Ones(2, 3);
    const auto L = lola::factor(B, A);
    try {
      (void)lola::trace(L);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("4x3") != std::string::npos);
    }
    CHECK_THROWS_AS(lola::inner(L, lola::transpose(L)), lola::error);
  }

  // After a GL action the factors are unbalanced: κ = ‖B‖_F‖A‖_F/‖BA‖_F grows like cond(G) (here
  // 1e5, so that κ is far above the constant of the bound and the two routes separate). The QR
  // route's relative error is O(ε·κ) (backward-stable QR, then one product); the Gram route
  // tr((BᵀB)(AAᵀ)) is O(ε·κ²). Check the first against c·(d + r)·ε·κ and show that the second,
  // written out here as the deliberately wrong variant, fails that bound.
  TEST_CASE_TEMPLATE("norm() stays accurate on unbalanced factors; the Gram formula does not", T,
                     float, double) {
    std::mt19937_64 rng(31);
    const int d = 64, k = 48, r = 6;
    double worst_qr = 0, worst_gram = 0;
    for (int trial = 0; trial < 10; ++trial) {
      const matrix_d B = gaussian<double>(d, r, rng), A = gaussian<double>(r, k, rng);
      const matrix_d G = lola::random_gl(r, 1e5, rng);
      // The unbalanced factors, rounded once to T; the exact norm of *their* product is the target.
      const matrix<T> Bg = (B * G).cast<T>();
      const matrix<T> Ag = G.partialPivLu().solve(A).cast<T>();
      const double exact = (in_double(Bg) * in_double(Ag)).norm();
      const double kappa = in_double(Bg).norm() * in_double(Ag).norm() / exact;
      const double bound = 2.0 * (d + r) * eps<T>() * kappa;

      const double qr_error = std::abs(lola::norm(lola::factor(Bg, Ag)) - exact) / exact;
      CHECK(qr_error <= bound);
      worst_qr = std::max(worst_qr, qr_error / bound);

      const matrix<T> gram_b = Bg.transpose() * Bg, gram_a = Ag * Ag.transpose();
      const double gram_square = double(gram_b.cwiseProduct(gram_a).sum());
      const double gram_error = std::abs(std::sqrt(std::max(gram_square, 0.0)) - exact) / exact;
      worst_gram = std::max(worst_gram, gram_error / bound);
    }
    MESSAGE("worst error / bound: QR route " << worst_qr << ", Gram route " << worst_gram);
    CHECK(worst_gram > 1.0);
  }

  TEST_CASE_TEMPLATE("norm and qr_form hold where the factors' squared norms overflow", T, float, double) {
    // B scaled by an exact power of two 2^shift with shift near the top of the exponent range: the
    // Householder QR of B as it is would square entries past the range (NaN). Scaling by a power of
    // two changes no digit, so ‖ΔW‖_F and R_B scale by exactly 2^shift and Q_B not at all, up to the
    // rounding of two different QRs of the same digits: one ε per flop of the p×k product R·A, and
    // the QR's own backward error of order d·r·ε (Higham, Thm 19.4), relative to the norm.
    std::mt19937_64 rng(1402);
    const int d = 24, k = 18, r = 4;
    const int shift = std::numeric_limits<T>::max_exponent - 12;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const matrix<T> B_huge = B.unaryExpr([shift](T v) { return std::ldexp(v, shift); });
    const double tolerance = 4.0 * (d * r + k) * lola_test::eps<T>();
    const double small = double(lola::norm(lola::factor(B, A)));
    const double huge = double(lola::norm(lola::factor(B_huge, A)));
    REQUIRE(std::isfinite(huge));
    CHECK(std::ldexp(huge, -shift) == doctest::Approx(small).epsilon(tolerance));
    const auto q_small = lola::qr_form(lola::factor(B, A));
    const auto q_huge = lola::qr_form(lola::factor(B_huge, A));
    REQUIRE(q_huge.B().allFinite());
    REQUIRE(q_huge.A().allFinite());
    CHECK((q_huge.B() - q_small.B()).norm() <= tolerance * std::sqrt(double(r)));
    const matrix<T> ra_scaled = q_huge.A().unaryExpr([shift](T v) { return std::ldexp(v, -shift); });
    CHECK((ra_scaled - q_small.A()).norm() <= tolerance * q_small.A().norm());
  }
}

