#pragma once
/// @file
/// The Gram matrices of the factors, BᵀB and A·Aᵀ (r×r): O(r)-equivariant — under (B·Q, Qᵀ·A)
/// they become Qᵀ(BᵀB)Q and Qᵀ(AAᵀ)Q — so their eigenvalues are O(r)-invariant. They are not
/// GL(r)-invariant (only the eigenvalues of their product BᵀB·AAᵀ, which are σᵢ²). The scale s is
/// not included: these describe the stored factors. O((d + k)·r²).

#include "lola/backend/eigen/evaluate.hpp"

namespace lola {

template <class S>
struct factor_grams {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> b_gram;  ///< BᵀB
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> a_gram;  ///< A·Aᵀ
};

template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
factor_grams<scalar_of_t<E>> grams(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::eigen_evaluator::factors(e);
  const index r = f.rank();
  factor_grams<S> out;
  out.b_gram.setZero(r, r);
  out.a_gram.setZero(r, r);
  const auto B = detail::as_compute<S>(f.B());
  const auto A = detail::as_compute<S>(f.A());
  out.b_gram.template selfadjointView<Eigen::Lower>().rankUpdate(B.transpose());
  out.a_gram.template selfadjointView<Eigen::Lower>().rankUpdate(A);
  out.b_gram.template triangularView<Eigen::StrictlyUpper>() = out.b_gram.transpose();
  out.a_gram.template triangularView<Eigen::StrictlyUpper>() = out.a_gram.transpose();
  return out;
}

}  // namespace lola
