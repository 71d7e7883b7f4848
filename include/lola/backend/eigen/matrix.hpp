#pragma once
/// @file
/// The host backend's matrices: dense_matrix<S>, the owning column-major Eigen matrix every host
/// factor result is (factor_matrix_t<host_storage, S>), and the conversion of a stored factor to
/// the compute scalar.

#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "lola/expr/expr_base.hpp"

namespace lola {
namespace detail {

/// (The same type as factor_matrix_t<host_storage, S>, spelled so that S is deducible.)
template <class S>
using dense_matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

/// x read in the compute scalar S: a lazy conversion, an identity when x already is S.
template <class S, class X, class = std::enable_if_t<is_eigen_dense_v<X>>>
decltype(auto) as_compute(const X& x) {
  return x.template cast<S>();
}

/// x as an owning column-major matrix of S: moved when it already is one and x is an rvalue.
template <class S, class X>
dense_matrix<S> to_plain(X&& x) {
  if constexpr (std::is_same_v<std::remove_cv_t<std::remove_reference_t<X>>, dense_matrix<S>>)
    return std::forward<X>(x);
  else
    return x.template cast<S>();
}

}  // namespace detail
}  // namespace lola
