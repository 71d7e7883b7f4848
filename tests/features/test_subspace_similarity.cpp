// The LoRA paper's subspace similarity φ (eq. 4) and the singular bases it is computed on.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/SVD>

#include "lola/core/random.hpp"
#include "lola/features/subspace_similarity.hpp"
#include "lola/linalg/thin_qr.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {

// Bound on |φ̂(i, j) − φ(i, j)| for φ computed in T from bases U₁ (n×r₁), U₂ (n×r₂) that are
// orthonormal to working precision, against φ computed exactly from the same (rounded) bases.
// Each entry of G = U₁ᵀU₂ carries γₙ·‖u‖‖u'‖ ≈ γₙ (Higham §3.5), so the block G_ij (i×j) is off by
// at most γₙ·√(ij) in Frobenius norm, and ‖G_ij‖²_F ≤ min(i, j); the square then moves by at most
// 2·√min(i, j)·γₙ·√(ij), i.e. φ by 2·γₙ·√max(i, j). The running sums add ≤ (r₁ + r₂)·ε relatively.
// γₙ ≤ 2·n·ε covers u = ε/2 being replaced by ε and the double reference's own error.
template <class T>
double phi_tolerance(int n, int r1, int r2) {
  return 2.0 * (2.0 * n * eps<T>()) * std::sqrt(double(std::max(r1, r2))) +
         2.0 * (r1 + r2) * eps<T>();
}

// φ(i, j) for every (i, j) straight from eq. 4, one block product per entry, in double.
matrix_d brute_force_phi(const matrix_d& U1, const matrix_d& U2) {
  matrix_d phi(U1.cols(), U2.cols());
  for (Eigen::Index i = 1; i <= U1.cols(); ++i)
    for (Eigen::Index j = 1; j <= U2.cols(); ++j)
      phi(i - 1, j - 1) =
          (U1.leftCols(i).transpose() * U2.leftCols(j)).squaredNorm() / double(std::min(i, j));
  return phi;
}

// ‖UUᵀ − VVᵀ‖_F: the distance between the spans (√2·‖sin Θ‖_F), blind to signs and rotations
// inside the span.
double projector_distance(const matrix_d& U, const matrix_d& V) {
  return (U * U.transpose() - V * V.transpose()).norm();
}

// ‖UᵀU − I‖_F in double: how far a basis rounded to T is from orthonormal.
double orthonormality_defect(const matrix_d& U) {
  return (U.transpose() * U - matrix_d::Identity(U.cols(), U.cols())).norm();
}

// The tolerance of a computed singular subspace of X (m×n, min side p), top-i block, against the
// exact one of the same X. Householder QR is backward stable with ‖δX‖_F ≤ c·m·n·ε·‖X‖_F in the
// worst case (Higham Thm 19.4); the growth observed, and used here, is linear: (m + n)·ε·‖X‖_F.
// Jacobi on the small core adds the same order. Wedin's theorem turns a perturbation δX into
// ‖sin Θ‖_F ≤ ‖δX‖_F / gap with gap = σᵢ − σᵢ₊₁, and the projector distance is √2·‖sin Θ‖_F.
// The factor 2 covers u = ε/2 replaced by ε and the reference SVD's own error.
template <class T>
double subspace_tolerance(int m, int n, double norm_x, double gap) {
  return 2.0 * std::sqrt(2.0) * (m + n) * eps<T>() * norm_x / gap;
}

}  // namespace

TEST_SUITE("features.subspace_similarity") {
  TEST_CASE_TEMPLATE("φ of a basis with itself is 1 everywhere; of orthogonal spans 0", T, float,
                     double) {
    std::mt19937_64 rng(41);
    const int n = 50, r1 = 6, r2 = 9;
    // One orthonormal n×(r₁ + r₂) basis split in two: the halves span orthogonal subspaces.
    const matrix<T> Q = lola::thin_qr<T>(gaussian<T>(n, r1 + r2, rng)).Q;
    const matrix<T> U1 = Q.leftCols(r1), U2 = Q.rightCols(r2);
    // The exact Gram of the rounded Q is I + E with ‖E‖_F = defect. Against U₁ itself φ moves by at
    // most 2·‖E‖_F (the diagonal entries (1 + Eₐₐ)² and the off-diagonal E²); against U₂ the exact
    // φ is at most ‖E‖²_F.
    const double defect = orthonormality_defect(in_double(Q));
    const double tolerance = phi_tolerance<T>(n, r1 + r2, r1 + r2);

    const matrix<T> self = lola::subspace_similarity(U1, U1);
    REQUIRE(self.rows() == r1);
    REQUIRE(self.cols() == r1);
    const double self_error = (in_double(self) - matrix_d::Ones(r1, r1)).cwiseAbs().maxCoeff();
    CHECK(self_error <= tolerance + 2 * defect);
    for (int i = 0; i < r1; ++i)
      CHECK(std::abs(double(self(i, i)) - 1.0) <= tolerance + 2 * defect);

    // φ(A, A, i, j) = 1 for the paper's input: the basis of one down factor against itself.
    const matrix<T> UA = lola::input_subspace(gaussian<T>(r2, n, rng));
    const double ua_tolerance =
        phi_tolerance<T>(n, r2, r2) + 2 * orthonormality_defect(in_double(UA));
    CHECK((in_double(lola::subspace_similarity(UA, UA)) - matrix_d::Ones(r2, r2))
              .cwiseAbs()
              .maxCoeff() <= ua_tolerance);

    const matrix<T> orthogonal = lola::subspace_similarity(U1, U2);
    REQUIRE(orthogonal.rows() == r1);
    REQUIRE(orthogonal.cols() == r2);
    const double orthogonal_error = in_double(orthogonal).cwiseAbs().maxCoeff();
    CHECK(orthogonal_error <= tolerance + defect * defect);
    MESSAGE("worst error / tolerance: self " << self_error / (tolerance + 2 * defect)
                                             << ", orthogonal "
                                             << orthogonal_error / (tolerance + defect * defect));
  }

  TEST_CASE_TEMPLATE("the prefix-sum grid equals eq. 4 evaluated entry by entry (r₁ ≠ r₂)", T,
                     float, double) {
    std::mt19937_64 rng(42);
    const int k = 64, r1 = 5, r2 = 11;
    // Two down factors sharing two rows, so φ takes values across (0, 1) and not only near 0 or 1.
    matrix<T> A1 = gaussian<T>(r1, k, rng), A2 = gaussian<T>(r2, k, rng);
    A2.row(3) = A1.row(0);
    A2.row(7) = T(2) * A1.row(2);
    const matrix<T> U1 = lola::input_subspace(A1), U2 = lola::input_subspace(A2);
    REQUIRE(U1.rows() == k);
    REQUIRE(U1.cols() == r1);
    REQUIRE(U2.cols() == r2);

    const matrix<T> phi = lola::subspace_similarity(U1, U2);
    const matrix_d reference = brute_force_phi(in_double(U1), in_double(U2));
    const double tolerance = phi_tolerance<T>(k, r1, r2);
    const double error = (in_double(phi) - reference).cwiseAbs().maxCoeff();
    CHECK(error <= tolerance);
    MESSAGE("worst error / tolerance against the brute-force grid: " << error / tolerance);

    // φ ∈ [0, 1] (Σσₜ² ≤ min(i, j) for orthonormal bases), up to the same rounding and the bases'
    // departure from orthonormality (γ_k-sized for a Householder Q; 2·k·ε).
    const double slack = tolerance + 2.0 * 2.0 * k * eps<T>();
    CHECK(in_double(phi).minCoeff() >= -slack);
    CHECK(in_double(phi).maxCoeff() <= 1.0 + slack);
    // The shared rows make some entries genuinely intermediate: the test is not all 0s and 1s.
    CHECK(((reference.array() > 0.2) && (reference.array() < 0.9)).count() > 0);
    // φ(i, j) is symmetric in its two arguments.
    CHECK((in_double(lola::subspace_similarity(U2, U1)).transpose() - in_double(phi))
              .cwiseAbs()
              .maxCoeff() <= 2 * tolerance);
  }

  TEST_CASE_TEMPLATE("input_subspace and output_subspace match BDCSVD's singular vectors", T, float,
                     double) {
    std::mt19937_64 rng(43);
    for (const auto& shape : {std::pair<int, int>{6, 40}, {3, 3}, {8, 5}}) {
      const int r = shape.first, k = shape.second;
      CAPTURE(r);
      CAPTURE(k);
      const matrix<T> A = gaussian<T>(r, k, rng);
      const matrix<T> U = lola::input_subspace(A);
      const int p = std::min(r, k);
      REQUIRE(U.rows() == k);
      REQUIRE(U.cols() == p);
      // A Householder Q times an orthogonal Jacobi factor: orthonormal to γ_k + γ_p per column,
      // i.e. 2·(k + p)·ε·√p in Frobenius norm.
      CHECK(orthonormality_defect(in_double(U)) <= 2.0 * (k + p) * eps<T>() * std::sqrt(double(p)));

      const Eigen::BDCSVD<matrix_d> svd(in_double(A), Eigen::ComputeThinU | Eigen::ComputeThinV);
      const Eigen::VectorXd sigma = svd.singularValues();
      double worst = 0;
      for (int i = 1; i <= p; ++i) {
        // The complement of the top-i span: the next singular value, or 0 (the null space of A)
        // after the last one when p < k; when p = k the full span is all of R^k, exactly.
        const double next = i < p ? sigma(i) : 0.0;
        if (i == p && p == k) {
          CHECK(projector_distance(in_double(U), matrix_d::Identity(k, k)) <=
                2.0 * (k + p) * eps<T>() * std::sqrt(double(p)));
          continue;
        }
        const double tolerance = subspace_tolerance<T>(r, k, sigma.norm(), sigma(i - 1) - next);
        const double error =
            projector_distance(in_double(U).leftCols(i), svd.matrixV().leftCols(i));
        CHECK(error <= tolerance);
        worst = std::max(worst, error / tolerance);
      }
      MESSAGE("input_subspace " << r << "x" << k << ": worst error / tolerance " << worst);
    }

    const int d = 30, r = 5;
    const matrix<T> B = gaussian<T>(d, r, rng);
    const matrix<T> U = lola::output_subspace(B);
    REQUIRE(U.rows() == d);
    REQUIRE(U.cols() == r);
    const Eigen::BDCSVD<matrix_d> svd(in_double(B), Eigen::ComputeThinU);
    const Eigen::VectorXd sigma = svd.singularValues();
    for (int i = 1; i <= r; ++i) {
      const double next = i < r ? sigma(i) : 0.0;
      CHECK(projector_distance(in_double(U).leftCols(i), svd.matrixU().leftCols(i)) <=
            subspace_tolerance<T>(d, r, sigma.norm(), sigma(i - 1) - next));
    }
  }

  // A ↦ G·A keeps A's row space, so the full basis of input_subspace spans the same subspace; the
  // computed one is off by the backward errors of the product G·A and of the QR, over σ_r(G·A) ≥
  // σ_r(A)/‖G⁻¹‖₂ (subspace_tolerance for each side; the product adds γ_r·‖G‖₂‖A‖_F). With
  // |det G| = 1, ‖G‖₂ = ‖G⁻¹‖₂ = √cond, so the G·A side carries a factor cond(G).
  TEST_CASE_TEMPLATE("input_subspace is GL(r)-invariant as a span; A's raw rows are not", T, float,
                     double) {
    std::mt19937_64 rng(44);
    const int r = 6, k = 40;
    const matrix<T> A = gaussian<T>(r, k, rng);
    const Eigen::VectorXd sigma = Eigen::BDCSVD<matrix_d>(in_double(A)).singularValues();
    const double kappa = sigma.norm() / sigma(r - 1);  // ‖A‖_F / σ_r(A)
    const matrix_d P = in_double(lola::input_subspace(A));

    // The deliberately wrong variant: A's rows scaled to unit length, used as if they were an
    // orthonormal basis. Its "projector" Σ aᵢaᵢᵀ/‖aᵢ‖² depends on G.
    const auto raw_rows = [](const matrix<T>& X) {
      return matrix_d(in_double(X).rowwise().normalized().transpose());
    };
    const matrix_d P_wrong = raw_rows(A);

    double worst = 0;
    for (double cond : {1.0, 10.0, 100.0, 1000.0}) {
      for (int trial = 0; trial < 3; ++trial) {
        const matrix<T> G = lola::random_gl<T>(r, cond, rng);
        const matrix<T> GA = G * A;
        const double tolerance = subspace_tolerance<T>(r, k, 1.0, 1.0 / kappa) * (1.0 + cond) +
                                 2.0 * r * eps<T>() * cond * kappa;
        const double error = projector_distance(P, in_double(lola::input_subspace(GA)));
        CHECK(error <= tolerance);
        worst = std::max(worst, error / tolerance);
        CHECK(projector_distance(P_wrong, raw_rows(GA)) > tolerance);

        // The leading singular direction is *not* invariant: φ(1, 1) between A and G·A drops
        // below 1 once G is not orthogonal (the caveat in subspace_similarity.hpp).
        if (cond >= 100.0) {
          const matrix<T> phi =
              lola::subspace_similarity(lola::input_subspace(A), lola::input_subspace(GA));
          CHECK(double(phi(0, 0)) < 0.99);
          CHECK(std::abs(double(phi(r - 1, r - 1)) - 1.0) <= tolerance * std::sqrt(double(r)));
        }
      }
    }
    MESSAGE("worst error / tolerance under GL(r): " << worst);

    // The same for B ↦ B·G and output_subspace.
    const int d = 30;
    const matrix<T> B = gaussian<T>(d, r, rng);
    const Eigen::VectorXd sb = Eigen::BDCSVD<matrix_d>(in_double(B)).singularValues();
    const double kappa_b = sb.norm() / sb(r - 1);
    const matrix<T> G = lola::random_gl<T>(r, 100.0, rng);
    const matrix<T> BG = B * G;
    CHECK(projector_distance(in_double(lola::output_subspace(B)),
                             in_double(lola::output_subspace(BG))) <=
          subspace_tolerance<T>(d, r, 1.0, 1.0 / kappa_b) * 101.0 +
              2.0 * r * eps<T>() * 100.0 * kappa_b);
  }

  TEST_CASE("a direction shared by two down factors of different rank gives φ(1, j) ≈ 1") {
    std::mt19937_64 rng(45);
    const int k = 256, r1 = 8, r2 = 64;
    const Eigen::VectorXd a = gaussian<double>(k, 1, rng).normalized();
    // A dominant shared direction (σ₁ = 1000) on top of Gaussian noise of spectral norm at most
    // about √k + √r ≤ 24: the top right singular vector is within sin θ ≤ 24/(1000 − 24) of a in
    // each factor, so cos² between the two is at least cos²(0.05) ≈ 0.9975.
    matrix_d A1 = gaussian<double>(r1, k, rng), A2 = gaussian<double>(r2, k, rng);
    A1.row(0) += 1000.0 * a.transpose();
    A2.row(5) += 1000.0 * a.transpose();
    const matrix_d A3 = gaussian<double>(r2, k, rng);  // unrelated
    const matrix_d phi =
        lola::subspace_similarity(lola::input_subspace(A1), lola::input_subspace(A2));
    CHECK(phi(0, 0) > 0.99);
    // φ(1, j) is the energy of the first direction inside the top-j span: it can only grow with j.
    for (int j = 1; j < r2; ++j) CHECK(phi(0, j) >= phi(0, j - 1) - 1e-15);
    // Two independent directions in R^256: cos² has mean 1/k ≈ 0.004; 0.1 is beyond 5 standard
    // deviations of that χ²₁/k law.
    const matrix_d unrelated =
        lola::subspace_similarity(lola::input_subspace(A1), lola::input_subspace(A3));
    CHECK(unrelated(0, 0) < 0.1);
  }

  TEST_CASE("bad arguments: shapes, non-orthonormal bases, non-finite factors, empty sizes") {
    std::mt19937_64 rng(46);
    const Eigen::MatrixXd U1 = lola::thin_qr<double>(gaussian<double>(10, 2, rng)).Q;
    const Eigen::MatrixXd U2 = lola::thin_qr<double>(gaussian<double>(12, 3, rng)).Q;
    try {
      (void)lola::subspace_similarity(U1, U2);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("U1 is 10x2") != std::string::npos);
      CHECK(std::string(e.what()).find("U2 is 12x3") != std::string::npos);
    }
    // Passing the factor Aᵀ instead of its subspace.
    const Eigen::MatrixXd A = gaussian<double>(3, 10, rng);
    try {
      (void)lola::subspace_similarity(U1, A.transpose());
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(std::string(e.what()).find("orthonormal") != std::string::npos);
    }
    Eigen::MatrixXd bad = A;
    bad(1, 4) = std::nan("");
    try {
      (void)lola::input_subspace(bad);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(std::string(e.what()).find("3x10") != std::string::npos);
    }
    CHECK_THROWS_AS(lola::output_subspace(bad.transpose()), lola::error);

    // Empty ranks give empty results of the right shape.
    const Eigen::MatrixXd none = lola::input_subspace(Eigen::MatrixXd(0, 10));
    CHECK(none.rows() == 10);
    CHECK(none.cols() == 0);
    const Eigen::MatrixXd phi = lola::subspace_similarity(none, U1);
    CHECK(phi.rows() == 0);
    CHECK(phi.cols() == 2);
  }

  TEST_CASE("the scalar follows the storage: half gives float; an explicit scalar wins") {
    std::mt19937_64 rng(47);
    const Eigen::MatrixXf A = gaussian<float>(4, 20, rng);
    const Eigen::Matrix<Eigen::half, Eigen::Dynamic, Eigen::Dynamic> A_half = A.cast<Eigen::half>();
    const auto U_half = lola::input_subspace(A_half);
    static_assert(std::is_same_v<std::decay_t<decltype(U_half)>, Eigen::MatrixXf>);
    const auto U_double = lola::input_subspace<double>(A);
    static_assert(std::is_same_v<std::decay_t<decltype(U_double)>, Eigen::MatrixXd>);
    // The half-rounded A differs from A by 2⁻¹¹ relatively per entry, which moves the span by about
    // that over the relative gap; 0.05 is far above that for a Gaussian 4×20 and far below the
    // distance of unrelated spans (≈ 2).
    CHECK(projector_distance(in_double(U_half), U_double) < 0.05);
    const auto phi = lola::subspace_similarity(U_half, U_double);
    static_assert(std::is_same_v<std::decay_t<decltype(phi)>, Eigen::MatrixXd>);
  }
}
