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

#include <type_traits>

#include <Eigen/QR>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/backend/eigen/householder_r.hpp"
#include "lola/core/shape.hpp"

namespace lola {

/// ⟨E₁, E₂⟩_F = tr(ΔW₁ᵀ·ΔW₂). Throws shape_mismatch unless both are d×k.
template <class E1, class E2,
          class = std::enable_if_t<is_host_expr_v<E1> && is_host_expr_v<E2>>>
scalar_of_t<E1> inner(const E1& e1, const E2& e2) {
  using S = scalar_of_t<E1>;
  static_assert(std::is_same_v<S, scalar_of_t<E2>>,
                "lola: inner() needs two expressions of the same compute scalar");
  detail::require_shapes(e1.rows() == e2.rows() && e1.cols() == e2.cols(), "inner",
                         "the first expression", e1.rows(), e1.cols(), "the second expression",
                         e2.rows(), e2.cols());
  decltype(auto) f1 = detail::eigen_evaluator::factors(e1);
  decltype(auto) f2 = detail::eigen_evaluator::factors(e2);
  if (f1.rank() == 0 || f2.rank() == 0) return S(0);
  const detail::dense_matrix<S> b_cross =
      detail::as_compute<S>(f1.B()).transpose() * detail::as_compute<S>(f2.B());  // r₁×r₂
  const detail::dense_matrix<S> a_cross =
      detail::as_compute<S>(f2.A()) * detail::as_compute<S>(f1.A()).transpose();  // r₂×r₁
  return f1.scale() * f2.scale() * b_cross.cwiseProduct(a_cross.transpose()).sum();
}

/// ‖ΔW‖_F.
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
scalar_of_t<E> norm(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::eigen_evaluator::factors(e);
  if (f.rank() == 0 || f.rows() == 0 || f.cols() == 0) return S(0);
  const Eigen::HouseholderQR<detail::dense_matrix<S>> qr(detail::as_compute<S>(f.B()));
  const detail::dense_matrix<S> r_b_a = detail::householder_r(qr) * detail::as_compute<S>(f.A());
  using std::abs;
  return abs(f.scale()) * r_b_a.norm();
}

/// tr(ΔW). Throws shape_mismatch unless ΔW is square.
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
scalar_of_t<E> trace(const E& e) {
  using S = scalar_of_t<E>;
  detail::require_shapes(e.rows() == e.cols(), "trace (needs a square matrix)", "the expression",
                         e.rows(), e.cols(), "its transpose", e.cols(), e.rows());
  decltype(auto) f = detail::eigen_evaluator::factors(e);
  if (f.rank() == 0) return S(0);
  return f.scale() *
         detail::as_compute<S>(f.B()).cwiseProduct(detail::as_compute<S>(f.A()).transpose()).sum();
}

}  // namespace lola
