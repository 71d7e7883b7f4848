#pragma once
/// @file
/// How ΔW relates to the frozen weight W: the projection and amplification analysis of the LoRA
/// paper (Hu et al. 2021, §7.3, Table 7, App. H.4).
///
/// With U (d×r), V (k×r) the top-r left and right singular vectors of ΔW, W is projected onto ΔW's
/// r-dimensional subspaces and the size of what is left is compared with ΔW:
///
///   projection_norm = ‖Uᵀ·W·V‖_F          (the paper writes UᵀWVᵀ: its V is the r×k row form)
///   amplification   = ‖ΔW‖_F / ‖Uᵀ·W·V‖_F  (H.4: about 20 for GPT-3's Wq at r = 4)
///
/// and two baselines replace (U, V) by W's own top-r singular vectors, for which
/// ‖U_Wᵀ·W·V_W‖_F = √(σ₁(W)² + … + σ_r(W)²), and by a Haar-random orthonormal pair, for which
/// E‖UᵣᵀWVᵣ‖²_F = (r/d)(r/k)‖W‖²_F. Table 7 reports exactly these three numbers (columns ΔWq, Wq,
/// random) with ‖W‖_F and ‖ΔW‖_F. The numbers depend on ΔW only through its top-r singular
/// subspaces and its norm, so they are unchanged by the GL(r) action on the factors.
///
/// The scale is the expression's: ‖ΔW‖_F includes s. Whether s = α/r belongs in ΔW is the
/// caller's choice (the paper does not say; papers.md §7); amplification scales with it linearly
/// and the other numbers do not depend on it.
///
/// Cost, for d×k W and ΔW of rank r (expression rank r_e):
///   ΔW's thin SVD from its factors (low_rank_svd)            O((d + k)·r_e² + r_e³)
///   Uᵀ·(W·V), W·V formed first                               O(d·k·r)
///   random pair: thin QR of two Gaussians, then Uᵣᵀ·(W·Vᵣ)    O(d·k·r + (d + k)·r²)
///   W's top-r energy Σᵢ≤ᵣ σᵢ(W)² (detail::top_singular_energy below):
///     randomized subspace iteration, O(d·k·l) per step with l = r + max(r, 10), run until the
///     energy is converged to near working precision and never for more steps than a dense SVD's
///     flops would buy; otherwise (small W, or no certified convergence) Eigen::BDCSVD's singular
///     values, O(d·k·min(d, k)). Worst case about twice the dense SVD.
/// No other d×k matrix is formed, except one converted copy of W when its scalar differs and
/// BDCSVD's working copy on the dense path.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>

#include <Eigen/Core>
#include <Eigen/SVD>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/core/random.hpp"
#include "lola/core/scalar.hpp"
#include "lola/core/shape.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "lola/linalg/thin_qr.hpp"

namespace lola {

/// What project_base_weight reports (file comment). All norms are Frobenius norms.
template <class S>
struct base_projection {
  /// r, the number of directions used.
  index rank = 0;
  /// low_rank_svd::rank() of ΔW. Below `rank`, the trailing directions of U and V are arbitrary
  /// and so is projection_norm.
  index delta_numerical_rank = 0;
  /// ‖ΔW‖_F, scale included.
  S delta_norm = 0;
  /// ‖Uᵀ·W·V‖_F, U and V the top-r singular vectors of ΔW.
  S projection_norm = 0;
  /// delta_norm / projection_norm; +inf when projection_norm = 0.
  S amplification = 0;
  /// ‖U_Wᵀ·W·V_W‖_F = √(σ₁(W)² + … + σ_r(W)²).
  S w_top_r_norm = 0;
  /// ‖Uᵣᵀ·W·Vᵣ‖_F for one Haar-random orthonormal pair.
  S random_norm = 0;
};

/// Passed as r: use ΔW's expression rank, clamped to min(d, k).
inline constexpr index use_delta_rank = -1;
/// The default seed of the random baseline (the LoRA paper's arXiv number).
inline constexpr std::uint64_t default_projection_seed = 210609685;

namespace detail {


/// Σᵢ≤ᵣ σᵢ(W)² and how it was obtained.
template <class S>
struct top_singular_energy_result {
  S energy = 0;
  index iterations = 0;  ///< applications of W·Wᵀ after the first range sample
  bool dense = false;    ///< the value came from a full BDCSVD
};

/// Σᵢ≤ᵣ σᵢ(W)² for W d×k, 1 ≤ r ≤ min(d, k).
///
/// r = min(d, k): ‖W‖²_F exactly. Otherwise randomized subspace iteration on W·Wᵀ with l = r + p
/// columns, p = max(r, 10), re-orthonormalised (Householder) after every product:
///   Q₀ = orth(W·Ω) with Ω k×l Gaussian (orthonormalised);
///   Z_q = Wᵀ·Q_q = Q_Z·R;  Q_{q+1} = orth(W·Q_Z).
/// The Rayleigh–Ritz estimate e_q = Σᵢ≤ᵣ σᵢ(R)² = Σᵢ≤ᵣ σᵢ(Q_qᵀW)² is a lower bound on the energy
/// (σᵢ(QᵀW) ≤ σᵢ(W) for orthonormal Q) that rises to it; its error falls like (σ_{l+1}/σ_r)^{4q}.
/// Convergence is certified from the observed rate ρ of the increments Δ_q = e_q − e_{q−1}: the
/// remaining error is about Δ_q·ρ/(1 − ρ), and the iteration stops when that is below
/// η = 4·√max(d, k)·ε·e_q, the rounding level of e_q. ρ is the largest ratio Δ_q/Δ_{q−1} seen
/// between increments above 100·η (the ratio rises towards its asymptotic value as the faster
/// components die out, so the largest is the least optimistic); with no such pair yet, only an
/// increment already below η counts as converged.
/// The steps are capped so that their flops (4·d·k·l each) stay below those of a dense
/// bidiagonalisation, 4·m·n² − 4n³/3 with m = max(d, k) and n = min(d, k). When fewer than 3 steps
/// fit, or when the cap is reached uncertified (a flat spectrum near σ_r), BDCSVD's singular values
/// are used instead, so the result is always accurate to working precision.
template <class S, class X, class Rng>
top_singular_energy_result<S> top_singular_energy(const Eigen::MatrixBase<X>& w, index r,
                                                  Rng& rng) {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const index d = w.rows(), k = w.cols(), n = std::min(d, k), m = std::max(d, k);
  top_singular_energy_result<S> out;
  if (r >= n) {
    out.energy = w.squaredNorm();
    return out;
  }
  const auto dense_energy = [&] {
    const Eigen::BDCSVD<matrix> svd(w);
    return svd.singularValues().head(r).squaredNorm();
  };
  const index l = std::min(n, r + std::max<index>(r, 10));
  const double dense_flops =
      4.0 * double(m) * double(n) * double(n) - 4.0 / 3.0 * double(n) * double(n) * double(n);
  const double step_flops =
      4.0 * double(d) * double(k) * double(l) + 4.0 * double(d + k) * double(l * l);
  const index max_steps = static_cast<index>(dense_flops / step_flops);
  if (max_steps < 3) {
    out.energy = dense_energy();
    out.dense = true;
    return out;
  }

  const matrix omega = random_stiefel<S>(k, l, rng);
  matrix y(d, l), z(k, l);
  y.noalias() = w * omega;
  matrix q = thin_qr<S>(y).Q;
  const S eta_factor = S(4) * std::sqrt(S(m)) * std::numeric_limits<S>::epsilon();
  S previous = S(-1), previous_increment = S(-1), rate = S(-1);
  for (index step = 0; step <= max_steps; ++step) {
    z.noalias() = w.transpose() * q;
    const thin_qr_result<S> qz = thin_qr<S>(z);
    const Eigen::JacobiSVD<matrix> ritz(qz.R);
    const S estimate = ritz.singularValues().head(r).squaredNorm();
    out.iterations = step;
    out.energy = std::max(out.energy, estimate);
    if (step > 0) {
      const S eta = eta_factor * estimate;
      const S increment = estimate - previous;
      if (increment >= S(100) * eta && previous_increment >= S(100) * eta)
        rate = std::max(rate, increment / previous_increment);
      S remaining = std::numeric_limits<S>::infinity();
      if (rate >= S(0))
        remaining = rate < S(1) ? std::max(increment, S(0)) * rate / (S(1) - rate) : remaining;
      else if (std::abs(increment) <= eta)
        remaining = S(0);
      if (remaining <= eta) return out;
      previous_increment = increment;
    }
    previous = estimate;
    if (step == max_steps) break;
    y.noalias() = w * qz.Q;
    q = thin_qr<S>(y).Q;
  }
  out.energy = dense_energy();
  out.dense = true;
  return out;
}

template <class S, class X, class E>
base_projection<S> project_base_weight_impl(const Eigen::MatrixBase<X>& w, const E& delta, index r,
                                            std::uint64_t seed) {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const index d = w.rows(), k = w.cols();
  base_projection<S> out;
  out.rank = r;

  const low_rank_svd<S> svd(delta, compute_uv);
  detail::require_finite_factors(svd.info() == Eigen::Success, "project_base_weight", d, k);
  out.delta_numerical_rank = svd.rank();
  out.delta_norm = svd.singularValues().norm();
  matrix wv(d, r);
  wv.noalias() = w * svd.matrixV().leftCols(r);
  out.projection_norm = (svd.matrixU().leftCols(r).transpose() * wv).norm();
  out.amplification = out.projection_norm > S(0) ? out.delta_norm / out.projection_norm
                                                 : std::numeric_limits<S>::infinity();

  std::mt19937_64 rng(seed);
  const matrix u_random = random_stiefel<S>(d, r, rng);
  const matrix v_random = random_stiefel<S>(k, r, rng);
  wv.noalias() = w * v_random;
  out.random_norm = (u_random.transpose() * wv).norm();

  using std::sqrt;
  out.w_top_r_norm = sqrt(top_singular_energy<S>(w, r, rng).energy);
  return out;
}

}  // namespace detail

/// The Table 7 numbers for the frozen weight W (dense d×k, any Eigen expression) and ΔW given by
/// a host low-rank expression `delta` (d×k); see the file comment and base_projection.
///
/// r: the number of directions, ≥ 1, clamped to min(d, k, delta.rank()); use_delta_rank (the
/// default) means delta.rank(). seed: the random pair's generator (std::mt19937_64), so a seed
/// fixes random_norm; the other numbers do not depend on it beyond rounding. W's storage scalar may
/// differ from delta's compute scalar S (e.g. a bfloat16 base weight); W is then converted once.
///
/// Throws shape_mismatch when W and ΔW differ in shape (the message gives both), invalid_argument
/// for r = 0 or r < −1, for an expression with no directions (d, k or its rank 0), and for
/// non-finite W or factors.
template <class X, class E, class = std::enable_if_t<is_host_expr_v<E>>>
base_projection<scalar_of_t<E>> project_base_weight(const Eigen::MatrixBase<X>& W, const E& delta,
                                                    index r = use_delta_rank,
                                                    std::uint64_t seed = default_projection_seed) {
  using S = scalar_of_t<E>;
  detail::require_shapes(W.rows() == delta.rows() && W.cols() == delta.cols(),
                         "project_base_weight (W and delta must have the same shape)", "W",
                         W.rows(), W.cols(), "delta", delta.rows(), delta.cols());
  if (r < 1 && r != use_delta_rank)
    throw error(
        error_code::invalid_argument,
        "project_base_weight: r must be >= 1 (or use_delta_rank), got " + std::to_string(r));
  if (r == use_delta_rank) r = delta.rank();
  r = std::min({r, delta.rows(), delta.cols(), delta.rank()});
  if (r < 1)
    throw error(error_code::invalid_argument,
                "project_base_weight: delta (" + shape_string(delta.rows(), delta.cols()) +
                    ", rank " + std::to_string(delta.rank()) + ") has no directions to project on");
  if constexpr (std::is_same_v<typename X::Scalar, S>) {
    if (!W.allFinite())
      throw error(error_code::invalid_argument,
                  "project_base_weight: W (" + shape_string(W) + ") has non-finite entries");
    return detail::project_base_weight_impl<S>(W, delta, r, seed);
  } else {
    const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> converted = W.template cast<S>();
    if (!converted.allFinite())
      throw error(error_code::invalid_argument,
                  "project_base_weight: W (" + shape_string(W) + ") has non-finite entries");
    return detail::project_base_weight_impl<S>(converted, delta, r, seed);
  }
}

}  // namespace lola
