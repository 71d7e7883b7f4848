#pragma once
/// @file
/// Scalars of ΔW computed from the factors: Frobenius inner product, Frobenius norm, trace.
///
///   inner(E₁, E₂) = ⟨s₁B₁A₁, s₂B₂A₂⟩_F = s₁s₂·tr((B₁ᵀB₂)(A₂A₁ᵀ))     O((d + k)·r₁·r₂)
///   norm(E)       = |s|·‖R_B·A‖_F with B = Q_B·R_B (Householder QR)   O((d + k)·r²)
///   trace(E)      = s·tr(B·A) = s·Σᵢⱼ Bᵢⱼ·Aⱼᵢ  (square ΔW only)        O(d·r)
///
/// Why the norm goes through QR and not through the Gram form tr((BᵀB)(AAᵀ)): the Gram form has an
/// absolute error of order ε·‖B‖²‖A‖², which relative to ‖BA‖² is ε·κ² where κ = ‖B‖‖A‖/‖BA‖ can
/// be as large as cond(G)² after a GL action. QR is backward stable, so ‖R_B·A‖ carries a relative
/// error of order ε·κ. inner() has no such shortcut and uses the Gram form.

#include <cmath>
#include <type_traits>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/backend/eigen/primitives.hpp"
#include "lola/linalg/thin_qr.hpp"
#include "lola/core/shape.hpp"

namespace lola {

/// ⟨E₁, E₂⟩_F = tr(ΔW₁ᵀ·ΔW₂). Throws shape_mismatch unless both are d×k.
template <class E1, class E2,
          class = std::enable_if_t<is_low_rank_expr_v<E1> && is_low_rank_expr_v<E2>>>
scalar_of_t<E1> inner(const E1& e1, const E2& e2) {
  using detail::as_compute, detail::cross_gram_into;
  using S = scalar_of_t<E1>;
  static_assert(std::is_same_v<S, scalar_of_t<E2>>,
                "lola: inner() needs two expressions of the same compute scalar");
  detail::require_shapes(e1.rows() == e2.rows() && e1.cols() == e2.cols(), "inner",
                         "the first expression", e1.rows(), e1.cols(), "the second expression",
                         e2.rows(), e2.cols());
  decltype(auto) f1 = detail::evaluator::factors(e1);
  decltype(auto) f2 = detail::evaluator::factors(e2);
  if (f1.rank() == 0 || f2.rank() == 0) return S(0);
  detail::dense_matrix<S> b_cross, a_cross;
  cross_gram_into(as_compute<S>(f1.B()), as_compute<S>(f2.B()), b_cross);  // B₁ᵀB₂, r₁×r₂
  cross_gram_into(as_compute<S>(f1.A()).transpose(), as_compute<S>(f2.A()).transpose(),
                  a_cross);  // A₁A₂ᵀ = (A₂A₁ᵀ)ᵀ, r₁×r₂
  return f1.scale() * f2.scale() * b_cross.cwiseProduct(a_cross).sum();
}

/// ‖ΔW‖_F.
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
scalar_of_t<E> norm(const E& e) {
  using detail::as_compute, detail::frobenius_norm, detail::thin_product_into;
  using S = scalar_of_t<E>;
  using storage = storage_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  if (f.rank() == 0 || f.rows() == 0 || f.cols() == 0) return S(0);
  detail::householder_qr<storage, S> qr;
  const int exponent = detail::compute_in_range(qr, as_compute<S>(f.B()));  // R_B = 2ᵉ·R'
  const detail::dense_matrix<S> r_b = qr.R();
  // (R'·A)ᵀ = Aᵀ·R'ᵀ (k×p): one thin product reading A as stored.
  factor_matrix_t<storage, S> a_t_r_t(f.cols(), r_b.rows());
  thin_product_into<S>(as_compute<S>(f.A()).transpose(), r_b.transpose(), a_t_r_t);
  using std::abs;
  return std::ldexp(abs(f.scale()) * frobenius_norm(a_t_r_t), exponent);
}

/// tr(ΔW). Throws shape_mismatch unless ΔW is square.
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
scalar_of_t<E> trace(const E& e) {
  using detail::as_compute, detail::frobenius_dot;
  using S = scalar_of_t<E>;
  detail::require_shapes(e.rows() == e.cols(), "trace (needs a square matrix)", "the expression",
                         e.rows(), e.cols(), "its transpose", e.cols(), e.rows());
  decltype(auto) f = detail::evaluator::factors(e);
  if (f.rank() == 0) return S(0);
  return f.scale() * frobenius_dot(as_compute<S>(f.B()), as_compute<S>(f.A()).transpose());
}

}  // namespace lola
