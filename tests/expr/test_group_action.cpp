// The GL(r) and O(r) actions leave ΔW unchanged; a wrong action does not.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "lola/backend/eigen/dense.hpp"
#include "lola/backend/eigen/evaluate.hpp"
#include "lola/core/random.hpp"
#include "lola/expr/group_action.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/sum.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {

// Error bound for (B·G)(G⁻¹·A) against B·A, relative to |s|·‖B‖_F·‖A‖_F (Higham §3.5, §9.4):
//   B·G            γ_r·‖B‖‖G‖₂
//   G⁻¹·A by LU    backward error γ_{3r}·ρ·‖G‖ with growth factor ρ, forward error ≤ that · cond(G)
//   final product  γ_r·‖BG‖‖G⁻¹A‖ ≤ γ_r·cond(G)·‖B‖‖A‖
// giving about (2 + 3ρ)·r·ε·cond(G); partial pivoting on these matrices has ρ ≤ 2, so 8·r·ε·cond(G).
template <class T>
double action_tolerance(int r, double cond, double norm_product) {
  return 8.0 * r * eps<T>() * cond * norm_product;
}

}  // namespace

TEST_SUITE("expr.group_action") {
  TEST_CASE_TEMPLATE("GL(r) action preserves ΔW within c·r·ε·cond(G); (BG, GA) does not", T, float,
                     double) {
    std::mt19937_64 rng(2024);
    const int d = 40, k = 30, r = 6;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const T s = T(0.5);
    const auto L = lola::factor(B, A, s);
    const matrix_d reference = double(s) * in_double(B) * in_double(A);
    const double norm_product = double(s) * in_double(B).norm() * in_double(A).norm();
    double worst_ratio = 0;
    for (double cond : {1.0, 10.0, 100.0, 1000.0}) {
      for (int trial = 0; trial < 5; ++trial) {
        const matrix<T> G = lola::random_gl<T>(r, cond, rng);
        const double tolerance = action_tolerance<T>(r, cond, norm_product);

        const matrix_d moved = in_double(lola::dense(lola::act(L, G)));
        const double error = (moved - reference).norm();
        CHECK(error <= tolerance);
        worst_ratio = std::max(worst_ratio, error / tolerance);

        // The factors really changed: this is not the identity action.
        const auto factors = lola::eval(lola::act(L, G));
        CHECK((in_double(factors.B()) - in_double(B)).norm() > 1e-3 * in_double(B).norm());

        // A deliberately wrong action, (B·G, G·A), fails the same check.
        const auto wrong = lola::factor(matrix<T>(B * G), matrix<T>(G * A), s);
        CHECK((in_double(lola::dense(wrong)) - reference).norm() > tolerance);
      }
    }
    MESSAGE("worst error / tolerance for the GL action: " << worst_ratio);
  }

  TEST_CASE_TEMPLATE("O(r) action (BQ, QᵀA) preserves ΔW and agrees with the GL action", T, float,
                     double) {
    std::mt19937_64 rng(77);
    const int d = 12, k = 20, r = 5;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A);
    const matrix_d reference = in_double(B) * in_double(A);
    const double norm_product = in_double(B).norm() * in_double(A).norm();
    const matrix<T> Q = lola::random_orthogonal<T>(r, rng);
    // Q rounded to T is orthogonal only to ‖QᵀQ − I‖_F ≤ ε·√r (test_random.cpp), which adds that
    // much to the product bound (γ_r for each of the three products).
    const double tolerance = lola_test::product_tolerance<T>(3 * r + std::sqrt(r), norm_product);
    const matrix_d moved = in_double(lola::dense(lola::act_orthogonal(L, Q)));
    CHECK((moved - reference).norm() <= tolerance);
    CHECK((moved - in_double(lola::dense(lola::act(L, Q)))).norm() <= tolerance);
    const auto wrong = lola::factor(matrix<T>(B * Q), matrix<T>(Q * A));  // (BQ, QA)
    CHECK((in_double(lola::dense(wrong)) - reference).norm() > tolerance);
  }

  TEST_CASE("the action composes with other nodes: a sum has rank r₁ + r₂") {
    std::mt19937_64 rng(5);
    const Eigen::MatrixXd B1 = gaussian<double>(8, 2, rng), A1 = gaussian<double>(2, 6, rng);
    const Eigen::MatrixXd B2 = gaussian<double>(8, 3, rng), A2 = gaussian<double>(3, 6, rng);
    const auto S = lola::factor(B1, A1) + lola::factor(B2, A2, 2.0);
    const Eigen::MatrixXd G = lola::random_gl(5, 50.0, rng);
    const Eigen::MatrixXd reference = B1 * A1 + 2.0 * B2 * A2;
    const double norm_product = B1.norm() * A1.norm() + 2 * B2.norm() * A2.norm();
    CHECK((lola::dense(lola::act(S, G)) - reference).norm() <=
          action_tolerance<double>(5, 50.0, norm_product));
    CHECK_THROWS_AS(lola::act(lola::factor(B1, A1), G), lola::error);  // G is 5x5, rank is 2
  }

  TEST_CASE("wrong-size, singular and non-orthogonal elements are rejected") {
    std::mt19937_64 rng(6);
    const Eigen::MatrixXd B = gaussian<double>(6, 3, rng), A = gaussian<double>(3, 4, rng);
    const auto L = lola::factor(B, A);
    try {
      (void)lola::act(L, Eigen::MatrixXd::Identity(2, 2));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("G is 2x2") != std::string::npos);
    }
    Eigen::MatrixXd singular = Eigen::MatrixXd::Identity(3, 3);
    singular(2, 2) = 0;
    try {
      (void)lola::eval(lola::act(L, singular));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(std::string(e.what()).find("singular") != std::string::npos);
    }
    const Eigen::MatrixXd not_orthogonal = lola::random_gl(3, 10.0, rng);
    CHECK_THROWS_AS(lola::eval(lola::act_orthogonal(L, not_orthogonal)), lola::error);
    CHECK_NOTHROW(lola::eval(lola::act(L, not_orthogonal)));
  }
}
