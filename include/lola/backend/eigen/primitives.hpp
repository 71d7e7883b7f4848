#pragma once
/// @file
/// The host backend: the primitives of backend/primitives.hpp for Eigen objects in host memory
/// (the factors, their blocks, transposes and conversions). The products are the kernels of
/// gram.hpp and thin_product.hpp, the QR that of householder_qr.hpp; the rest are single passes
/// over the factor, vectorised by Eigen.

#include <cmath>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "lola/backend/eigen/gram.hpp"
#include "lola/backend/eigen/householder_qr.hpp"
#include "lola/backend/eigen/matrix.hpp"
#include "lola/backend/eigen/thin_product.hpp"
#include "lola/backend/primitives.hpp"
#include "lola/core/config.hpp"
#include "lola/core/scalar.hpp"

namespace lola {
namespace detail {

template <class X>
using if_eigen_t = std::enable_if_t<is_eigen_dense_v<X>>;

/// max |xᵢⱼ| in X's compute scalar, 0 for an empty X (NaN entries are skipped by the comparison;
/// all_finite tells them apart).
template <class X, class = if_eigen_t<X>>
auto max_abs(const X& x) {
  using S = compute_scalar_t<typename X::Scalar>;
  return x.size() == 0 ? S(0) : S(as_compute<S>(x).cwiseAbs().maxCoeff());
}

template <class X, class = if_eigen_t<X>>
bool all_finite(const X& x) {
  return x.allFinite();
}

/// max_j ‖X(:, j)‖², 0 for an empty X.
template <class X, class = if_eigen_t<X>>
auto max_column_squared_norm(const X& x) {
  using S = compute_scalar_t<typename X::Scalar>;
  return x.size() == 0 ? S(0) : S(as_compute<S>(x).colwise().squaredNorm().maxCoeff());
}

/// Σ Xᵢⱼ·Yᵢⱼ for X and Y of one shape (tr(XᵀY)).
template <class X, class Y, class = if_eigen_t<X>, class = if_eigen_t<Y>>
auto frobenius_dot(const X& x, const Y& y) {
  using S = common_compute_scalar_t<typename X::Scalar, typename Y::Scalar>;
  return S(as_compute<S>(x).cwiseProduct(as_compute<S>(y)).sum());
}

/// ‖X‖_F. The plain sum of squares, unless it overflowed or may have lost entries to underflow
/// (a result below √min, zero included); then again with Eigen's stableNorm, which rescales as it sums, so the
/// norm is inf only when it exceeds the range itself.
template <class X, class = if_eigen_t<X>>
auto frobenius_norm(const X& x) {
  using S = compute_scalar_t<typename X::Scalar>;
  const S plain = as_compute<S>(x).norm();
  if (plain <= std::numeric_limits<S>::max() && plain >= std::sqrt(std::numeric_limits<S>::min()))
    return plain;
  return S(as_compute<S>(x).stableNorm());
}

/// The sign rule of canonical forms: per column, +1 or −1, the sign of its entry of largest
/// magnitude, the first of equal magnitudes (+1 for an empty column). Two vectorised reductions per
/// column decide it (the largest magnitude is max(x) or −min(x), and all its entries share its sign
/// unless both occur); only that tie scans.
template <class X, class = if_eigen_t<X>>
auto largest_magnitude_signs(const X& x) {
  using S = compute_scalar_t<typename X::Scalar>;
  Eigen::Matrix<S, Eigen::Dynamic, 1> sign = Eigen::Matrix<S, Eigen::Dynamic, 1>::Ones(x.cols());
  if (x.rows() == 0) return sign;
  for (index j = 0; j < x.cols(); ++j) {
    const S high = x.col(j).maxCoeff(), low = x.col(j).minCoeff();
    if (-low > high) {
      sign(j) = S(-1);
    } else if (-low == high) {
      for (index i = 0; i < x.rows(); ++i)
        if (std::abs(S(x(i, j))) == high) {
          if (x(i, j) < 0) sign(j) = S(-1);
          break;
        }
    }
  }
  return sign;
}

/// 2ᵉ·X as a new matrix of S, entry by entry with ldexp: exact unless an entry becomes subnormal
/// (2ᵉ itself may not be representable, so it is never formed).
template <class S, class X, class = if_eigen_t<X>>
dense_matrix<S> scaled_by_power_of_two(const X& x, int e) {
  return as_compute<S>(x).unaryExpr([e](S v) { return static_cast<S>(std::ldexp(v, e)); });
}

/// out = X·Y in S: Eigen's GEMM, cache-blocked and vectorised, over X and Y read in S (a stored
/// F16/BF16 factor converted as the GEMM packs it). out is a host matrix, block or map.
template <class S, class X, class Y, class Out, class = if_eigen_t<X>, class = if_eigen_t<Y>>
void product_into(const X& x, const Y& y, Out&& out) {
  out.noalias() = as_compute<S>(x) * as_compute<S>(y);
}

/// out = c·X, X converted to out's scalar.
template <class Out, class C, class X, class = if_eigen_t<Out>, class = if_eigen_t<X>>
void assign_scaled(Out&& out, C c, const X& x) {
  using S = typename std::remove_reference_t<Out>::Scalar;
  out = S(c) * as_compute<S>(x);
}

/// out += c·X, X converted to out's scalar.
template <class Out, class C, class X, class = if_eigen_t<Out>, class = if_eigen_t<X>>
void add_scaled(Out&& out, C c, const X& x) {
  using S = typename std::remove_reference_t<Out>::Scalar;
  out += S(c) * as_compute<S>(x);
}

/// Column j of out times w(j); columns with w(j) = 1 are not touched (the sign rule flips few).
template <class Out, class W, class = if_eigen_t<Out>>
void scale_columns(Out&& out, const W& w) {
  for (index j = 0; j < out.cols(); ++j)
    if (w(j) != 1) out.col(j) *= w(j);
}

template <class Out, class = if_eigen_t<Out>>
void set_zero(Out&& out) {
  out.setZero();
}

}  // namespace detail
}  // namespace lola
