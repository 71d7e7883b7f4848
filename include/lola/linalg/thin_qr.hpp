#pragma once
/// @file
/// Thin QR of a tall or wide matrix, X = Q·R with Q m×p orthonormal columns and R p×n upper
/// trapezoidal, p = min(m, n), and R's diagonal made non-negative. With that sign rule the
/// factorisation of a full-column-rank X is unique. Householder, O(m·n²); backward stable.

#include <Eigen/Core>
#include <Eigen/QR>

#include "lola/backend/eigen/householder_r.hpp"
#include "lola/core/config.hpp"

namespace lola {

template <class S>
struct thin_qr_result {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> Q;  ///< m×p, orthonormal columns
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> R;  ///< p×n, upper trapezoidal, Rᵢᵢ ≥ 0
};

/// X = Q·R (see the file comment).
template <class S, class X>
thin_qr_result<S> thin_qr(const Eigen::MatrixBase<X>& x) {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const index m = x.rows(), n = x.cols(), p = std::min(m, n);
  thin_qr_result<S> out;
  if (p == 0) {
    out.Q = matrix::Zero(m, 0);
    out.R = matrix::Zero(0, n);
    return out;
  }
  const Eigen::HouseholderQR<matrix> qr(x.template cast<S>());
  out.R = detail::householder_r(qr);
  out.Q = qr.householderQ() * matrix::Identity(m, p);
  for (index i = 0; i < p; ++i)
    if (out.R(i, i) < 0) {
      out.R.row(i) = -out.R.row(i);
      out.Q.col(i) = -out.Q.col(i);
    }
  return out;
}

}  // namespace lola
