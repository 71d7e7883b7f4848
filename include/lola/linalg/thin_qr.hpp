#pragma once
/// @file
/// Thin QR of a tall or wide matrix, X = Q·R with Q m×p orthonormal columns and R p×n upper
/// trapezoidal, p = min(m, n), and R's diagonal made non-negative. With that sign rule the
/// factorisation of a full-column-rank X is unique. Householder (backend/primitives.hpp), O(m·n²);
/// backward stable. X is a factor of any backend; Q is that backend's matrix, R a host one.
/// Range: X is decomposed as 2⁻ᵉ·X where its squared column norms would overflow or underflow, so
/// Q is finite and R is exact to rounding whenever R itself is representable.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/config.hpp"

namespace lola {
namespace detail {

/// Whether a largest squared column norm g of an m×n factor keeps Householder QR and Gram-based
/// routes clear of overflow and underflow: g ≥ m·min/ε, so the underflowed products (each off by
/// < min, m of them) stay below ε·g; and g ≤ max/(4n), so sums of n squared norms or Gram entries
/// stay finite.
template <class S>
bool squared_norms_in_range(S g, index m, index n) {
  const S low = S(m) * std::numeric_limits<S>::min() / std::numeric_limits<S>::epsilon();
  const S high = std::numeric_limits<S>::max() / (S(4) * S(std::max<index>(n, 1)));
  return g >= low && g <= high;
}

/// Householder QR of X, or of X' = 2⁻ᵉ·X with max|X'| ∈ [½, 1) when X's squared column norms would
/// leave the range above (a power of two changes no digit, Q is the same and R_X = 2ᵉ·R'); returns
/// e. A zero or non-finite X is factorised as it is (e = 0). One extra pass over X to decide.
template <class S, class Storage, class X>
int compute_in_range(householder_qr<Storage, S>& qr, const X& x) {
  const index m = x.rows(), n = x.cols();
  if (m == 0 || n == 0 || squared_norms_in_range<S>(max_column_squared_norm(x), m, n)) {
    qr.compute(x);
    return 0;
  }
  const S largest = max_abs(x);
  if (!(largest > 0) || !(largest <= std::numeric_limits<S>::max()) || !all_finite(x)) {
    qr.compute(x);
    return 0;
  }
  int e = 0;
  std::frexp(largest, &e);
  qr.compute(scaled_by_power_of_two<S>(x, -e));
  return e;
}

}  // namespace detail

template <class S, class Storage = host_storage>
struct thin_qr_result {
  factor_matrix_t<Storage, S> Q;                       ///< m×p, orthonormal columns
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> R;  ///< p×n, upper trapezoidal, Rᵢᵢ ≥ 0
};

/// X = Q·R (see the file comment).
template <class S, class X, class = std::enable_if_t<is_factor_v<X>>>
thin_qr_result<S, storage_of_t<X>> thin_qr(const X& x) {
  using detail::as_compute, detail::scale_columns, detail::set_zero;
  using storage = storage_of_t<X>;
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const index m = x.rows(), n = x.cols(), p = std::min(m, n);
  thin_qr_result<S, storage> out;
  out.Q = factor_matrix_t<storage, S>(m, p);
  if (p == 0) {
    set_zero(out.Q);
    out.R = matrix::Zero(0, n);
    return out;
  }
  detail::householder_qr<storage, S> qr;
  const int e = detail::compute_in_range(qr, as_compute<S>(x));
  out.R = qr.R();
  if (e != 0) out.R = out.R.unaryExpr([e](S v) { return static_cast<S>(std::ldexp(v, e)); });
  qr.apply_q_into(matrix::Identity(p, p), out.Q);
  Eigen::Matrix<S, Eigen::Dynamic, 1> sign(p);
  for (index i = 0; i < p; ++i) sign(i) = out.R(i, i) < 0 ? S(-1) : S(1);
  out.R = sign.asDiagonal() * out.R;
  scale_columns(out.Q, sign);
  return out;
}

}  // namespace lola
