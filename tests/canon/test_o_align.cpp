// O-Align: O(r)-invariant, not GL(r)-invariant, and optimal among rotations.
#include <doctest/doctest.h>

#include <limits>
#include <random>
#include <string>

#include "lola/canon/o_align.hpp"
#include "lola/lola.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {
template <class B1, class A1, class B2, class A2>
double objective(const B1& B, const A1& A, const B2& Bt, const A2& At) {
  return (in_double(B) - in_double(Bt)).squaredNorm() + (in_double(A) - in_double(At)).squaredNorm();
}
}  // namespace

TEST_SUITE("canon.o_align") {
  TEST_CASE_TEMPLATE("invariant under O(r); a GL(r) element changes the result", T, float, double) {
    std::mt19937_64 rng(404);
    const int d = 30, k = 22, r = 4;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const matrix<T> Bt = gaussian<T>(d, r, rng), At = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A);
    const auto templ = lola::factor(Bt, At);
    const auto reference = lola::o_align(L, templ);
    REQUIRE(reference.min_singular_value > 0.01);
    // Q moves by about ε·(d + k + r)·‖M‖/σ_r(M) (Procrustes sensitivity), and the factors with it;
    // plus the rounding of the O(r) element itself (√r·ε, test_random.cpp). Factor 4 for the two
    // alignments compared.
    const double scale = in_double(B).norm() + in_double(A).norm();
    const double tolerance =
        4.0 * (d + k + r) * eps<T>() * scale / reference.min_singular_value;
    for (int trial = 0; trial < 5; ++trial) {
      const matrix<T> Q = lola::random_orthogonal<T>(r, rng);
      const auto moved = lola::o_align(lola::act_orthogonal(L, Q), templ);
      CHECK((in_double(moved.aligned.B()) - in_double(reference.aligned.B())).norm() <= tolerance);
      CHECK((in_double(moved.aligned.A()) - in_double(reference.aligned.A())).norm() <= tolerance);

      const matrix<T> G = lola::random_gl<T>(r, 10.0, rng);
      const auto skewed = lola::o_align(lola::act(L, G), templ);
      CHECK((in_double(skewed.aligned.B()) - in_double(reference.aligned.B())).norm() > tolerance);
    }
    // Same ΔW, rotated factors.
    CHECK((in_double(lola::dense(reference.aligned)) - in_double(B) * in_double(A)).norm() <=
          lola_test::product_tolerance<T>(3 * r, in_double(B).norm() * in_double(A).norm()));
    // Q = P·Sᵀ: P and S from Jacobi rotations are orthonormal to about γ_r·√r each, and their
    // product adds γ_r: ‖QᵀQ − I‖_F ≤ 3·2r·ε·√r, rounded up to 8·r·ε·√r.
    CHECK((in_double(reference.Q).transpose() * in_double(reference.Q) - matrix_d::Identity(r, r)).norm() <=
          8.0 * r * eps<T>() * std::sqrt(double(r)));
  }

  TEST_CASE("the aligned factors are closer to the template than under any other rotation tried") {
    std::mt19937_64 rng(405);
    const int d = 16, k = 12, r = 3;
    const matrix_d B = gaussian<double>(d, r, rng), A = gaussian<double>(r, k, rng);
    const matrix_d Bt = gaussian<double>(d, r, rng), At = gaussian<double>(r, k, rng);
    const auto best = lola::o_align(lola::factor(B, A), lola::factor(Bt, At));
    const double optimum = objective(best.aligned.B(), best.aligned.A(), Bt, At);
    CHECK(optimum <= objective(B, A, Bt, At) + 1e-12);
    for (int trial = 0; trial < 200; ++trial) {
      const matrix_d Q = lola::random_orthogonal(r, rng);
      CHECK(optimum <= objective(B * Q, Q.transpose() * A, Bt, At) + 1e-12);
    }
  }

  TEST_CASE("a non-finite factor is a numerical error, not NaN factors") {
    std::mt19937_64 rng(406);
    matrix_d B = gaussian<double>(9, 3, rng), A = gaussian<double>(3, 7, rng);
    const matrix_d Bt = gaussian<double>(9, 3, rng), At = gaussian<double>(3, 7, rng);
    CHECK_NOTHROW((void)lola::o_align(lola::factor(B, A), lola::factor(Bt, At)));
    A(1, 4) = std::numeric_limits<double>::infinity();
    try {
      (void)lola::o_align(lola::factor(B, A), lola::factor(Bt, At));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(std::string(e.what()).find("o_align") != std::string::npos);
    }
  }

  TEST_CASE("shape and rank mismatches name both shapes") {
    const matrix_d B = matrix_d::Ones(6, 2), A = matrix_d::Ones(2, 4);
    const matrix_d B3 = matrix_d::Ones(6, 3), A3 = matrix_d::Ones(3, 4);
    try {
      (void)lola::o_align(lola::factor(B, A), lola::factor(B3, A3));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
    }
    CHECK_THROWS_AS(lola::o_align(lola::factor(B, A), lola::transpose(lola::factor(B, A))), lola::error);
  }
}
