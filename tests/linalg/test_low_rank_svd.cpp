// The factor-space SVD against Eigen's BDCSVD of the dense ΔW, and its GL(r) invariance.
#include <doctest/doctest.h>

#include <limits>
#include <random>
#include <string>
#include <tuple>

#include <Eigen/SVD>

#include "lola/lola.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

namespace {
// Error of σ and of U·Σ·Vᵀ: the two triangular factors (backward errors γ_d, γ_k relative to ‖B‖,
// ‖A‖ for Householder; at most 16 times that on the Gram route, linalg/column_space.hpp), the r×r
// core product (γ_r) and the backward-stable core SVD (γ_r), so by Weyl
// |σᵢ − σᵢ(ΔW)| ≤ ‖δΔW‖₂ ≤ 16·2·(d + k + r + 2)·ε·|s|·‖B‖_F·‖A‖_F.
template <class T>
double svd_tolerance(int d, int k, int r, double norm_product) {
  return 16.0 * product_tolerance<T>(d + k + r, norm_product);
}
}  // namespace

TEST_SUITE("linalg.low_rank_svd") {
  TEST_CASE_TEMPLATE("matches BDCSVD of the dense ΔW: σ, reconstruction, orthogonality", T, float,
                     double) {
    std::mt19937_64 rng(101);
    for (const auto& shape : {std::tuple{40, 30, 6}, std::tuple{25, 60, 1}, std::tuple{8, 50, 8},
                              std::tuple{3, 2, 5}, std::tuple{1, 1, 1}}) {
      // Plain variables, not structured bindings, which C++17 lambdas (CAPTURE's) cannot capture.
      const int d = std::get<0>(shape), k = std::get<1>(shape), r = std::get<2>(shape);
      CAPTURE(d);
      CAPTURE(k);
      CAPTURE(r);
      const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
      const T s = T(-0.75);
      const lola::low_rank_svd<T> svd(lola::factor(B, A, s));
      REQUIRE(svd.info() == Eigen::Success);
      const matrix_d dense = double(s) * in_double(B) * in_double(A);
      const Eigen::BDCSVD<matrix_d> reference(dense);
      const int p = std::min({d, k, r});
      REQUIRE(svd.singularValues().size() == p);
      REQUIRE(svd.matrixU().cols() == p);
      REQUIRE(svd.matrixV().cols() == p);
      const double np = std::abs(double(s)) * in_double(B).norm() * in_double(A).norm();
      const double tolerance = svd_tolerance<T>(d, k, r, np);
      CHECK((in_double(svd.singularValues()) - reference.singularValues().head(p)).cwiseAbs().maxCoeff() <=
            tolerance);
      for (int i = 1; i < p; ++i) CHECK(svd.singularValues()(i - 1) >= svd.singularValues()(i));
      const matrix_d rebuilt = in_double(svd.matrixU()) * in_double(svd.singularValues()).asDiagonal() *
                               in_double(svd.matrixV()).transpose();
      CHECK((rebuilt - dense).norm() <= tolerance);
      // Householder Q has orthonormal columns to ‖QᵀQ − I‖_F ≤ γ_{cm}·√p, the core SVD adds γ_p;
      // the Gram route's X·R⁻¹ is orthonormal to κ²·γ_m with κ ≤ 4, so 16 times that.
      const double orthogonality = 16.0 * 2.0 * (std::max(d, k) + p) * eps<T>() * std::sqrt(double(p));
      CHECK((in_double(svd.matrixU()).transpose() * in_double(svd.matrixU()) - matrix_d::Identity(p, p)).norm() <=
            orthogonality);
      CHECK((in_double(svd.matrixV()).transpose() * in_double(svd.matrixV()) - matrix_d::Identity(p, p)).norm() <=
            orthogonality);
    }
  }

  TEST_CASE_TEMPLATE("row-major views (the layout of loaded files) match column-major factors",
                     T, float, double) {
    std::mt19937_64 rng(31);
    // (300, 200, 16), (257, 130, 4): well-conditioned Gaussian factors, both on the Gram route
    // (κ ≈ 1.6 and 1.4 ≤ 4), with the fixed-rank kernels for both layouts; (40, 30, 12): the
    // other ranks; (9, 60, 8): a square B, κ far above 4, on the Householder route.
    for (const auto& shape : {std::tuple{300, 200, 16}, std::tuple{257, 130, 4},
                              std::tuple{40, 30, 12}, std::tuple{9, 60, 8}}) {
      const int d = std::get<0>(shape), k = std::get<1>(shape), r = std::get<2>(shape);
      CAPTURE(d);
      CAPTURE(k);
      CAPTURE(r);
      const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
      using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      const row_major B_rows = B, A_rows = A;
      const T s = T(1.5);
      const unsigned all = lola::compute_uv | lola::compute_vt;
      const lola::low_rank_svd<T> columns(lola::factor(B, A, s), all);
      const lola::low_rank_svd<T> rows(lola::map_factors(B_rows.data(), d, r, A_rows.data(), k, s),
                                       all);
      REQUIRE(rows.info() == Eigen::Success);
      const matrix_d dense = double(s) * in_double(B) * in_double(A);
      const Eigen::BDCSVD<matrix_d> reference(dense);
      const int p = std::min({d, k, r});
      const double np = std::abs(double(s)) * in_double(B).norm() * in_double(A).norm();
      const double tolerance = svd_tolerance<T>(d, k, r, np);
      for (const auto* svd : {&columns, &rows}) {
        CHECK((in_double(svd->singularValues()) - reference.singularValues().head(p))
                  .cwiseAbs()
                  .maxCoeff() <= tolerance);
        const matrix_d rebuilt = in_double(svd->matrixU()) *
                                 in_double(svd->singularValues()).asDiagonal() *
                                 in_double(svd->matrixVt());
        CHECK((rebuilt - dense).norm() <= tolerance);
        // Vᵀ is V transposed: the same product, read in another layout (one rounding each).
        CHECK((in_double(svd->matrixVt()) - in_double(svd->matrixV()).transpose())
                  .cwiseAbs()
                  .maxCoeff() <= 4.0 * r * eps<T>());
      }
    }
  }

  TEST_CASE("double precision: singular values to ~1e-12 relative on small shapes") {
    std::mt19937_64 rng(3);
    const matrix_d B = gaussian<double>(64, 8, rng), A = gaussian<double>(8, 48, rng);
    const lola::low_rank_svd<double> svd(lola::factor(B, A));
    const Eigen::BDCSVD<matrix_d> reference(B * A);
    const auto relative = ((svd.singularValues() - reference.singularValues().head(8)).array() /
                           reference.singularValues().head(8).array())
                              .abs()
                              .maxCoeff();
    CHECK(relative <= 1e-12);
  }

  TEST_CASE_TEMPLATE("σ is invariant under GL(r) up to c·ε·cond(G)", T, float, double) {
    std::mt19937_64 rng(202);
    const int d = 50, k = 35, r = 6;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A);
    const auto sigma = lola::low_rank_svd<T>(L, lola::singular_values_only).singularValues();
    const double np = in_double(B).norm() * in_double(A).norm();
    for (double cond : {1.0, 10.0, 1e3}) {
      const matrix<T> G = lola::random_gl<T>(r, cond, rng);
      const auto moved = lola::low_rank_svd<T>(lola::act(L, G), lola::singular_values_only).singularValues();
      // The action's own error, 8·r·ε·cond(G)·‖B‖‖A‖ (test_group_action.cpp), plus the SVD's
      // (svd_tolerance above) on factors whose norm product grew by at most cond(G), for each side.
      const double tolerance = (8.0 * r * eps<T>() * np + 2.0 * svd_tolerance<T>(d, k, r, np)) * cond;
      CHECK((in_double(moved) - in_double(sigma)).cwiseAbs().maxCoeff() <= tolerance);
    }
  }

  TEST_CASE("rank: zero, rank-deficient and zero-column factors") {
    std::mt19937_64 rng(4);
    const matrix_d zeroB = matrix_d::Zero(10, 3), A = gaussian<double>(3, 7, rng);
    const lola::low_rank_svd<double> zero(lola::factor(zeroB, A));
    CHECK(zero.rank() == 0);
    CHECK(zero.singularValues().isZero(0));
    // B of rank 2 with 5 columns, one of them zero.
    matrix_d B = gaussian<double>(12, 2, rng) * gaussian<double>(2, 5, rng);
    B.col(3).setZero();
    const matrix_d A5 = gaussian<double>(5, 9, rng);
    const lola::low_rank_svd<double> deficient(lola::factor(B, A5));
    CHECK(deficient.rank() == 2);
    CHECK(deficient.singularValues()(2) <= 1e-13 * deficient.singularValues()(0));
    lola::low_rank_svd<double> strict(lola::factor(B, A5));
    strict.setThreshold(0.0);
    CHECK(strict.threshold() == 0.0);
    CHECK(strict.rank() >= 2);
    CHECK_THROWS_AS(strict.setThreshold(-1.0), lola::error);
  }

  TEST_CASE("non-finite factors: one report (numerical, the function, the module's shape) from every decomposition") {
    matrix_d B = matrix_d::Ones(6, 2), A = matrix_d::Ones(2, 5), W = matrix_d::Ones(6, 5);
    B(4, 1) = std::numeric_limits<double>::infinity();
    const auto delta = lola::factor(B, A);
    const auto check = [](const char* function, const lola::error& e) {
      INFO(e.what());
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(std::string(e.what()) ==
            std::string("lola: ") + function + ": the factors of the 6x5 module are not finite");
    };
    const lola::low_rank_svd<double> svd(delta);
    CHECK(svd.info() == Eigen::NumericalIssue);
    check("low_rank_svd::singularValues", lola_test::thrown_by([&] { (void)svd.singularValues(); }));
    check("low_rank_svd::matrixU", lola_test::thrown_by([&] { (void)svd.matrixU(); }));
    check("singular_values", lola_test::thrown_by([&] { (void)lola::singular_values(delta); }));
    check("canonicalize", lola_test::thrown_by([&] { (void)lola::canonicalize(delta); }));
    check("canonicalize", lola_test::thrown_by([&] { (void)lola::resize(delta, lola::rank_rule::fixed(1)); }));
    check("project_base_weight", lola_test::thrown_by([&] { (void)lola::project_base_weight(W, delta); }));
    // Finite factors whose σ exceeds double: canonicalize refuses too (it would write inf factors).
    const matrix_d big = 1e200 * matrix_d::Ones(6, 2), wide = 1e200 * matrix_d::Ones(2, 5);
    const lola::error e = lola_test::thrown_by([&] { (void)lola::canonicalize(lola::factor(big, wide)); });
    CHECK(e.code() == lola::error_code::numerical);
    CHECK(std::string(e.what()).find("canonicalize: the singular values of the 6x5 module exceed") != std::string::npos);
  }

  TEST_CASE("misuse and non-finite input are reported") {
    lola::low_rank_svd<double> svd;
    CHECK_THROWS_AS(svd.singularValues(), lola::error);
    matrix_d B = matrix_d::Ones(4, 2), A = matrix_d::Ones(2, 3);
    B(1, 1) = std::nan("");
    svd.compute(lola::factor(B, A));
    CHECK(svd.info() == Eigen::NumericalIssue);
    CHECK_THROWS_AS(svd.singularValues(), lola::error);
    const lola::low_rank_svd<double> values(lola::factor(A.transpose().eval(), A),
                                            lola::singular_values_only);
    CHECK_THROWS_AS(values.matrixU(), lola::error);
    CHECK_THROWS_AS(svd.compute_factors(B, B), lola::error);  // 4x2 times 4x2
  }

  TEST_CASE("the Gram route is taken exactly when κ(X) ≤ 4, whichever test settles it") {
    // X = Q·diag(c)·Vᵀ with Haar Q (m×n) and V (n×n): κ(X) = max c / min c, and the rotation V
    // spreads the Gram's off-diagonal mass, so Gershgorin's discs settle few of these and the
    // shifted Cholesky or the eigenvalue problem must decide. A test that accepted any positive
    // definite Gram (or used Gershgorin's λ_min bound with the exact λ_max) would fail κ = 4.5.
    std::mt19937_64 rng(404);
    for (int n : {4, 16, 32})
      for (double kappa : {1.0, 1.5, 3.0, 3.9, 4.1, 4.5, 10.0, 1e4}) {
        CAPTURE(n);
        CAPTURE(kappa);
        const matrix_d Q = lola::random_stiefel(40 * n, n, rng), V = lola::random_orthogonal(n, rng);
        const Eigen::VectorXd c = Eigen::VectorXd::LinSpaced(n, 1.0, kappa);
        const matrix_d X = Q * c.asDiagonal() * V.transpose();
        lola::detail::column_space<double> space;
        space.compute(X);
        CHECK(space.via_gram() == (kappa <= 4.0));
      }
  }
}
