// Every expression node against a dense reference computed in double from the same stored values.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <type_traits>

#include "lola/backend/eigen/dense.hpp"
#include "lola/backend/eigen/evaluate.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/product.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "lola/expr/transposed.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

namespace {

template <class T>
struct operands {
  static constexpr int d = 9, k = 7, r1 = 3, r2 = 2;
  std::mt19937_64 rng{42};
  matrix<T> B1 = gaussian<T>(d, r1, rng), A1 = gaussian<T>(r1, k, rng);
  matrix<T> B2 = gaussian<T>(d, r2, rng), A2 = gaussian<T>(r2, k, rng);
  matrix<T> M = gaussian<T>(5, d, rng), X = gaussian<T>(k, 4, rng);
  T s1 = T(0.75), s2 = T(-1.5);
  // Norms of the scaled factor products, |s|·‖B‖_F·‖A‖_F: the scale of every rounding bound.
  double n1 = std::abs(double(s1)) * in_double(B1).norm() * in_double(A1).norm();
  double n2 = std::abs(double(s2)) * in_double(B2).norm() * in_double(A2).norm();
  matrix_d dW1 = double(s1) * in_double(B1) * in_double(A1);
  matrix_d dW2 = double(s2) * in_double(B2) * in_double(A2);
};

template <class E>
double distance(const E& e, const matrix_d& reference) {
  return (in_double(lola::dense(e)) - reference).norm();
}

}  // namespace

TEST_SUITE("expr.nodes") {
  TEST_CASE_TEMPLATE("leaf: dense() is s·B·A", T, float, double) {
    operands<T> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    CHECK(distance(L1, o.dW1) <= product_tolerance<T>(o.r1, o.n1));
  }

  TEST_CASE_TEMPLATE("scaling, negation and division", T, float, double) {
    operands<T> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    CHECK(distance(T(2.5) * L1, 2.5 * o.dW1) <= product_tolerance<T>(o.r1, 2.5 * o.n1));
    CHECK(distance(L1 * T(2.5), 2.5 * o.dW1) <= product_tolerance<T>(o.r1, 2.5 * o.n1));
    CHECK(distance(-L1, -o.dW1) <= product_tolerance<T>(o.r1, o.n1));
    CHECK(distance(L1 / T(4), o.dW1 / 4) <= product_tolerance<T>(o.r1, o.n1 / 4));
    CHECK((T(3) * (T(2) * L1)).rank() == o.r1);
  }

  TEST_CASE_TEMPLATE("transpose swaps and transposes the factors", T, float, double) {
    operands<T> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    const auto t = lola::transpose(L1);
    CHECK(t.rows() == o.k);
    CHECK(t.cols() == o.d);
    CHECK(distance(t, o.dW1.transpose()) <= product_tolerance<T>(o.r1, o.n1));
    CHECK(distance(lola::transpose(t), o.dW1) <= product_tolerance<T>(o.r1, o.n1));
    CHECK(distance(lola::transpose(T(2) * L1), 2 * o.dW1.transpose()) <=
          product_tolerance<T>(o.r1, 2 * o.n1));
    // Transposing borrowed factors yields views of the same memory.
    decltype(auto) f = lola::detail::evaluator::factors(t);
    CHECK(f.B().data() == o.A1.data());
    CHECK(f.A().data() == o.B1.data());
  }

  TEST_CASE_TEMPLATE("sum and difference concatenate factors: ranks add", T, float, double) {
    operands<T> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    const auto L2 = lola::factor(o.B2, o.A2, o.s2);
    const auto s = L1 + L2;
    CHECK(s.rank() == o.r1 + o.r2);
    const auto f = lola::eval(s);
    CHECK(f.B().cols() == o.r1 + o.r2);
    CHECK(f.A().rows() == o.r1 + o.r2);
    const double bound = product_tolerance<T>(o.r1 + o.r2, o.n1 + o.n2);
    CHECK(distance(s, o.dW1 + o.dW2) <= bound);
    CHECK(distance(L1 - L2, o.dW1 - o.dW2) <= bound);
    CHECK(distance(L1 + L1, 2 * o.dW1) <= product_tolerance<T>(2 * o.r1, 2 * o.n1));
    // Equal scales are kept as the result's scale.
    CHECK(lola::eval(L1 + L1).scale() == o.s1);
    CHECK(distance(L1 + L2 + L1, 2 * o.dW1 + o.dW2) <=
          product_tolerance<T>(2 * o.r1 + o.r2, 2 * o.n1 + o.n2));
  }

  TEST_CASE_TEMPLATE("dense·low-rank is absorbed into B, low-rank·dense into A", T, float, double) {
    operands<T> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    const double m = in_double(o.M).norm(), x = in_double(o.X).norm();

    const auto left = o.M * L1;
    CHECK(left.rows() == 5);
    CHECK(left.rank() == o.r1);
    CHECK(distance(left, in_double(o.M) * o.dW1) <= product_tolerance<T>(o.d + o.r1, m * o.n1));
    const auto left_factors = lola::eval(left);
    CHECK(left_factors.B().rows() == 5);
    CHECK(left_factors.A() == o.A1);  // A untouched

    const auto right = L1 * o.X;
    CHECK(right.cols() == 4);
    CHECK(distance(right, o.dW1 * in_double(o.X)) <= product_tolerance<T>(o.k + o.r1, x * o.n1));
    // Right product evaluation borrows B: B·(A·X) is computed without copying B.
    decltype(auto) f = lola::detail::evaluator::factors(right);
    CHECK(f.B().data() == o.B1.data());

    // Matrix–vector: dense(L * x) is s·B·(A·x).
    const matrix<T> v = o.X.col(0);
    const matrix<T> y = lola::dense(L1 * v);
    CHECK(y.cols() == 1);
    CHECK((in_double(y) - o.dW1 * in_double(v)).norm() <=
          product_tolerance<T>(o.k + o.r1, in_double(v).norm() * o.n1));
  }

  TEST_CASE_TEMPLATE("a nested expression evaluates to the dense composition", T, float, double) {
    operands<T> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    const auto L2 = lola::factor(o.B2, o.A2, o.s2);
    std::mt19937_64 rng(9);
    const matrix<T> Z = gaussian<T>(5, 2, rng);
    const auto e = lola::transpose(o.M * (T(2) * L1 + L2)) * Z;  // k×2, rank r1 + r2
    CHECK(e.rows() == o.k);
    CHECK(e.cols() == 2);
    CHECK(e.rank() == o.r1 + o.r2);
    const matrix_d reference = (in_double(o.M) * (2 * o.dW1 + o.dW2)).transpose() * in_double(Z);
    const double scale = in_double(o.M).norm() * in_double(Z).norm() * (2 * o.n1 + o.n2);
    CHECK(distance(e, reference) <= product_tolerance<T>(o.d + o.r1 + o.r2 + 5, scale));
  }

  TEST_CASE("shape mismatches throw when the expression is built, naming both shapes") {
    operands<double> o;
    const auto L1 = lola::factor(o.B1, o.A1);
    const auto wrong = lola::factor(o.A1.transpose(), o.B1.transpose());  // 7×9
    const auto expect = [](auto&& build, const std::string& a, const std::string& b) {
      try {
        build();
        FAIL("no exception");
      } catch (const lola::error& e) {
        CHECK(e.code() == lola::error_code::shape_mismatch);
        CHECK(std::string(e.what()).find(a) != std::string::npos);
        CHECK(std::string(e.what()).find(b) != std::string::npos);
      }
    };
    expect([&] { (void)(L1 + wrong); }, "9x7", "7x9");
    expect([&] { (void)(L1 - wrong); }, "9x7", "7x9");
    const Eigen::MatrixXd M = Eigen::MatrixXd::Ones(5, 8);
    expect([&] { (void)(M * L1); }, "5x8", "9x7");
    const Eigen::MatrixXd X = Eigen::MatrixXd::Ones(6, 4);
    expect([&] { (void)(L1 * X); }, "9x7", "6x4");
  }

  TEST_CASE("closure rule: named operands by reference, temporaries by value") {
    operands<double> o;
    const auto L1 = lola::factor(o.B1, o.A1, o.s1);
    static_assert(std::is_same_v<decltype(2.0 * L1)::inner_type, std::decay_t<decltype(L1)>>);
    static_assert(std::is_same_v<decltype(lola::transpose(L1)), lola::transposed<const std::decay_t<decltype(L1)>&>>);
    static_assert(std::is_same_v<decltype(2.0 * lola::factor(o.B1, o.A1)),
                                 lola::scaled<lola::low_rank<const Eigen::MatrixXd&,
                                                             const Eigen::MatrixXd&>>>);
    // Every temporary below ends with this statement; e owns copies of what it needs (run under
    // AddressSanitizer by scripts/test.sh, which reports a dangling read).
    const auto e = 2.0 * lola::factor(Eigen::MatrixXd(o.B1), Eigen::MatrixXd(o.A1), o.s1) +
                   lola::transpose(lola::factor(Eigen::MatrixXd(o.A2.transpose()),
                                                Eigen::MatrixXd(o.B2.transpose()), o.s2));
    const auto& held = e.lhs().inner();
    CHECK(held.B().data() != o.B1.data());  // a copy owned by the expression
    CHECK(distance(e, 2 * o.dW1 + o.dW2) <=
          product_tolerance<double>(o.r1 + o.r2, 2 * o.n1 + o.n2));
  }
}
