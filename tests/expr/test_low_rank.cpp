#include <doctest/doctest.h>

#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "lola/backend/eigen/dense.hpp"
#include "lola/backend/eigen/evaluate.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "support/test_support.hpp"

using lola_test::matrix;

TEST_SUITE("expr.low_rank") {
  TEST_CASE_TEMPLATE("owning factors report their shape, rank and scale", T, float, double) {
    std::mt19937_64 rng(1);
    lola::low_rank_matrix<T> L(lola_test::gaussian<T>(7, 3, rng), lola_test::gaussian<T>(3, 5, rng),
                               T(0.25));
    CHECK(L.rows() == 7);
    CHECK(L.cols() == 5);
    CHECK(L.rank() == 3);
    CHECK(L.scale() == T(0.25));
    static_assert(std::is_same_v<typename decltype(L)::scalar, T>);
  }

  TEST_CASE("factor() holds named matrices by reference: no copy") {
    std::mt19937_64 rng(2);
    const Eigen::MatrixXd B = lola_test::gaussian<double>(6, 2, rng);
    const Eigen::MatrixXd A = lola_test::gaussian<double>(2, 4, rng);
    const auto L = lola::factor(B, A, 3.0);
    CHECK(L.B().data() == B.data());
    CHECK(L.A().data() == A.data());
    static_assert(std::is_same_v<decltype(L)::b_held, const Eigen::MatrixXd&>);
  }

  TEST_CASE("factor() moves temporaries in") {
    std::mt19937_64 rng(3);
    Eigen::MatrixXd B = lola_test::gaussian<double>(6, 2, rng);
    const double* storage = B.data();
    const auto L = lola::factor(std::move(B), Eigen::MatrixXd::Ones(2, 3));
    static_assert(std::is_same_v<decltype(L)::b_held, Eigen::MatrixXd>);
    CHECK(L.B().data() == storage);  // moved, not copied
  }

  TEST_CASE("map_factors views external row-major memory: zero copy, sees later writes") {
    // B (3×2) and A (2×4) as a file stores them: row-major, contiguous.
    std::vector<float> b = {1, 2, 3, 4, 5, 6};
    std::vector<float> a = {1, 0, 0, 1, 0, 1, 1, 0};
    const auto L = lola::map_factors(b.data(), 3, 2, a.data(), 4, 0.5f);
    CHECK(L.B().data() == b.data());
    CHECK(L.A().data() == a.data());
    CHECK(L.B()(1, 0) == 3.0f);  // row-major: B(1,0) is the third stored value
    CHECK(L.A()(1, 2) == 1.0f);
    const Eigen::MatrixXf before = lola::dense(L);
    CHECK(before(2, 1) == doctest::Approx(0.5 * (5 * 0 + 6 * 1)));
    b[4] = 50;  // B(2,0)
    const Eigen::MatrixXf after = lola::dense(L);
    CHECK(after(2, 0) == doctest::Approx(0.5 * 50));
    // Evaluation through a scale keeps borrowing the same memory.
    decltype(auto) f = lola::detail::evaluator::factors(2.0f * L);
    CHECK(f.B().data() == b.data());
    CHECK(f.scale() == 1.0f);
  }

  TEST_CASE_TEMPLATE("half and bfloat16 are storage: compute in float, exactly as converted", T,
                     Eigen::half, Eigen::bfloat16) {
    std::mt19937_64 rng(4);
    const Eigen::MatrixXf b_values = lola_test::gaussian<float>(5, 3, rng);
    const Eigen::MatrixXf a_values = lola_test::gaussian<float>(3, 4, rng);
    const Eigen::Matrix<T, -1, -1, Eigen::RowMajor> b = b_values.cast<T>();
    const Eigen::Matrix<T, -1, -1, Eigen::RowMajor> a = a_values.cast<T>();
    const auto L = lola::map_factors(b.data(), 5, 3, a.data(), 4, 2.0f);
    static_assert(std::is_same_v<typename std::decay_t<decltype(L)>::scalar, float>);
    // Reference: the stored values converted to double, multiplied exactly enough in double.
    const Eigen::MatrixXd reference =
        2.0 * b.template cast<float>().template cast<double>() *
        a.template cast<float>().template cast<double>();
    const Eigen::MatrixXf result = lola::dense(L);
    // The conversion half/bfloat16 → float is exact; what remains is float GEMM rounding with
    // inner length 3 (test_support.hpp).
    const double tolerance = lola_test::product_tolerance<float>(
        3, 2.0 * reference.norm() + 2.0 * b.template cast<float>().norm() *
                                        a.template cast<float>().norm());
    CHECK((result.cast<double>() - reference).norm() <= tolerance);
    // Mixed storage: a half B with a float A computes in float.
    const Eigen::MatrixXf a_as_float = a.template cast<float>();
    const auto mixed = lola::factor(b, a_as_float);
    static_assert(std::is_same_v<typename std::decay_t<decltype(mixed)>::scalar, float>);
    CHECK((lola::dense(mixed).template cast<double>() - reference / 2.0).norm() <= tolerance);
  }

  TEST_CASE("a B/A shape mismatch throws at construction, naming both shapes") {
    const Eigen::MatrixXd B = Eigen::MatrixXd::Ones(6, 2), A = Eigen::MatrixXd::Ones(3, 5);
    try {
      (void)lola::factor(B, A);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("B is 6x2") != std::string::npos);
      CHECK(std::string(e.what()).find("A is 3x5") != std::string::npos);
    }
    std::vector<float> data(6);
    CHECK_THROWS_AS(lola::map_factors(data.data(), -1, 2, data.data(), 3), lola::error);
  }

  TEST_CASE("a non-finite scale is rejected") {
    const Eigen::MatrixXd B = Eigen::MatrixXd::Ones(2, 1), A = Eigen::MatrixXd::Ones(1, 2);
    CHECK_THROWS_AS(lola::factor(B, A, std::nan("")), lola::error);
    CHECK_THROWS_AS(lola::factor(B, A, INFINITY), lola::error);
    const auto L = lola::factor(B, A);
    CHECK_THROWS_AS(L * INFINITY, lola::error);
    CHECK_THROWS_AS(L / 0.0, lola::error);
  }

  TEST_CASE("eval() gives owning column-major factors of the compute scalar") {
    std::vector<float> b = {1, 2, 3, 4}, a = {5, 6, 7, 8};
    const auto L = lola::map_factors(b.data(), 2, 2, a.data(), 2, 3.0f);
    const lola::low_rank_matrix<float> owned = lola::eval(L);
    CHECK(owned.B().data() != b.data());
    CHECK(owned.scale() == 3.0f);
    CHECK(owned.B() == L.B());
    CHECK(owned.A() == L.A());
  }
}
