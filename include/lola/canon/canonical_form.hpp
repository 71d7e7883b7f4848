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
#include "lola/backend/eigen/primitives.hpp"
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

template <class S, class Storage = host_storage>
struct canonical_result {
  owning_low_rank<Storage, S> factors;  ///< (B*, A*) with the input's scale
  Eigen::Matrix<S, Eigen::Dynamic, 1> singular_values;  ///< σ of B·A (scale excluded), descending
  index rank = 0;                                       ///< numerical rank
  S min_relative_gap = std::numeric_limits<S>::infinity();  ///< +inf when rank ≤ 1
  bool degenerate = false;
};

namespace detail {

/// The canonical form of s·B·A (B d×r, A r×k, read in S) from its factor-space SVD (of B·A, s = 1):
/// the rank, gaps and factors of the file comment. canonicalize computes the SVD module by module;
/// whole adapters adopt it from the batched r×r stage (canon/canonicalize_adapter.hpp).
/// `components` (0 ≤ components ≤ r; default r) is the width of the factors formed, d×components
/// and components×k: the leading components only, which is what a resize to that rank keeps, at
/// components/r of the thin products' cost. Rank, gaps and σ are those of the whole form.
template <class S, class Storage, class BX, class AX>
canonical_result<S, Storage> canonical_from_svd(const factor_space_svd<S, Storage>& svd, const BX& B, const AX& A,
                                                S scale, canonical_form form, const canonical_options<S>& options,
                                                index components = -1) {
  using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  const index d = B.rows(), k = A.cols(), width = components >= 0 ? std::min(components, B.cols()) : B.cols();
  require_finite_singular_values(svd.sigma, "canonicalize", d, k);

  canonical_result<S, Storage> out;
  out.singular_values = svd.sigma;
  const auto& sigma = out.singular_values;
  const S threshold = options.rank_threshold >= 0 ? options.rank_threshold : default_rank_threshold<S>(d, k);
  out.rank = numerical_rank(sigma, threshold);
  for (index i = 0; i + 1 < out.rank; ++i)
    out.min_relative_gap = std::min(out.min_relative_gap, (sigma(i) - sigma(i + 1)) / sigma(0));
  const index kept = std::min(out.rank, width);
  const S gap_threshold = options.gap_threshold >= 0
                              ? options.gap_threshold
                              : std::sqrt(std::numeric_limits<S>::epsilon());
  out.degenerate = out.min_relative_gap < gap_threshold;

  // B* = U·diag(left), A* = diag(right)·Vᵀ over the kept components, one thin product each from B
  // and A. The sign rule (largest_magnitude_signs) reads B*'s columns (a positive scaling keeps
  // each column's largest entry), and the flips it picks are applied to B* in place and folded
  // into A*'s weights.
  vector left(kept), right(kept);
  if (form == canonical_form::balanced) {
    left = sigma.head(kept).cwiseSqrt();
    right = left;
  } else {
    left = sigma.head(kept);
    right = vector::Ones(kept);
  }
  factor_matrix_t<Storage, S> B_star(d, width), A_star(width, k);
  svd.u_diagonal_into(B, left, B_star.leftCols(kept));
  set_zero(B_star.rightCols(width - kept));
  const vector sign = largest_magnitude_signs(B_star.leftCols(kept));
  scale_columns(B_star.leftCols(kept), sign);
  svd.diagonal_vt_into(A, sign.cwiseProduct(right), A_star.topRows(kept));
  set_zero(A_star.bottomRows(width - kept));
  out.factors = owning_low_rank<Storage, S>(std::move(B_star), std::move(A_star), scale);
  return out;
}

/// f(svd, B, A, s) for module e: its factor-space SVD with singular vectors (of B·A, s = 1, computed
/// alone), its factors read in e's compute scalar, and its scale. Non-finite factors are
/// error_code::numerical, named as canonicalize's (resize, built on the same form, says the same).
template <class E, class F>
decltype(auto) with_module_svd(const E& e, F&& f) {
  using S = scalar_of_t<E>;
  decltype(auto) factors = evaluator::factors(e);
  const auto& B = as_compute<S>(factors.B());
  const auto& A = as_compute<S>(factors.A());
  factor_space_svd<S, storage_of_t<E>> svd;
  require_finite_factors(svd.compute(B, A, S(1), true), "canonicalize", factors.rows(), factors.cols());
  return f(svd, B, A, factors.scale());
}

}  // namespace detail

/// The canonical representative of e's GL(r) orbit (see the file comment).
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
canonical_result<scalar_of_t<E>, storage_of_t<E>> canonicalize(
    const E& e, canonical_form form = canonical_form::balanced,
    canonical_options<scalar_of_t<E>> options = {}) {
  return detail::with_module_svd(e, [&](const auto& svd, const auto& B, const auto& A, auto scale) {
    return detail::canonical_from_svd(svd, B, A, scale, form, options);
  });
}

/// (Q_B, R_B·A) with B = Q_B·R_B, Rᵢᵢ ≥ 0: rank min(d, r), the input's scale. GL(r) → O(r) only.
/// R_B·A is formed as its transpose Aᵀ·R_Bᵀ, one thin product reading A as stored.
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
owning_low_rank<storage_of_t<E>, scalar_of_t<E>> qr_form(const E& e) {
  using detail::as_compute, detail::thin_product_into;
  using S = scalar_of_t<E>;
  using storage = storage_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  thin_qr_result<S, storage> qr = thin_qr<S>(as_compute<S>(f.B()));
  factor_matrix_t<storage, S> RA(qr.R.rows(), f.cols());
  thin_product_into<S>(as_compute<S>(f.A()).transpose(), qr.R.transpose(), RA.transpose());
  return owning_low_rank<storage, S>(std::move(qr.Q), std::move(RA), f.scale());
}

}  // namespace lola
