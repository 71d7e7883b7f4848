// The host-device r×r kernels: Jacobi eigen-decomposition and singular values from the two Grams.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <tuple>
#include <type_traits>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include "lola/backend/eigen/batched_spectra.hpp"
#include "lola/backend/eigen/gram.hpp"
#include "lola/core/random.hpp"
#include "lola/linalg/jacobi_eigen.hpp"
#include "lola/linalg/procrustes.hpp"
#include "lola/linalg/column_space.hpp"
#include "lola/linalg/spectrum_from_grams.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::sigma_tolerance;

namespace {
// Backward error of jacobi_eigen: a sweep is n − 1 layers of disjoint rotations, each backward
// stable to 6ε‖A‖_F (Wilkinson); these sizes converge in at most 10 sweeps (the kernel reports
// failure otherwise), so ‖δA‖_F ≤ 60·(n − 1)·ε·‖A‖_F ≤ 64·n·ε·‖A‖_F, which by Weyl bounds every
// eigenvalue's error, and √n times it the residual and the loss of orthogonality.
template <class T>
double jacobi_tolerance(int n, double norm) {
  return 64.0 * n * eps<T>() * norm;
}

template <class T>
struct eigen_out {
  std::vector<T> w, v;
  bool ok;
};

template <class T>
eigen_out<T> run_jacobi(const matrix<T>& a, bool vectors) {
  const int n = int(a.rows());
  matrix<T> work = a;
  eigen_out<T> out{std::vector<T>(n), std::vector<T>(vectors ? n * n : 0), false};
  out.ok = lola::detail::jacobi_eigen(work.data(), n, out.w.data(), vectors ? out.v.data() : nullptr);
  return out;
}

template <class T>
void check_decomposition(const matrix<T>& a) {
  const int n = int(a.rows());
  const eigen_out<T> e = run_jacobi(a, true);
  REQUIRE(e.ok);
  const Eigen::SelfAdjointEigenSolver<matrix_d> reference(in_double(a));
  const double tolerance = jacobi_tolerance<T>(n, in_double(a).norm());
  for (int i = 0; i < n; ++i) {
    CHECK(std::abs(double(e.w[i]) - reference.eigenvalues()(n - 1 - i)) <= tolerance);
    if (i > 0) CHECK(e.w[i - 1] >= e.w[i]);
  }
  const matrix_d v = Eigen::Map<const matrix<T>>(e.v.data(), n, n).template cast<double>();
  const matrix_d w = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(e.w.data(), n)
                         .template cast<double>()
                         .asDiagonal();
  CHECK((v.transpose() * v - matrix_d::Identity(n, n)).norm() <=
        jacobi_tolerance<T>(n, std::sqrt(double(n))));
  CHECK((in_double(a) * v - v * w).norm() <= std::sqrt(double(n)) * tolerance);
}

template <class T>
matrix<T> random_symmetric(int n, std::mt19937_64& rng) {
  const matrix<T> x = gaussian<T>(n, n, rng);
  return (x + x.transpose()) / T(2);
}

using lola::detail::gram_spectrum;

template <class T, class BX, class AX>
std::vector<T> sigma_from_factors(const BX& B, const AX& A, T s, gram_spectrum* status = nullptr) {
  const int r = int(B.cols());
  matrix<T> gb, ga;
  lola::detail::gram_into(B, gb);
  lola::detail::gram_into(A.transpose(), ga);
  std::vector<T> sigma(r, T(-1)), work(lola::detail::spectrum_workspace_size(r));
  const gram_spectrum result = lola::detail::spectrum_from_grams(gb.data(), ga.data(), s, r, sigma.data(), work.data());
  if (status) *status = result;
  else REQUIRE(result == gram_spectrum::computed);
  return sigma;
}
}  // namespace

TEST_SUITE("linalg.small_kernels") {
  TEST_CASE_TEMPLATE("jacobi_eigen matches Eigen's symmetric solver; V orthonormal, A·V = V·Λ", T, float,
                     double) {
    std::mt19937_64 rng(7);
    for (int n : {1, 2, 3, 5, 16, 40}) {
      CAPTURE(n);
      check_decomposition<T>(random_symmetric<T>(n, rng));
    }
  }

  TEST_CASE_TEMPLATE("jacobi_eigen: repeated, zero and already diagonal matrices", T, float, double) {
    std::mt19937_64 rng(8);
    const int n = 6;
    const matrix<T> q = lola::random_orthogonal<T>(n, rng);
    Eigen::Matrix<T, Eigen::Dynamic, 1> lambda(n);
    lambda << 3, 3, 3, -1, -1, 0;
    check_decomposition<T>(q * lambda.asDiagonal() * q.transpose());  // a 3- and a 2-dim eigenspace
    check_decomposition<T>(matrix<T>::Zero(n, n));
    const matrix<T> diagonal = Eigen::Matrix<T, Eigen::Dynamic, 1>::LinSpaced(n, -2, 3).asDiagonal();
    const eigen_out<T> e = run_jacobi(diagonal, true);
    REQUIRE(e.ok);
    for (int i = 0; i < n; ++i) {
      CHECK(e.w[i] == diagonal(n - 1 - i, n - 1 - i));  // no rotation: exact, just sorted
      CHECK(e.v[(n - 1 - i) + i * n] == T(1));          // and V the matching permutation
    }
  }

  TEST_CASE_TEMPLATE("jacobi_eigen reports non-finite input", T, float, double) {
    matrix<T> a = matrix<T>::Identity(3, 3);
    a(1, 2) = a(2, 1) = std::numeric_limits<T>::quiet_NaN();
    CHECK_FALSE(run_jacobi(a, false).ok);
    a(1, 2) = a(2, 1) = std::numeric_limits<T>::infinity();
    CHECK_FALSE(run_jacobi(a, true).ok);
  }

  TEST_CASE_TEMPLATE("spectrum_from_grams matches BDCSVD of the dense ΔW on the Gram route", T, float, double) {
    std::mt19937_64 rng(9);
    // Gaussian factors with d, k ≫ r: κ ≈ (1 + √(r/d))/(1 − √(r/d)) < 4, the Gram route's range.
    for (const auto& shape : {std::tuple{400, 300, 6}, std::tuple{96, 500, 8}, std::tuple{1, 1, 1},
                              std::tuple{256, 256, 16}}) {
      // Plain variables, not structured bindings, which C++17 lambdas (CAPTURE's) cannot capture.
      const int d = std::get<0>(shape), k = std::get<1>(shape), r = std::get<2>(shape);
      CAPTURE(d);
      CAPTURE(k);
      CAPTURE(r);
      const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
      const T s = T(-0.5);
      const std::vector<T> sigma = sigma_from_factors(B, A, s);
      const Eigen::BDCSVD<matrix_d> reference(double(s) * in_double(B) * in_double(A));
      for (int i = 0; i < r; ++i) {
        CAPTURE(i);
        const double truth = reference.singularValues()(i);
        CHECK(std::abs(double(sigma[i]) - truth) <=
              sigma_tolerance<T>(d, k, r, double(s), in_double(B).norm(), in_double(A).norm(), truth));
        if (i > 0) CHECK(sigma[i - 1] >= sigma[i]);
      }
    }
  }

  TEST_CASE_TEMPLATE("spectrum_from_grams: Grams in range whose product M is not give σ scaled by the exact power "
                     "of two; M formed unscaled loses it", T, float, double) {
    std::mt19937_64 rng(29);
    const int d = 120, k = 90, r = 5;
    const T s = T(0.75);
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const std::vector<T> sigma = sigma_from_factors(B, A, s);
    // 2^e on each factor: the Grams (≈ 4^e·d, 4^e·k) stay within the range column_space accepts
    // (linalg/thin_qr.hpp), M ≈ 16^e·d·k leaves it: below the smallest normal for e = −44 (float)
    // and −300 (double), past the largest for 40 and 260.
    const bool is_float = std::is_same_v<T, float>;
    for (int e : {is_float ? -44 : -300, is_float ? 40 : 260}) {
      CAPTURE(e);
      const T p = std::ldexp(T(1), e);
      const matrix<T> Bp = p * B, Ap = p * A;
      const std::vector<T> scaled = sigma_from_factors(Bp, Ap, s);
      for (int i = 0; i < r; ++i) CHECK(scaled[std::size_t(i)] == std::ldexp(sigma[std::size_t(i)], 2 * e));
      // The deliberately wrong variant, the kernel before its normalisation: M = Lᵀ·G_B·L as it is.
      matrix<T> gb, ga;
      lola::detail::gram_into(Bp, gb);
      lola::detail::gram_into(Ap.transpose(), ga);
      const matrix<T> L = Eigen::LLT<matrix<T>>(ga).matrixL();
      const matrix<T> M = L.transpose() * gb * L;
      const Eigen::SelfAdjointEigenSolver<matrix<T>> unscaled(M, Eigen::EigenvaluesOnly);
      const double largest = double(s) * std::sqrt(double(unscaled.eigenvalues()(r - 1)));
      const double truth = std::ldexp(double(sigma[0]), 2 * e);
      CHECK_FALSE(std::abs(largest - truth) <= 1e-3 * truth);
    }
  }

  TEST_CASE_TEMPLATE("the host backend's batched stage and the device kernel: the same routes, σ to the same "
                     "accuracy",
                     T, float, double) {
    // Modules of rank 8 on and off the Gram route; the host batch (Eigen's tridiagonal QR on M)
    // against the kernel (Jacobi on M) and against σ of the dense product.
    std::mt19937_64 rng(39);
    const int n = 6, r = 8, d = 150, k = 110;
    std::vector<matrix<T>> Bs, As;
    std::vector<T> b_grams(n * r * r), a_grams(n * r * r), scales(n), sigma(n * r, T(-1)),
        work(n * lola::detail::spectrum_workspace_size(r));
    std::vector<int> status(n, -1);
    for (int i = 0; i < n; ++i) {
      matrix<T> B = gaussian<T>(d, r, rng);
      if (i == 2) B.col(3) = B.col(1) + T(1e-3) * B.col(4);  // κ ≈ 1e3: the Householder route
      if (i == 4) B.col(5).setZero();                           // rank-deficient, likewise
      Bs.push_back(B);
      As.push_back(gaussian<T>(r, k, rng));
      scales[i] = T(i % 2 ? -1.5 : 0.5);
      matrix<T> gb, ga;
      lola::detail::gram_into(Bs.back(), gb);
      lola::detail::gram_into(As.back().transpose(), ga);
      std::copy(gb.data(), gb.data() + r * r, b_grams.begin() + i * r * r);
      std::copy(ga.data(), ga.data() + r * r, a_grams.begin() + i * r * r);
    }
    lola::detail::spectra_from_grams(lola::executor{2}, n, r, b_grams.data(), a_grams.data(), scales.data(),
                                     sigma.data(), work.data(), status.data());
    for (int i = 0; i < n; ++i) {
      CAPTURE(i);
      gram_spectrum kernel_status = gram_spectrum::failed;
      const std::vector<T> kernel = sigma_from_factors(Bs[i], As[i], scales[i], &kernel_status);
      CHECK(status[i] == int(kernel_status));
      CHECK(status[i] == int(i == 2 || i == 4 ? gram_spectrum::needs_householder : gram_spectrum::computed));
      if (kernel_status != gram_spectrum::computed) continue;
      const Eigen::BDCSVD<matrix_d> reference(double(scales[i]) * in_double(Bs[i]) * in_double(As[i]));
      for (int j = 0; j < r; ++j) {
        CAPTURE(j);
        const double truth = reference.singularValues()(j);
        const double tol = sigma_tolerance<T>(d, k, r, double(scales[i]), in_double(Bs[i]).norm(),
                                              in_double(As[i]).norm(), truth);
        CHECK(std::abs(double(sigma[i * r + j]) - truth) <= tol);
        CHECK(std::abs(double(kernel[std::size_t(j)]) - truth) <= tol);
      }
    }
  }

  TEST_CASE_TEMPLATE("spectrum_from_grams leaves factors outside the Gram route to the Householder route, "
                     "as column_space does", T, float, double) {
    std::mt19937_64 rng(19);
    const int d = 200, k = 150, r = 6;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    matrix<T> deficient = B, ill = B, narrow = gaussian<T>(4, r, rng), wide_a = gaussian<T>(r, 3, rng);
    deficient.col(1).setZero();
    ill.col(1) = ill.col(0) + T(1e-3) * ill.col(2);  // κ ≈ 1e3
    for (const auto& [b, a] : {std::pair{deficient, A}, std::pair{ill, A}, std::pair{narrow, A},
                               std::pair{B, wide_a}, std::pair{matrix<T>(matrix<T>::Zero(d, r)), A}}) {
      gram_spectrum status = gram_spectrum::failed;
      const std::vector<T> sigma = sigma_from_factors(b, a, T(1), &status);
      CHECK(status == gram_spectrum::needs_householder);
      for (T x : sigma) CHECK(x == T(-1));  // nothing written
      // The CPU's route per factor, by the same rule: the Householder route for that factor.
      lola::detail::column_space<T> b_space, a_space;
      b_space.compute(b);
      a_space.compute(a.transpose());
      CHECK_FALSE((b_space.via_gram() && a_space.via_gram()));
    }
    lola::detail::column_space<T> b_space, a_space;  // and both on the Gram route where the kernel is
    b_space.compute(B);
    a_space.compute(A.transpose());
    CHECK((b_space.via_gram() && a_space.via_gram()));
  }

  TEST_CASE_TEMPLATE("spectrum_from_grams is GL(r)-invariant; a wrong variant is told apart", T, float,
                     double) {
    std::mt19937_64 rng(10);
    // κ(B), κ(A) ≈ 1.4 and κ(G) = 1.5 keep B·G and G⁻¹·A on the Gram route (κ ≤ 4).
    const int d = 200, k = 160, r = 5;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const matrix<T> G = lola::random_gl<T>(r, 1.5, rng);
    const matrix<T> BG = B * G, GiA = G.inverse() * A;
    const std::vector<T> sigma = sigma_from_factors(B, A, T(1)), moved = sigma_from_factors(BG, GiA, T(1));
    const std::vector<T> not_an_action = sigma_from_factors(BG, A, T(1));  // (B·G, A): ΔW changes
    // A "spectrum" that pairs the sorted eigenvalues of the two Grams: right only when B's and A's
    // singular directions happen to align, so it must fail the same check.
    matrix<T> gb, ga;
    lola::detail::gram_into(B, gb);
    lola::detail::gram_into(A.transpose(), ga);
    const Eigen::SelfAdjointEigenSolver<matrix<T>> eb(gb), ea(ga);
    const Eigen::BDCSVD<matrix_d> reference(in_double(B) * in_double(A));
    bool wrong_variant_caught = false, non_action_caught = false;
    for (int i = 0; i < r; ++i) {
      const double truth = reference.singularValues()(i);
      const auto bound = [&](const matrix<T>& b, const matrix<T>& a) {
        return sigma_tolerance<T>(d, k, r, 1.0, in_double(b).norm(), in_double(a).norm(), truth);
      };
      CHECK(std::abs(double(moved[i]) - double(sigma[i])) <= bound(B, A) + bound(BG, GiA));
      non_action_caught |= std::abs(double(not_an_action[i]) - double(sigma[i])) > bound(B, A) + bound(BG, A);
      const double paired = std::sqrt(double(eb.eigenvalues()(r - 1 - i)) * double(ea.eigenvalues()(r - 1 - i)));
      wrong_variant_caught |= std::abs(paired - truth) > bound(B, A);
    }
    CHECK(non_action_caught);
    CHECK(wrong_variant_caught);
  }

  TEST_CASE_TEMPLATE("spectrum_from_grams: non-finite input fails", T, float, double) {
    const int r = 4;
    const matrix<T> identity = matrix<T>::Identity(r, r);
    std::vector<T> sigma(r, T(-1)), work(lola::detail::spectrum_workspace_size(r));
    REQUIRE(lola::detail::spectrum_from_grams(identity.data(), identity.data(), T(2), r, sigma.data(), work.data()) ==
            gram_spectrum::computed);
    for (T x : sigma) CHECK(x == T(2));
    matrix<T> bad = identity;
    bad(0, 0) = std::numeric_limits<T>::quiet_NaN();
    CHECK(lola::detail::spectrum_from_grams(bad.data(), identity.data(), T(1), r, sigma.data(), work.data()) ==
          gram_spectrum::failed);
    CHECK(lola::detail::spectrum_from_grams(identity.data(), bad.data(), T(1), r, sigma.data(), work.data()) ==
          gram_spectrum::failed);
    CHECK(lola::detail::spectrum_from_grams(identity.data(), identity.data(), std::numeric_limits<T>::infinity(), r,
                                            sigma.data(), work.data()) == gram_spectrum::failed);
  }

  TEST_CASE_TEMPLATE("svd_from_grams: U = B·X_B and V = Aᵀ·X_A are singular vectors of s·B·A, with either "
                     "eigen-solver; a wrong variant is told apart", T, float, double) {
    std::mt19937_64 rng(23);
    const int d = 200, k = 150;
    for (int r : {1, 4, 12}) {
      for (T s : {T(1.5), T(-0.25)}) {
        CAPTURE(r);
        CAPTURE(s);
        const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
        matrix<T> gb, ga;
        lola::detail::gram_into(B, gb);
        lola::detail::gram_into(A.transpose(), ga);
        const matrix_d truth = double(s) * in_double(B) * in_double(A);
        const Eigen::BDCSVD<matrix_d> reference(truth);
        // The bound: M's eigen-equation holds to δμ = 2·(d + k + 130·r)·ε·‖B‖²·‖A‖² (as for σ,
        // test_support.hpp), which reaches UᵀU − I through Σ⁻¹·…·Σ⁻¹ (Σ without s), V through
        // the Cholesky of G_A, and the reconstruction through both: δμ/σ_r² per entry, r·δμ/σ_r² in
        // the Frobenius norm over r² entries, 4× for the three factors of the reconstruction. With
        // Frobenius norms of B and A this is conservative (in float at r = 12 it bounds nothing
        // finer than ‖U‖, ‖V‖ ≤ 1); in double it is ~1e-9.
        const double sigma_r = reference.singularValues()(r - 1) / std::abs(double(s));
        const double nb = in_double(B).norm(), na = in_double(A).norm();
        const double delta_mu = 2.0 * (d + k + 130 * r) * eps<T>() * nb * nb * na * na;
        const double tolerance = 4.0 * r * delta_mu / (sigma_r * sigma_r);
        const auto solve = [&](auto eigensystem) {
          std::vector<T> sigma(r), x_b(r * r), x_a(r * r), work(lola::detail::svd_workspace_size(r));
          REQUIRE(lola::detail::svd_from_grams(gb.data(), ga.data(), s, r, sigma.data(), x_b.data(), x_a.data(),
                                               work.data(), eigensystem) == gram_spectrum::computed);
          // σ is the σ-only kernel's, bit for bit.
          std::vector<T> alone(r), work_alone(lola::detail::spectrum_workspace_size(r));
          REQUIRE(lola::detail::spectrum_from_grams(gb.data(), ga.data(), s, r, alone.data(), work_alone.data(),
                                                    eigensystem) == gram_spectrum::computed);
          CHECK(alone == sigma);
          const matrix_d U = in_double(matrix<T>(B * Eigen::Map<const matrix<T>>(x_b.data(), r, r)));
          const matrix_d V = in_double(matrix<T>(A.transpose() * Eigen::Map<const matrix<T>>(x_a.data(), r, r)));
          const Eigen::Matrix<double, Eigen::Dynamic, 1> sd =
              Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(sigma.data(), r).template cast<double>();
          return std::tuple{U, V, sd};
        };
        const auto check_svd = [&](const matrix_d& U, const matrix_d& V, const Eigen::VectorXd& sd) {
          CHECK((U.transpose() * U - matrix_d::Identity(r, r)).norm() <= tolerance);
          CHECK((V.transpose() * V - matrix_d::Identity(r, r)).norm() <= tolerance);
          CHECK((U * sd.asDiagonal() * V.transpose() - truth).norm() <= tolerance * std::abs(double(s)) * nb * na);
        };
        const auto [U_t, V_t, s_t] = solve(lola::detail::tridiagonal_eigensystem{});
        const auto [U_j, V_j, s_j] = solve(lola::detail::jacobi_eigensystem{});
        check_svd(U_t, V_t, s_t);
        check_svd(U_j, V_j, s_j);
        for (int i = 0; i < r; ++i)
          CHECK(std::abs(s_t(i) - s_j(i)) <=
                2 * sigma_tolerance<T>(d, k, r, double(s), nb, na, reference.singularValues()(i)));
        // The wrong variant: X_A without L⁻ᵀ (V = Aᵀ·Z, Z = Lᵀ·X_A the eigenvectors of M), the step
        // that makes V orthonormal: VᵀV = Zᵀ·G_A·Z is off by ‖A‖² ≫ the bound.
        const Eigen::LLT<matrix_d> cholesky(in_double(ga));
        const matrix_d z = cholesky.matrixL().solve(in_double(A) * V_t);  // L⁻¹·A·Aᵀ·X_A = Lᵀ·X_A = Z
        const matrix_d wrong_v = in_double(A).transpose() * z;
        CHECK_FALSE((wrong_v.transpose() * wrong_v - matrix_d::Identity(r, r)).norm() <= tolerance);
      }
    }
  }

  TEST_CASE_TEMPLATE("svd_from_grams leaves ill-conditioned factors to the Householder route and writes nothing",
                     T, float, double) {
    std::mt19937_64 rng(24);
    const int d = 120, k = 90, r = 5;
    matrix<T> B = gaussian<T>(d, r, rng);
    const matrix<T> A = gaussian<T>(r, k, rng);
    B.col(1) = B.col(0) + T(1e-3) * B.col(2);  // κ ≈ 1e3
    matrix<T> gb, ga;
    lola::detail::gram_into(B, gb);
    lola::detail::gram_into(A.transpose(), ga);
    std::vector<T> sigma(r, T(-1)), x_b(r * r, T(-1)), x_a(r * r, T(-1)), work(lola::detail::svd_workspace_size(r));
    CHECK(lola::detail::svd_from_grams(gb.data(), ga.data(), T(1), r, sigma.data(), x_b.data(), x_a.data(),
                                       work.data()) == gram_spectrum::needs_householder);
    for (const auto* v : {&sigma, &x_b, &x_a})
      for (T x : *v) CHECK(x == T(-1));
  }

  TEST_CASE_TEMPLATE("procrustes_rotation: Q orthogonal with QᵀM symmetric PSD (the polar factor), as JacobiSVD's P·Sᵀ; "
                     "singular M completed; a wrong variant fails",
                     T, float, double) {
    using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
    const T eps = std::numeric_limits<T>::epsilon();
    std::mt19937 rng(41);
    std::normal_distribution<double> normal;
    for (const auto& shape : std::vector<std::pair<int, int>>{{1, 0}, {2, 0}, {5, 0}, {16, 0}, {8, 2}, {16, 5}}) {
      const int r = shape.first, dropped = shape.second;
      CAPTURE(r);
      CAPTURE(dropped);
      Eigen::MatrixXd md(r, r);
      for (int i = 0; i < r * r; ++i) md.data()[i] = normal(rng);
      const Eigen::JacobiSVD<Eigen::MatrixXd> exact(md, Eigen::ComputeFullU | Eigen::ComputeFullV);
      Eigen::VectorXd sv = exact.singularValues();
      sv.tail(dropped).setZero();  // rank r − dropped
      md = exact.matrixU() * sv.asDiagonal() * exact.matrixV().transpose();
      const matrix m = md.cast<T>();
      matrix q(r, r);
      std::vector<T> work(std::size_t(lola::detail::procrustes_workspace_size(r)));
      T ratio = -1;
      REQUIRE(lola::detail::procrustes_rotation(m.data(), r, q.data(), work.data(), &ratio));
      // Rounding: r sweeps' rotations of length-r columns, each O(ε); bounds of r·ε·(a small
      // constant) on the orthogonality and, relative to ‖M‖, on H = QᵀM's asymmetry and negative
      // eigenvalues. Q's distance to P·Sᵀ is that over the smallest gap σ_{r−1} + σ_r of the
      // polar factor's perturbation theory, so it is checked only for full rank.
      const T tol = T(50) * T(r) * eps;
      const matrix h = q.transpose() * m;
      CHECK((q.transpose() * q - matrix::Identity(r, r)).norm() <= tol);
      CHECK((h - h.transpose()).norm() <= tol * m.norm());
      const Eigen::SelfAdjointEigenSolver<matrix> polar((h + h.transpose()) / T(2));
      CHECK(polar.eigenvalues().minCoeff() >= -tol * m.norm());
      if (dropped == 0) {
        const double gap = r > 1 ? exact.singularValues()(r - 1) + exact.singularValues()(r - 2) : 2 * exact.singularValues()(0);
        const Eigen::MatrixXd rotation = exact.matrixU() * exact.matrixV().transpose();
        CHECK((q.template cast<double>() - rotation).norm() <= double(tol) * md.norm() / gap * 4);
        CHECK(std::abs(double(ratio) - exact.singularValues()(r - 1) / exact.singularValues()(0)) <= double(tol));
        if (r > 1) {  // Q·... without the transpose of V: not orthogonal-polar, caught
          const matrix wrong = q * q;  // another orthogonal matrix, not the maximiser
          const matrix hw = wrong.transpose() * m;
          CHECK((hw - hw.transpose()).norm() > tol * m.norm());
        }
      } else {
        CHECK(ratio <= tol);
      }
    }
    T ratio = 0;
    const T bad[] = {std::numeric_limits<T>::quiet_NaN()};
    T q1[1], w1[2];
    CHECK_FALSE(lola::detail::procrustes_rotation(bad, 1, q1, w1, &ratio));
  }

  TEST_CASE_TEMPLATE("column_space: Q applied to no columns is the empty product on both routes", T, float, double) {
    // A ΔW whose numerical rank is 0 (a merge whose weights cancel) keeps no columns, so Q·P is
    // asked for P with no columns; Eigen's reflector loop would form blocks at offsets into the
    // empty target's null buffer, which the sanitizer build reports (found by fuzz_cli).
    std::mt19937_64 rng(21);
    const matrix<T> zero = matrix<T>::Zero(6, 3);  // singular Gram: the Householder route
    const matrix<T> well = lola::random_orthogonal<T>(6, rng).leftCols(3);  // κ = 1: the Gram route
    for (const matrix<T>* x : {&zero, &well}) {
      lola::detail::column_space<T> space;
      space.compute(*x);
      CHECK(space.via_gram() == (x == &well));
      const matrix<T> none(3, 0);
      matrix<T> out(6, 0), out_t(0, 6);
      space.basis_times_into(*x, none, out);
      space.transposed_basis_times_into(*x, none, out_t);
      CHECK(out.rows() == 6);
      CHECK(out.cols() == 0);
      CHECK(out_t.rows() == 0);
      CHECK(out_t.cols() == 6);
      // The same call with one column still applies Q: a product that skipped it would be told apart.
      matrix<T> e1 = matrix<T>::Zero(3, 1), column(6, 1);
      e1(0, 0) = 1;
      space.basis_times_into(*x, e1, column);
      CHECK(column.norm() == doctest::Approx(1).epsilon(1e-5));  // a column of an orthonormal Q
    }
  }

  TEST_CASE_TEMPLATE("gram_condition_within: κ² against the limit, by each of its three tests", T, float, double) {
    std::mt19937_64 rng(20);
    const int n = 8;
    std::vector<T> work(lola::detail::gram_condition_workspace_size(n));
    const matrix<T> q = lola::random_orthogonal<T>(n, rng);
    for (double kappa2 : {1.0, 3.0, 15.0, 17.0, 1e3}) {
      CAPTURE(kappa2);
      Eigen::Matrix<T, Eigen::Dynamic, 1> lambda = Eigen::Matrix<T, Eigen::Dynamic, 1>::LinSpaced(n, T(1), T(kappa2));
      const matrix<T> g = q * lambda.asDiagonal() * q.transpose();  // dense: Gershgorin rarely decides
      const matrix<T> symmetric = (g + g.transpose()) / T(2);
      CHECK(lola::detail::gram_condition_within(symmetric.data(), n, T(16), work.data()) == (kappa2 <= 16));
    }
    matrix<T> singular = matrix<T>::Identity(n, n);
    singular(3, 3) = 0;
    CHECK_FALSE(lola::detail::gram_condition_within(singular.data(), n, T(16), work.data()));
    matrix<T> not_finite = matrix<T>::Identity(n, n);
    not_finite(2, 5) = not_finite(5, 2) = std::numeric_limits<T>::quiet_NaN();
    CHECK_FALSE(lola::detail::gram_condition_within(not_finite.data(), n, T(16), work.data()));
    CHECK(lola::detail::gram_condition_within(matrix<T>(matrix<T>::Identity(n, n)).data(), n, T(16), work.data()));
  }
}
