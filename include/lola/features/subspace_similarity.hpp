#pragma once
/// @file
/// The subspace similarity φ of the LoRA paper (Hu et al. 2021, eq. 4 and App. G), and the
/// singular bases it is computed on.
///
///   φ(i, j) = ‖U₁[:, :i]ᵀ·U₂[:, :j]‖²_F / min(i, j)
///
/// for bases U₁ (n×r₁) and U₂ (n×r₂) with orthonormal columns ordered by importance (decreasing
/// singular value). With σₜ the singular values of U₁[:, :i]ᵀU₂[:, :j] (the cosines of the
/// principal angles between the two spans) and p = min(i, j), φ = Σₜσₜ²/p, so φ ∈ [0, 1]: 1 when
/// one span contains the other (identical spans for i = j), 0 when they are orthogonal. Against the
/// projection metric d = √(p − Σₜσₜ²) (Ham & Lee 2008), φ = 1 − d²/p. The paper prints
/// φ = (1/p)(1 − d²), a typo (research/papers.md §7).
///
/// The paper compares the A factors of two adapters through U_A, the top right singular vectors of
/// A ∈ R^{r×k}: k-dimensional input-space directions. App. G calls them "left singular" vectors,
/// but for k-dimensional vectors of A only the right ones fit (papers.md §7); input_subspace(A)
/// returns those. Its footnote applies the same analysis to B with B's left singular vectors:
/// output_subspace(B).
///
/// Symmetry. Under the GL(r) action (B, A) ↦ (B·G, G⁻¹·A) the row space of A and the column space
/// of B do not change, so the full bases (all p columns) span the same subspace before and after.
/// The individual singular vectors of A, and therefore φ(i, j) for i < p or j < p, do change: the
/// paper's φ is a statistic of the trained factors, not of ΔW. For a GL-invariant ordering use the
/// singular vectors of ΔW itself (low_rank_svd's matrixU() and matrixV()).

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include <Eigen/Core>
#include <Eigen/SVD>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/core/scalar.hpp"
#include "lola/core/shape.hpp"
#include "lola/linalg/thin_qr.hpp"

namespace lola {
namespace detail {

/// The compute scalar of a subspace function: S when given, else deduced from the storage scalar.
template <class S, class Storage>
using subspace_scalar_t = std::conditional_t<std::is_void_v<S>, compute_scalar_t<Storage>, S>;

template <class X>
void require_finite_entries(const Eigen::MatrixBase<X>& x, const char* function, const char* name) {
  if (!x.allFinite())
    throw error(error_code::invalid_argument, std::string(function) + ": " + name + " (" +
                                                  shape_string(x) + ") has non-finite entries");
}

/// The left singular vectors of X (m×n) as an m×p matrix, p = min(m, n), ordered by decreasing
/// singular value: X = Q·R (thin QR, O(m·n²)), R = P·Σ·Sᵀ (one-sided Jacobi on the p×n core,
/// O(p²·n)), so X = (Q·P)·Σ·Sᵀ and the basis is Q·P (O(m·p²)). No m×m matrix is formed.
/// Columns beyond X's numerical rank are an orthonormal completion with no meaning of their own.
template <class S, class X>
Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> left_singular_basis(
    const Eigen::MatrixBase<X>& x) {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const thin_qr_result<S> qr = thin_qr<S>(x.derived());
  if (qr.R.rows() == 0) return matrix::Zero(x.rows(), 0);
  const Eigen::JacobiSVD<matrix> svd(qr.R, Eigen::ComputeThinU);
  return qr.Q * svd.matrixU();
}

/// Throws invalid_argument unless ‖UᵀU − I‖_max ≤ √ε (the tolerance act_orthogonal uses), with ε
/// that of U's own compute scalar: a float basis is orthonormal only to float precision.
template <class S, class X>
void require_orthonormal_columns(const Eigen::MatrixBase<X>& u, const char* function,
                                 const char* name) {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using own = compute_scalar_t<typename X::Scalar>;
  const index r = u.cols();
  if (r == 0) return;
  const matrix gram = u.template cast<S>().transpose() * u.template cast<S>();
  const S deviation = (gram - matrix::Identity(r, r)).cwiseAbs().maxCoeff();
  if (!(deviation <= S(std::sqrt(std::numeric_limits<own>::epsilon())))) {
    std::ostringstream message;
    message << function << ": " << name << " (" << shape_string(u)
            << ") does not have orthonormal columns, max |UᵀU - I| = " << std::setprecision(3)
            << deviation << " (pass input_subspace(A) or output_subspace(B), not a factor)";
    throw error(error_code::invalid_argument, message.str());
  }
}

}  // namespace detail

/// The right singular vectors of A (r×k, the down factor): k×p with orthonormal columns ordered by
/// decreasing singular value, p = min(r, k). Thin QR of Aᵀ then an SVD of the small R factor:
/// O(k·r²), never a k×k matrix. The sign of each column is arbitrary, as in any SVD; φ does not
/// depend on it. Throws invalid_argument for non-finite entries.
template <class S = void, class X>
Eigen::Matrix<detail::subspace_scalar_t<S, typename X::Scalar>, Eigen::Dynamic, Eigen::Dynamic>
input_subspace(const Eigen::MatrixBase<X>& A) {
  using T = detail::subspace_scalar_t<S, typename X::Scalar>;
  detail::require_finite_entries(A, "input_subspace", "A");
  return detail::left_singular_basis<T>(A.transpose());
}

/// The left singular vectors of B (d×r, the up factor): d×p with orthonormal columns ordered by
/// decreasing singular value, p = min(d, r). Thin QR of B then an SVD of the small R factor:
/// O(d·r²). Throws invalid_argument for non-finite entries.
template <class S = void, class X>
Eigen::Matrix<detail::subspace_scalar_t<S, typename X::Scalar>, Eigen::Dynamic, Eigen::Dynamic>
output_subspace(const Eigen::MatrixBase<X>& B) {
  using T = detail::subspace_scalar_t<S, typename X::Scalar>;
  detail::require_finite_entries(B, "output_subspace", "B");
  return detail::left_singular_basis<T>(B);
}

/// Φ (r₁×r₂) with Φ(i − 1, j − 1) = φ(i, j) for all 1 ≤ i ≤ r₁, 1 ≤ j ≤ r₂ (file comment).
///
/// G = U₁ᵀU₂ once (O(n·r₁·r₂)); then φ(i, j)·min(i, j) = Σ_{a≤i, b≤j} G²_ab for every (i, j) from
/// running sums of G∘G, first along rows and then along columns (O(r₁·r₂)). Every partial sum adds
/// non-negative terms, so each φ carries a relative rounding error of at most (r₁ + r₂)·ε on top of
/// the error of G; nothing cancels. φ lies in [0, 1] up to that rounding and up to the departure of
/// the bases from orthonormality; values are not clipped.
///
/// The orthonormality of both bases is checked, O(n·(r₁² + r₂²)): ‖UᵀU − I‖_max ≤ √ε with ε of
/// each basis's own scalar, else invalid_argument (passing a factor instead of its subspace is the
/// likely mistake); so is finiteness. Bases of different n throw shape_mismatch naming both shapes.
template <class S = void, class X1, class X2>
Eigen::Matrix<
    std::conditional_t<std::is_void_v<S>,
                       common_compute_scalar_t<typename X1::Scalar, typename X2::Scalar>, S>,
    Eigen::Dynamic, Eigen::Dynamic>
subspace_similarity(const Eigen::MatrixBase<X1>& U1, const Eigen::MatrixBase<X2>& U2) {
  using T =
      std::conditional_t<std::is_void_v<S>,
                         common_compute_scalar_t<typename X1::Scalar, typename X2::Scalar>, S>;
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  detail::require_shapes(U1.rows() == U2.rows(),
                         "subspace_similarity (the bases must have the same number of rows)", "U1",
                         U1.rows(), U1.cols(), "U2", U2.rows(), U2.cols());
  detail::require_finite_entries(U1, "subspace_similarity", "U1");
  detail::require_finite_entries(U2, "subspace_similarity", "U2");
  detail::require_orthonormal_columns<T>(U1, "subspace_similarity", "U1");
  detail::require_orthonormal_columns<T>(U2, "subspace_similarity", "U2");
  const index r1 = U1.cols(), r2 = U2.cols();
  matrix phi(r1, r2);
  if (r1 == 0 || r2 == 0) return phi;
  phi.noalias() = U1.template cast<T>().transpose() * U2.template cast<T>();
  phi = phi.cwiseAbs2();
  for (index j = 1; j < r2; ++j) phi.col(j) += phi.col(j - 1);
  for (index j = 0; j < r2; ++j)
    for (index i = 1; i < r1; ++i) phi(i, j) += phi(i - 1, j);
  for (index j = 0; j < r2; ++j)
    for (index i = 0; i < r1; ++i) phi(i, j) /= static_cast<T>(std::min(i, j) + 1);
  return phi;
}

}  // namespace lola
