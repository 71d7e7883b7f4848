#pragma once
/// @file
/// Row and column sums of ΔW without forming it:
///   row_sums(e)    = ΔW·1  = s·B·(A·1)     (length d)   O((d + k)·r)
///   column_sums(e) = 1ᵀ·ΔW = s·(1ᵀ·B)·A    (length k)   O((d + k)·r)
/// These are what the GL-net gate of the LoL paper thresholds (U(Vᵀ1), V(Uᵀ1)).

#include "lola/backend/eigen/evaluate.hpp"

namespace lola {

template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> row_sums(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  const Eigen::Matrix<S, Eigen::Dynamic, 1> a_ones = detail::as_compute<S>(f.A()).rowwise().sum();
  return f.scale() * (detail::as_compute<S>(f.B()) * a_ones);
}

template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> column_sums(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  const Eigen::Matrix<S, Eigen::Dynamic, 1> ones_b =
      detail::as_compute<S>(f.B()).colwise().sum().transpose();
  return f.scale() * (detail::as_compute<S>(f.A()).transpose() * ones_b);
}

}  // namespace lola
