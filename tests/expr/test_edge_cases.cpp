// r = 0, r > min(d, k), 1×1 and empty shapes through every operation.
#include <doctest/doctest.h>

#include <random>

#include "lola/lola.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::product_tolerance;

TEST_SUITE("expr.edge_cases") {
  TEST_CASE_TEMPLATE("rank 0: ΔW = 0 everywhere", T, float, double) {
    using M = lola_test::matrix<T>;
    const M B(5, 0), A(0, 4);
    const auto L = lola::factor(B, A, T(3));
    CHECK(L.rank() == 0);
    CHECK(lola::dense(L).isZero(0));
    CHECK(lola::dense(L).rows() == 5);
    CHECK(lola::dense(L).cols() == 4);
    CHECK(lola::norm(L) == T(0));
    CHECK(lola::inner(L, L) == T(0));
    M W = M::Ones(5, 4);
    lola::merge_into(W, L);
    CHECK(W == M::Ones(5, 4));
    CHECK(lola::dense(lola::act(L, M(0, 0))).isZero(0));
    CHECK(lola::dense(lola::act_orthogonal(L, M(0, 0))).isZero(0));
    const M X = M::Ones(4, 2);
    CHECK(lola::dense(L * X).isZero(0));
    // A rank-0 term in a sum contributes nothing and no columns.
    std::mt19937_64 rng(1);
    const M B2 = gaussian<T>(5, 2, rng), A2 = gaussian<T>(2, 4, rng);
    const auto S = L + lola::factor(B2, A2);
    CHECK(S.rank() == 2);
    CHECK((lola::dense(S) - B2 * A2).norm() <=
          product_tolerance<T>(2, double(B2.norm() * A2.norm())));
    const M Bsq(3, 0), Asq(0, 3);
    CHECK(lola::trace(lola::factor(Bsq, Asq)) == T(0));
  }

  TEST_CASE_TEMPLATE("r > min(d, k): over-parameterised factors", T, float, double) {
    std::mt19937_64 rng(2);
    const int d = 3, k = 2, r = 5;
    const auto B = gaussian<T>(d, r, rng);
    const auto A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A);
    const Eigen::MatrixXd reference = B.template cast<double>() * A.template cast<double>();
    const double n = double(B.norm() * A.norm());
    CHECK((lola::dense(L).template cast<double>() - reference).norm() <= product_tolerance<T>(r, n));
    CHECK(std::abs(lola::norm(L) - reference.norm()) <= product_tolerance<T>(d + r, n));
    CHECK(std::abs(lola::inner(L, L) - reference.squaredNorm()) <=
          product_tolerance<T>(d + k + r * r, n * n));
    const auto G = lola::random_gl<T>(r, 10.0, rng);
    // Same bound as the GL test (test_group_action.cpp): 8·r·ε·cond(G)·‖B‖‖A‖.
    CHECK((lola::dense(lola::act(L, G)).template cast<double>() - reference).norm() <=
          8.0 * r * lola_test::eps<T>() * 10.0 * n);
  }

  TEST_CASE_TEMPLATE("1×1 with rank 1", T, float, double) {
    using M = lola_test::matrix<T>;
    const M B = M::Constant(1, 1, T(3)), A = M::Constant(1, 1, T(-2));
    const auto L = lola::factor(B, A, T(0.5));
    CHECK(lola::dense(L)(0, 0) == T(-3));
    CHECK(lola::trace(L) == T(-3));
    CHECK(lola::norm(L) == doctest::Approx(3.0));
    CHECK(lola::inner(L, L) == doctest::Approx(9.0));
    M W = M::Constant(1, 1, T(1));
    lola::merge_into(W, L);
    CHECK(W(0, 0) == T(-2));
    lola::unmerge_from(W, L);
    CHECK(W(0, 0) == T(1));
    CHECK(lola::dense(lola::act(L, M::Constant(1, 1, T(4))))(0, 0) == doctest::Approx(-3.0));
    CHECK(lola::dense(lola::transpose(L))(0, 0) == T(-3));
  }

  TEST_CASE("empty d or k") {
    const Eigen::MatrixXd B(0, 2), A(2, 3);
    const auto L = lola::factor(B, A);
    CHECK(lola::dense(L).rows() == 0);
    CHECK(lola::norm(L) == 0.0);
    Eigen::MatrixXd W(0, 3);
    CHECK_NOTHROW(lola::merge_into(W, L));
    const Eigen::MatrixXd B2(4, 2), A2(2, 0);
    CHECK(lola::norm(lola::factor(B2, A2)) == 0.0);
  }
}
