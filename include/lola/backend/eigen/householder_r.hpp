#pragma once
/// @file
/// R of a Householder QR, X = Q·R with X m×n: the top p = min(m, n) rows of the packed factor's
/// upper triangle, p×n upper trapezoidal. Its diagonal carries the reflectors' signs (either sign);
/// callers that need a unique R fix the signs themselves (linalg/thin_qr.hpp).

#include <algorithm>

#include <Eigen/Core>
#include <Eigen/QR>

#include "lola/core/config.hpp"

namespace lola {
namespace detail {

template <class Matrix>
Eigen::Matrix<typename Matrix::Scalar, Eigen::Dynamic, Eigen::Dynamic> householder_r(
    const Eigen::HouseholderQR<Matrix>& qr) {
  const index p = std::min<index>(qr.rows(), qr.cols());
  return qr.matrixQR().topRows(p).template triangularView<Eigen::Upper>();
}

}  // namespace detail
}  // namespace lola
