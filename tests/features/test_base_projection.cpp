// ΔW against the frozen weight W: projection, amplification and the two baselines of the LoRA
// paper's Table 7.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include <Eigen/SVD>

#include "lola/backend/eigen/dense.hpp"
#include "lola/core/random.hpp"
#include "lola/expr/group_action.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "lola/features/base_projection.hpp"
#include "lola/linalg/thin_qr.hpp"
#include "support/test_support.hpp"

using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;

namespace {

// The Table 7 numbers computed the obvious way, in double: BDCSVD of the dense ΔW and of W.
struct dense_reference {
  double delta_norm, projection_norm, amplification, w_top_r_norm;
  double gap;  // σ_r(ΔW) − σ_{r+1}(ΔW), σ_{r+1} = 0 past the last
};

dense_reference reference_of(const matrix_d& W, const matrix_d& D, int r) {
  const Eigen::BDCSVD<matrix_d> svd(D, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd sigma = svd.singularValues();
  dense_reference out;
  out.delta_norm = D.norm();
  out.projection_norm =
      (svd.matrixU().leftCols(r).transpose() * W * svd.matrixV().leftCols(r)).norm();
  out.amplification = out.delta_norm / out.projection_norm;
  out.w_top_r_norm = Eigen::BDCSVD<matrix_d>(W).singularValues().head(r).norm();
  out.gap = sigma(r - 1) - (r < sigma.size() ? sigma(r) : 0.0);
  return out;
}

// The absolute error of low_rank_svd's σᵢ for ΔW = s·B·A (d×k, expression rank r_e): the two
// Householder QRs (d and k rows) and the r_e-term core product, each relative to
// factor_norm = |s|·‖B‖_F·‖A‖_F (Higham §3.5, §19.3).
template <class T>
double svd_error(int d, int k, int r_e, double factor_norm) {
  return product_tolerance<T>(d + k + r_e, factor_norm);
}

// Tolerances for the numbers of ΔW when it is known only up to E with ‖E‖_F ≤ e_delta, from
// first-order perturbation theory:
//   delta_norm       moves by at most ‖E‖_F.
//   projection_norm  U and V move by ‖sin Θ‖_F ≤ ‖E‖_F/gap each (Wedin), which moves ‖UᵀWV‖_F by
//                    ≤ √2·‖W‖₂·‖E‖_F/gap per side; each evaluation of the products Uᵀ(WV) adds
//                    γ_{d+k}·‖U‖_F‖W‖_F‖V‖_F = γ_{d+k}·r·‖W‖_F (`evaluations` of them compared).
//   amplification    a = δ/p with both perturbed: |â − a| ≤ a·(e_δ/δ + e_p/p)/(1 − e_p/p).
struct tolerances {
  double delta_norm, projection_norm;
  double amplification(double delta, double projection, double amp) const {
    return amp * (delta_norm / delta + projection_norm / projection) /
           (1.0 - projection_norm / projection);
  }
};

template <class T>
tolerances tolerances_for(int d, int k, int r, double e_delta, const matrix_d& W, double gap,
                          int evaluations = 1) {
  const double w2 = Eigen::BDCSVD<matrix_d>(W).singularValues()(0);
  tolerances t;
  t.delta_norm = e_delta;
  t.projection_norm = 2.0 * std::sqrt(2.0) * w2 * e_delta / gap +
                      evaluations * product_tolerance<T>(d + k, r * W.norm());
  return t;
}

// W's top-r energy from a BDCSVD in T: backward stable, each σᵢ off by about (d + k)·ε·‖W‖₂, so
// the norm of r of them by √r times that (Higham §20; linear growth as observed in practice).
template <class T>
double w_top_tolerance(int d, int k, int r, const matrix_d& W) {
  const double w2 = Eigen::BDCSVD<matrix_d>(W).singularValues()(0);
  return product_tolerance<T>(d + k, std::sqrt(double(r)) * w2);
}

// W = U·diag(σ)·Vᵀ with Haar U, V, built in double and rounded once to T.
template <class T>
matrix<T> with_spectrum(int d, int k, const Eigen::VectorXd& sigma, std::mt19937_64& rng) {
  const int n = int(sigma.size());
  const matrix_d U = lola::thin_qr<double>(gaussian<double>(d, n, rng)).Q;
  const matrix_d V = lola::thin_qr<double>(gaussian<double>(k, n, rng)).Q;
  return (U * sigma.asDiagonal() * V.transpose()).cast<T>();
}

}  // namespace

TEST_SUITE("features.base_projection") {
  TEST_CASE_TEMPLATE("every number matches a dense BDCSVD reference", T, float, double) {
    std::mt19937_64 rng(71);
    double worst = 0;
    const auto check = [&](const matrix<T>& W, const auto& delta, int r_requested, int r,
                           double factor_norm) {
      const int d = int(W.rows()), k = int(W.cols()), r_e = int(delta.rank());
      const lola::base_projection<T> got = lola::project_base_weight(W, delta, r_requested);
      const matrix_d W_d = in_double(W);
      const dense_reference ref = reference_of(W_d, in_double(lola::dense(delta)), r);
      const tolerances tol =
          tolerances_for<T>(d, k, r, svd_error<T>(d, k, r_e, factor_norm), W_d, ref.gap);
      const double w_tol = w_top_tolerance<T>(d, k, r, W_d);
      CHECK(got.rank == r);
      CHECK(got.delta_numerical_rank == std::min({d, k, r_e}));
      CHECK(std::abs(got.delta_norm - ref.delta_norm) <= tol.delta_norm);
      CHECK(std::abs(got.projection_norm - ref.projection_norm) <= tol.projection_norm);
      const double amp_tol =
          tol.amplification(ref.delta_norm, ref.projection_norm, ref.amplification);
      CHECK(std::abs(got.amplification - ref.amplification) <= amp_tol);
      CHECK(std::abs(got.w_top_r_norm - ref.w_top_r_norm) <= w_tol);
      worst = std::max({worst, std::abs(got.delta_norm - ref.delta_norm) / tol.delta_norm,
                        std::abs(got.projection_norm - ref.projection_norm) / tol.projection_norm,
                        std::abs(got.amplification - ref.amplification) / amp_tol,
                        std::abs(got.w_top_r_norm - ref.w_top_r_norm) / w_tol});
    };

    {
      const int d = 30, k = 20, r_e = 4;
      const matrix<T> W = gaussian<T>(d, k, rng);
      const matrix<T> B = gaussian<T>(d, r_e, rng), A = gaussian<T>(r_e, k, rng);
      const T s = T(0.5);
      const double n = double(s) * in_double(B).norm() * in_double(A).norm();
      check(W, lola::factor(B, A, s), lola::use_delta_rank, r_e, n);
      check(W, lola::factor(B, A, s), 2, 2, n);      // fewer directions than the rank
      check(W, lola::factor(B, A, s), 100, r_e, n);  // clamped to the rank
    }
    {
      const int d = 20, k = 35, r_e = 3;
      const matrix<T> W = gaussian<T>(d, k, rng);
      const matrix<T> B = gaussian<T>(d, r_e, rng), A = gaussian<T>(r_e, k, rng);
      check(W, T(2) * lola::factor(B, A), lola::use_delta_rank, r_e,
            2.0 * in_double(B).norm() * in_double(A).norm());
    }
    {
      // A sum of two modules (rank 2 + 3) and r ≥ min(d, k) on a small square W.
      const int d = 5, k = 5;
      const matrix<T> W = gaussian<T>(d, k, rng);
      const matrix<T> B1 = gaussian<T>(d, 2, rng), A1 = gaussian<T>(2, k, rng);
      const matrix<T> B2 = gaussian<T>(d, 3, rng), A2 = gaussian<T>(3, k, rng);
      const auto sum = lola::factor(B1, A1) + lola::factor(B2, A2, T(0.25));
      const double n = in_double(B1).norm() * in_double(A1).norm() +
                       0.25 * in_double(B2).norm() * in_double(A2).norm();
      check(W, sum, lola::use_delta_rank, 5, n);
      check(W, sum, 3, 3, n);
    }
    MESSAGE("worst error / tolerance against the dense reference: " << worst);
  }

  // ΔW is unchanged by (B, A) ↦ (B·G, G⁻¹·A), so is every reported number. The evaluated action
  // represents ΔW + E with ‖E‖_F ≤ 8·r·ε·cond(G)·|s|‖B‖‖A‖ (test_group_action.cpp), and the SVD
  // of the unbalanced factors errs by svd_error with ‖BG‖‖G⁻¹A‖ ≤ cond(G)·‖B‖‖A‖ in place of
  // ‖B‖‖A‖ (|det G| = 1 normalisation of random_gl).
  //
  // The data keep those worst-case bounds informative in float at cond(G) = 1e3: the tolerance of
  // projection_norm relative to its value is about 2√2·(‖W‖₂/‖UᵀWV‖_F)·(‖B‖‖A‖/gap)·c·ε·cond with
  // c ≈ 8r + 2(d + k + r), so ΔW is built well conditioned (σᵢ = 2 − 0.15·i, balanced factors:
  // ‖B‖‖A‖/gap = Σσᵢ/σ_r ≈ 4.6) and W carries energy in ΔW's subspaces (‖W‖₂/‖UᵀWV‖_F ≈ 1).
  TEST_CASE_TEMPLATE("every number is GL(r)-invariant within ε·cond(G); (BG, GA) is not", T, float,
                     double) {
    std::mt19937_64 rng(72);
    const int d = 24, k = 16, r = 4;
    const matrix_d QB = lola::thin_qr<double>(gaussian<double>(d, r, rng)).Q;
    const matrix_d QA = lola::thin_qr<double>(gaussian<double>(k, r, rng)).Q;
    Eigen::VectorXd root_sigma(r);
    for (int i = 0; i < r; ++i) root_sigma(i) = std::sqrt(2.0 - 0.15 * i);
    const matrix<T> B = (QB * root_sigma.asDiagonal()).cast<T>();
    const matrix<T> A = (root_sigma.asDiagonal() * QA.transpose()).cast<T>();
    const matrix<T> W = (gaussian<double>(d, k, rng) + 5.0 * QB * QA.transpose()).cast<T>();
    const T s = T(0.5);
    const auto L = lola::factor(B, A, s);
    const lola::base_projection<T> base = lola::project_base_weight(W, L);
    const dense_reference ref = reference_of(in_double(W), in_double(lola::dense(L)), r);
    const double n = double(s) * in_double(B).norm() * in_double(A).norm();

    double worst = 0, last_relative = 0;
    for (double cond : {1.0, 10.0, 100.0, 1000.0}) {
      // Both sides' SVD errors, the second on factors unbalanced by cond(G), plus the action's E.
      const double e_delta = svd_error<T>(d, k, r, n) + svd_error<T>(d, k, r, n * cond) +
                             8.0 * r * eps<T>() * cond * n;
      const tolerances tol = tolerances_for<T>(d, k, r, e_delta, in_double(W), ref.gap, 2);
      const double amp_tol =
          tol.amplification(ref.delta_norm, ref.projection_norm, ref.amplification);
      REQUIRE(tol.projection_norm < 0.5 * ref.projection_norm);  // the bound says something
      last_relative = tol.projection_norm / ref.projection_norm;
      const auto within = [&](const lola::base_projection<T>& x) {
        return x.rank == base.rank && x.delta_numerical_rank == base.delta_numerical_rank &&
               std::abs(x.delta_norm - base.delta_norm) <= tol.delta_norm &&
               std::abs(x.projection_norm - base.projection_norm) <= tol.projection_norm &&
               std::abs(x.amplification - base.amplification) <= amp_tol;
      };
      for (int trial = 0; trial < 3; ++trial) {
        const matrix<T> G = lola::random_gl<T>(r, cond, rng);
        const lola::base_projection<T> acted = lola::project_base_weight(W, lola::act(L, G));
        CHECK(within(acted));
        worst =
            std::max({worst, std::abs(acted.delta_norm - base.delta_norm) / tol.delta_norm,
                      std::abs(acted.projection_norm - base.projection_norm) / tol.projection_norm,
                      std::abs(acted.amplification - base.amplification) / amp_tol});
        // The baselines depend on W, r and the seed only: bit for bit the same.
        CHECK(acted.w_top_r_norm == base.w_top_r_norm);
        CHECK(acted.random_norm == base.random_norm);

        const auto wrong = lola::factor(matrix<T>(B * G), matrix<T>(G * A), s);
        CHECK_FALSE(within(lola::project_base_weight(W, wrong)));
      }
    }
    MESSAGE("worst error / tolerance under GL(r): "
            << worst << "; at cond 1e3 the projection_norm tolerance is " << last_relative
            << " of its value");
  }

  // W's top-r energy: subspace iteration where it converges cheaply, BDCSVD where it cannot.
  // Against the BDCSVD of the same rounded W in double:
  //   BDCSVD path: the dense bound, w_top_tolerance.
  //   Iteration path: the stopping level. The energy is certified to η = 4·√max(d, k)·ε
  //   relatively, the level of its own rounding, i.e. the norm to half that; the certificate
  //   extrapolates the remaining error from the observed rate, so allow 4× for a misjudged rate:
  //   8·√max(d, k)·ε relatively. This is the stronger claim: near working precision, far below
  //   the dense backward-error bound.
  TEST_CASE_TEMPLATE("w_top_r_norm equals √(σ₁(W)² + … + σ_r(W)²) on every path", T, float,
                     double) {
    std::mt19937_64 rng(73);
    const int d = 600, k = 400, r = 4;
    const auto check = [&](const matrix<T>& W, int rank, const char* what) {
      const matrix_d W_d = in_double(W);
      const double reference = Eigen::BDCSVD<matrix_d>(W_d).singularValues().head(rank).norm();
      std::mt19937_64 draw(1);
      const auto energy = lola::detail::top_singular_energy<T>(W, rank, draw);
      const double tolerance = energy.dense ? w_top_tolerance<T>(d, k, rank, W_d)
                                            : 8.0 * std::sqrt(double(d)) * eps<T>() * reference;
      const double error = std::abs(std::sqrt(double(energy.energy)) - reference);
      CHECK(error <= tolerance);
      MESSAGE(std::string(what) << ": "
                                << std::string(energy.dense ? "BDCSVD" : "subspace iteration")
                                << " after " << energy.iterations << " steps, error / tolerance "
                                << error / tolerance << ", relative error / ε "
                                << error / reference / eps<T>());
      return energy;
    };

    // Geometric decay 0.7ⁱ: σ_{l+1}/σ_r = 0.7¹⁰ with l = r + 10, so a handful of steps suffice.
    Eigen::VectorXd decaying(k);
    for (int i = 0; i < k; ++i) decaying(i) = 10.0 * std::pow(0.7, i) + 1e-3;
    const auto fast = check(with_spectrum<T>(d, k, decaying, rng), r, "decaying spectrum");
    CHECK_FALSE(fast.dense);
    CHECK(fast.iterations <= 10);

    // Slower decay 0.93ⁱ: σ_{l+1}/σ_r = 0.93¹⁰ ≈ 0.48, the energy error falls by ≈ 0.05 a step, so
    // certification comes from the extrapolated rate after several steps, within the budget of 21.
    Eigen::VectorXd moderate(k);
    for (int i = 0; i < k; ++i) moderate(i) = 10.0 * std::pow(0.93, i) + 1e-3;
    const auto slower = check(with_spectrum<T>(d, k, moderate, rng), r, "moderate decay");
    CHECK_FALSE(slower.dense);

    // Rank 3 < l: the first range sample is exact, so the first step certifies.
    const auto exact =
        check(with_spectrum<T>(d, k, Eigen::Vector3d(5.0, 2.0, 1.0), rng), r, "rank 3");
    CHECK_FALSE(exact.dense);
    CHECK(exact.iterations <= 2);

    // A Gaussian W: the top of its Marchenko–Pastur spectrum is nearly flat, σ_{l+1}/σ_r ≈ 0.97,
    // so certification takes long or never comes; either way the value is right.
    check(gaussian<T>(d, k, rng), r, "Gaussian");

    // Small W: BDCSVD directly. r = min(d, k): ‖W‖²_F with no decomposition at all.
    const matrix<T> small = gaussian<T>(30, 20, rng);
    std::mt19937_64 draw(2);
    CHECK(lola::detail::top_singular_energy<T>(small, 3, draw).dense);
    const auto all = lola::detail::top_singular_energy<T>(small, 20, draw);
    CHECK_FALSE(all.dense);
    CHECK(all.energy == small.squaredNorm());
  }

  // Ky Fan: ‖UᵀWV‖_F over orthonormal d×r U and k×r V is maximised by W's own top-r singular
  // vectors, so both other numbers are at most w_top_r_norm (up to the rounding of each).
  TEST_CASE_TEMPLATE("random_norm: fixed by the seed, of size ‖W‖_F·r/√(dk), below w_top_r_norm", T,
                     float, double) {
    std::mt19937_64 rng(74);
    const int d = 60, k = 40, r = 3;
    const matrix<T> W = gaussian<T>(d, k, rng);
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto L = lola::factor(B, A);
    const auto first = lola::project_base_weight(W, L);
    const auto again = lola::project_base_weight(W, L);
    CHECK(first.random_norm == again.random_norm);
    CHECK(first.random_norm ==
          lola::project_base_weight(W, L, r, lola::default_projection_seed).random_norm);
    CHECK(first.random_norm != lola::project_base_weight(W, L, r, 5).random_norm);

    // For independent Haar U (d×r) and V (k×r), E[UUᵀ] = (r/d)·I and E[VVᵀ] = (r/k)·I, so
    // E‖UᵀWV‖²_F = tr(E[UUᵀ]·W·E[VVᵀ]·Wᵀ) = r²‖W‖²_F/(d·k). For a Gaussian W the r² entries of
    // UᵀWV are close to independent N(0, ‖W‖²_F/(dk)), so one draw's square is about
    // χ²_{r²}/r² times the mean: relative sd √2/r = 0.47. Over 200 seeds the mean has sd 0.033;
    // ±0.25 is more than 7 of them. A single draw is within a factor 4 of the RMS unless
    // χ²₉ > 144 or χ²₉ < 9/16 (probabilities below 1e-20 and about 5e-5; one fixed seed here).
    const double expected = double(W.norm()) * r / std::sqrt(double(d) * k);
    double mean_square = 0;
    for (std::uint64_t seed = 1; seed <= 200; ++seed) {
      const auto x = lola::project_base_weight(W, L, r, seed);
      mean_square += double(x.random_norm) * double(x.random_norm) / 200.0;
      CHECK(x.random_norm <= x.w_top_r_norm * (1 + 8 * eps<T>()));
    }
    CHECK(std::abs(mean_square / (expected * expected) - 1.0) < 0.25);
    CHECK(first.random_norm > expected / 4);
    CHECK(first.random_norm < expected * 4);
    CHECK(first.projection_norm <= first.w_top_r_norm * (1 + 8 * eps<T>()));
  }

  TEST_CASE_TEMPLATE("amplification = delta_norm / projection_norm; the scale enters only ΔW", T,
                     float, double) {
    std::mt19937_64 rng(75);
    const int d = 24, k = 16, r = 4;
    const matrix<T> W = gaussian<T>(d, k, rng);
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    const auto x = lola::project_base_weight(W, lola::factor(B, A));
    CHECK(x.amplification == x.delta_norm / x.projection_norm);
    // s = 2 is exact in binary and JacobiSVD normalises its input by the largest entry, so the
    // singular vectors are bit-identical and the norm exactly doubles: amplification doubles,
    // the projection and both baselines do not move.
    const auto y = lola::project_base_weight(W, T(2) * lola::factor(B, A));
    CHECK(y.delta_norm == 2 * x.delta_norm);
    CHECK(std::abs(y.projection_norm - x.projection_norm) <= 4 * eps<T>() * x.projection_norm);
    CHECK(std::abs(y.amplification - 2 * x.amplification) <= 8 * eps<T>() * x.amplification);
    CHECK(y.w_top_r_norm == x.w_top_r_norm);
    CHECK(y.random_norm == x.random_norm);

    // ΔW = e₁e₁ᵀ and W = e₂e₂ᵀ: W·v₁ = 0 exactly, so the projection is 0 and amplification +inf.
    matrix<T> e1 = matrix<T>::Zero(d, 1), f1 = matrix<T>::Zero(1, k), Wo = matrix<T>::Zero(d, k);
    e1(0, 0) = 1;
    f1(0, 0) = 1;
    Wo(1, 1) = 3;
    const auto z = lola::project_base_weight(Wo, lola::factor(e1, f1, T(5)));
    CHECK(z.delta_norm == T(5));
    CHECK(z.projection_norm == T(0));
    CHECK(z.amplification == std::numeric_limits<T>::infinity());
    CHECK(std::abs(z.w_top_r_norm - T(3)) <= 4 * eps<T>() * 3);  // one σ of a diagonal W, by BDCSVD
  }

  TEST_CASE("a bfloat16 base weight is converted once and gives the float numbers") {
    std::mt19937_64 rng(76);
    const Eigen::MatrixXf W = gaussian<float>(20, 12, rng);
    const Eigen::MatrixXf B = gaussian<float>(20, 2, rng), A = gaussian<float>(2, 12, rng);
    const Eigen::Matrix<Eigen::bfloat16, Eigen::Dynamic, Eigen::Dynamic> W16 =
        W.cast<Eigen::bfloat16>();
    const Eigen::MatrixXf W16_as_float = W16.cast<float>();
    const auto L = lola::factor(B, A);
    const auto x = lola::project_base_weight(W16, L);
    const auto y = lola::project_base_weight(W16_as_float, L);
    CHECK(x.projection_norm == y.projection_norm);
    CHECK(x.w_top_r_norm == y.w_top_r_norm);
    CHECK(x.random_norm == y.random_norm);
  }

  TEST_CASE("bad arguments: shapes, r, empty ΔW, non-finite W") {
    std::mt19937_64 rng(77);
    const Eigen::MatrixXd W = gaussian<double>(5, 4, rng);
    const Eigen::MatrixXd B = gaussian<double>(5, 2, rng), A = gaussian<double>(2, 3, rng);
    try {
      (void)lola::project_base_weight(W, lola::factor(B, A));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(std::string(e.what()).find("W is 5x4 but delta is 5x3") != std::string::npos);
    }
    const Eigen::MatrixXd A4 = gaussian<double>(2, 4, rng);
    const auto L = lola::factor(B, A4);
    for (lola::index r : {lola::index(0), lola::index(-2)}) {
      try {
        (void)lola::project_base_weight(W, L, r);
        FAIL("no exception");
      } catch (const lola::error& e) {
        CHECK(e.code() == lola::error_code::invalid_argument);
      }
    }
    const Eigen::MatrixXd B0(5, 0), A0(0, 4);
    try {
      (void)lola::project_base_weight(W, lola::factor(B0, A0));
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(std::string(e.what()).find("no directions") != std::string::npos);
    }
    Eigen::MatrixXd W_nan = W;
    W_nan(2, 3) = std::numeric_limits<double>::quiet_NaN();
    try {
      (void)lola::project_base_weight(W_nan, L);
      FAIL("no exception");
    } catch (const lola::error& e) {
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(std::string(e.what()).find("5x4") != std::string::npos);
    }
  }
}
