#pragma once
/// @file
/// lola::dense: the d×k matrix an expression represents, on request only.
///
/// One GEMM, s·B·A, from the expression's factors; O(d·k·r). For an expression times a vector or
/// thin matrix X (expr/product.hpp), dense(e * X) is s·B·(A·X): O((d + k)·r·n), right to left.

#include <type_traits>

#include "lola/backend/eigen/evaluate.hpp"

namespace lola {

template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, Eigen::Dynamic> dense(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  detail::dense_matrix<S> result(f.rows(), f.cols());
  if (f.rank() == 0) {
    result.setZero();
  } else {
    result.noalias() = f.scale() * detail::as_compute<S>(f.B()) * detail::as_compute<S>(f.A());
  }
  return result;
}

}  // namespace lola
