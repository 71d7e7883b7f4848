#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include <Eigen/QR>
#include <Eigen/LU>
#include <Eigen/SVD>

#include "lola/core/random.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::matrix;

TEST_SUITE("core.random") {
  TEST_CASE_TEMPLATE("random_orthogonal is orthogonal to working precision", T, float, double) {
    std::mt19937_64 rng(7);
    for (int r : {0, 1, 2, 5, 16, 33}) {
      const matrix<T> q = lola::random_orthogonal<T>(r, rng);
      REQUIRE(q.rows() == r);
      REQUIRE(q.cols() == r);
      // Drawn in double (orthogonal to ~r·ε_double) and rounded once to T: each entry moves by at
      // most ε_T/2·|q_ij|, so ‖QᵀQ − I‖_F ≤ 2·‖δQ‖_F·‖Q‖₂ + O(ε²) ≤ ε_T·√r, plus the double part.
      const double deviation =
          (q.transpose() * q - matrix<T>::Identity(r, r)).template cast<double>().norm();
      CHECK(deviation <= 2.0 * (std::sqrt(double(r)) + 1.0) * eps<T>() * std::max(1, r));
    }
  }

  // Haar measure: Q(0,0) is distributed like the first coordinate of a uniform point on S^{r−1},
  // so E[Q₀₀] = 0 and E[Q₀₀²] = 1/r. Householder QR without the sign fix always makes R₀₀ carry
  // the opposite sign of the first Gaussian entry, so its Q₀₀ is always ≤ 0: the mean test tells
  // the two apart.
  template <class Draw>
  void haar_moments(Draw draw, double& mean, double& mean_square) {
    const int r = 4, n = 4000;
    std::mt19937_64 rng(11);
    mean = mean_square = 0;
    for (int t = 0; t < n; ++t) {
      const Eigen::MatrixXd q = draw(r, rng);
      mean += q(0, 0) / n;
      mean_square += q(0, 0) * q(0, 0) / n;
    }
  }

  TEST_CASE("random_orthogonal has the Haar moments, and an unfixed QR does not") {
    // n = 4000 draws, r = 4: sd(Q₀₀) = 1/2 so the mean has sd 0.0079; sd(Q₀₀²) = 1/4 (E q⁴ = 3/24),
    // so its mean has sd 0.0040. Bounds at 5 standard deviations.
    double mean = 0, mean_square = 0;
    haar_moments([](int r, std::mt19937_64& rng) { return lola::random_orthogonal(r, rng); }, mean,
                 mean_square);
    CHECK(std::abs(mean) < 5 * 0.0079);
    CHECK(std::abs(mean_square - 0.25) < 5 * 0.0040);

    haar_moments(
        [](int r, std::mt19937_64& rng) {
          const Eigen::MatrixXd g = lola_test::gaussian<double>(r, r, rng);
          Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
          return Eigen::MatrixXd(qr.householderQ() * Eigen::MatrixXd::Identity(r, r));
        },
        mean, mean_square);
    CHECK_FALSE(std::abs(mean) < 5 * 0.0079);
  }

  TEST_CASE("random_orthogonal draws both determinants") {
    std::mt19937_64 rng(3);
    int negative = 0;
    for (int t = 0; t < 200; ++t) negative += lola::random_orthogonal(3, rng).determinant() < 0;
    // Binomial(200, 1/2): 5 standard deviations are ±35.
    CHECK(std::abs(negative - 100) < 35);
  }

  TEST_CASE_TEMPLATE("random_gl has the requested condition number and |det| = 1", T, float,
                     double) {
    std::mt19937_64 rng(5);
    for (int r : {2, 3, 8, 16}) {
      for (double cond : {1.0, 10.0, 1e3}) {
        const matrix<T> g = lola::random_gl<T>(r, cond, rng);
        const Eigen::JacobiSVD<Eigen::MatrixXd> svd(g.template cast<double>());
        const auto& sigma = svd.singularValues();
        const double measured = sigma(0) / sigma(r - 1);
        // Rounding G to T perturbs it by δ with ‖δ‖₂ ≤ ‖δ‖_F ≤ ε_T/2·‖G‖_F ≤ ε_T/2·√r·σ₁; each σ
        // moves by at most ‖δ‖₂ (Weyl), so σ₁/σ_r moves by a relative ≤ ε_T·√r·cond, doubled for
        // the two ends.
        const double tolerance = 2.0 * std::sqrt(double(r)) * eps<T>() * cond + 1e-12 * cond;
        CHECK(std::abs(measured / cond - 1.0) <= tolerance);
        CHECK(std::abs(std::log(sigma.prod())) <= 4.0 * r * eps<T>() * cond);
      }
    }
  }

  TEST_CASE_TEMPLATE("random_stiefel has orthonormal columns", T, float, double) {
    std::mt19937_64 rng(9);
    for (auto [m, n] : {std::pair{10, 3}, std::pair{7, 7}, std::pair{5, 0}}) {
      const matrix<T> q = lola::random_stiefel<T>(m, n, rng);
      REQUIRE(q.rows() == m);
      REQUIRE(q.cols() == n);
      // As for random_orthogonal: one rounding of a double draw, ε_T·√n.
      CHECK((q.transpose() * q - matrix<T>::Identity(n, n)).template cast<double>().norm() <=
            2.0 * (std::sqrt(double(n)) + 1.0) * eps<T>() * std::max(1, n));
    }
    CHECK_THROWS_AS(lola::random_stiefel(2, 3, rng), lola::error);
  }

  TEST_CASE("random_gl rejects what it cannot draw") {
    std::mt19937_64 rng(1);
    CHECK_THROWS_AS(lola::random_gl(3, 0.5, rng), lola::error);
    CHECK_THROWS_AS(lola::random_gl(3, std::nan(""), rng), lola::error);
    CHECK_THROWS_AS(lola::random_gl(3, INFINITY, rng), lola::error);
    CHECK_THROWS_AS(lola::random_gl(-1, 2.0, rng), lola::error);
    CHECK_THROWS_AS(lola::random_gl(1, 2.0, rng), lola::error);
    CHECK_THROWS_AS(lola::random_orthogonal(-2, rng), lola::error);
    const Eigen::MatrixXd one = lola::random_gl(1, 1.0, rng);
    CHECK(std::abs(one(0, 0)) == doctest::Approx(1.0));
    CHECK(lola::random_gl(0, 10.0, rng).size() == 0);
    try {
      lola::random_gl(3, 0.5, rng);
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_argument);
    }
  }
}
