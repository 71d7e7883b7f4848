#pragma once
/// @file
/// Canonical forms: one representative of each GL(r) orbit {(B·G, G⁻¹·A)}, so that any G applied
/// first gives the same factors up to rounding.
///
/// From the thin SVD B·A = U·Σ·Vᵀ (linalg/low_rank_svd.hpp, computed from the factors):
///   balanced   B* = U·√Σ,  A* = √Σ·Vᵀ    (‖B*‖_F = ‖A*‖_F; the LoL-friendly form)
///   left       B* = U·Σ,   A* = Vᵀ       (the PEFT / kohya svd convention)
/// Sign rule: each column of U is flipped, with the matching row of Vᵀ, so that its entry of
/// largest magnitude is positive (ties go to the lowest index). Components beyond the numerical
/// rank are exactly zero, and the factors keep the input's shape d×r and r×k (zero-padded when
/// r > min(d, k)). The scale s is kept: s·B*·A* = s·B·A.
///
/// When two retained singular values (nearly) coincide, any rotation inside their pair of
/// singular subspaces is an equally valid SVD, and no sign rule can pick one: the form is then
/// ill-defined. The result reports min_relative_gap = minᵢ (σᵢ − σᵢ₊₁)/σ₁ over the retained σ and
/// flags `degenerate` when it falls below a threshold (default √ε). A perturbation of relative size
/// δ moves the canonical factors by about δ/min_relative_gap.
///
/// qr_form(e) = (Q_B, R_B·A) only reduces GL(r) to O(r): it is determined by B's column space and
/// A up to a rotation of that space, a partial canonicalisation (cheaper: no SVD).

#include <cmath>
#include <limits>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "lola/linalg/thin_qr.hpp"

namespace lola {

enum class canonical_form { balanced, left };

/// Thresholds of canonicalize(); a negative value selects the default.
template <class S>
struct canonical_options {
  S rank_threshold = S(-1);  ///< relative rank threshold, default max(d, k)·ε (low_rank_svd)
  S gap_threshold = S(-1);   ///< degenerate when min_relative_gap < this, default √ε
};

template <class S>
struct canonical_result {
  low_rank_matrix<S> factors;  ///< (B*, A*) with the input's scale
  Eigen::Matrix<S, Eigen::Dynamic, 1> singular_values;  ///< σ of B·A (scale excluded), descending
  index rank = 0;                                       ///< numerical rank
  S min_relative_gap = std::numeric_limits<S>::infinity();  ///< +inf when rank ≤ 1
  bool degenerate = false;
};

namespace detail {

/// Flips column j of U (and the matching column of V) so that its largest-magnitude entry is
/// positive; the first of equal magnitudes wins.
template <class MU, class MV>
void apply_sign_rule(MU& U, MV& V) {
  for (index j = 0; j < U.cols(); ++j) {
    index best = 0;
    for (index i = 1; i < U.rows(); ++i)
      if (std::abs(U(i, j)) > std::abs(U(best, j))) best = i;
    if (U.rows() > 0 && U(best, j) < 0) {
      U.col(j) = -U.col(j);
      V.col(j) = -V.col(j);
    }
  }
}

}  // namespace detail

/// The canonical representative of e's GL(r) orbit (see the file comment).
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
canonical_result<scalar_of_t<E>> canonicalize(const E& e,
                                              canonical_form form = canonical_form::balanced,
                                              canonical_options<scalar_of_t<E>> options = {}) {
  using S = scalar_of_t<E>;
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  decltype(auto) f = detail::eigen_evaluator::factors(e);
  const index d = f.rows(), k = f.cols(), r = f.rank();
  low_rank_svd<S> svd;
  svd.compute_factors(detail::as_compute<S>(f.B()), detail::as_compute<S>(f.A()), S(1));
  if (svd.info() != Eigen::Success)
    throw error(error_code::numerical,
                "canonicalize: the factors of the " + shape_string(d, k) + " module are not finite");
  if (options.rank_threshold >= 0) svd.setThreshold(options.rank_threshold);

  canonical_result<S> out;
  out.singular_values = svd.singularValues();
  out.rank = svd.rank();
  const auto& sigma = out.singular_values;
  for (index i = 0; i + 1 < out.rank; ++i)
    out.min_relative_gap = std::min(out.min_relative_gap, (sigma(i) - sigma(i + 1)) / sigma(0));
  const S gap_threshold = options.gap_threshold >= 0
                              ? options.gap_threshold
                              : std::sqrt(std::numeric_limits<S>::epsilon());
  out.degenerate = out.min_relative_gap < gap_threshold;

  matrix U = svd.matrixU().leftCols(out.rank), V = svd.matrixV().leftCols(out.rank);
  detail::apply_sign_rule(U, V);
  matrix B_star = matrix::Zero(d, r), A_star = matrix::Zero(r, k);
  const auto kept = sigma.head(out.rank).array();
  if (form == canonical_form::balanced) {
    B_star.leftCols(out.rank) = U * kept.sqrt().matrix().asDiagonal();
    A_star.topRows(out.rank) = kept.sqrt().matrix().asDiagonal() * V.transpose();
  } else {
    B_star.leftCols(out.rank) = U * kept.matrix().asDiagonal();
    A_star.topRows(out.rank) = V.transpose();
  }
  out.factors = low_rank_matrix<S>(std::move(B_star), std::move(A_star), f.scale());
  return out;
}

/// (Q_B, R_B·A) with B = Q_B·R_B, Rᵢᵢ ≥ 0: rank min(d, r), the input's scale. GL(r) → O(r) only.
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
low_rank_matrix<scalar_of_t<E>> qr_form(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::eigen_evaluator::factors(e);
  thin_qr_result<S> qr = thin_qr<S>(detail::as_compute<S>(f.B()));
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> RA = qr.R * detail::as_compute<S>(f.A());
  return low_rank_matrix<S>(std::move(qr.Q), std::move(RA), f.scale());
}

}  // namespace lola
