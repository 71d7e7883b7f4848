#pragma once
/// @file
/// Storage scalars and compute scalars.
///
/// lola computes in float or double. Eigen::half and Eigen::bfloat16 are storage types only: a
/// factor stored in them is converted to float once, when an evaluation first reads it, and every
/// accumulation happens in the compute scalar.

#include <type_traits>

#include <Eigen/Core>

namespace lola {

/// The scalar lola computes in for a factor stored as Storage.
template <class Storage>
struct compute_scalar {
  static_assert(std::is_same_v<Storage, float> || std::is_same_v<Storage, double>,
                "lola: factors must be stored as float, double, Eigen::half or Eigen::bfloat16");
  using type = Storage;
};
template <>
struct compute_scalar<Eigen::half> {
  using type = float;
};
template <>
struct compute_scalar<Eigen::bfloat16> {
  using type = float;
};

template <class Storage>
using compute_scalar_t = typename compute_scalar<Storage>::type;

/// The compute scalar of two factors stored as S1 and S2: double if either is double.
template <class S1, class S2>
using common_compute_scalar_t =
    std::conditional_t<std::is_same_v<compute_scalar_t<S1>, double> ||
                           std::is_same_v<compute_scalar_t<S2>, double>,
                       double, float>;

}  // namespace lola
