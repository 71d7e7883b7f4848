#pragma once
/// @file
/// The Gram matrices of the factors, BᵀB and A·Aᵀ (r×r): O(r)-equivariant — under (B·Q, Qᵀ·A)
/// they become Qᵀ(BᵀB)Q and Qᵀ(AAᵀ)Q — so their eigenvalues are O(r)-invariant. They are not
/// GL(r)-invariant (only the eigenvalues of their product BᵀB·AAᵀ, which are σᵢ²). The scale s is
/// not included: these describe the stored factors. O((d + k)·r²).

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/backend/eigen/primitives.hpp"

namespace lola {

template <class S>
struct factor_grams {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> b_gram;  ///< BᵀB
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> a_gram;  ///< A·Aᵀ
};

template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
factor_grams<scalar_of_t<E>> grams(const E& e) {
  using detail::as_compute, detail::gram_into;
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  factor_grams<S> out;
  gram_into(as_compute<S>(f.B()), out.b_gram);
  gram_into(as_compute<S>(f.A()).transpose(), out.a_gram);
  return out;
}

}  // namespace lola
