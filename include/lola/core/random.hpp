#pragma once
/// @file
/// Random elements of O(r) and GL(r), for property tests and for data augmentation.
///
/// Both are drawn in double and rounded once to Scalar, so the float and double draws of one seed
/// agree to float precision.

#include <cmath>
#include <random>
#include <string>

#include <Eigen/Core>
#include <Eigen/QR>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"

namespace lola {

namespace detail {

inline void require_group_size(index r, const char* function) {
  if (r < 0)
    throw error(error_code::invalid_argument,
                std::string(function) + ": the size r must be non-negative, got " +
                    std::to_string(r));
}

/// Haar-distributed Q with orthonormal columns (m×n, m ≥ n; O(n) when m = n): the Q factor of an
/// m×n standard Gaussian matrix, with each column's sign fixed by the sign of R's diagonal
/// (Mezzadri 2007). Without that fix the distribution of Q depends on the QR algorithm's sign
/// convention and is not Haar.
template <class Rng>
Eigen::MatrixXd haar_orthonormal(index m, index n, Rng& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Eigen::MatrixXd gaussian(m, n);
  for (index j = 0; j < n; ++j)
    for (index i = 0; i < m; ++i) gaussian(i, j) = normal(rng);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(gaussian);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(m, n);
  for (index j = 0; j < n; ++j)
    if (qr.matrixQR()(j, j) < 0) q.col(j) = -q.col(j);
  return q;
}

}  // namespace detail

/// A Haar-random orthogonal r×r matrix Q (QᵀQ = I, det Q = ±1 with equal probability).
/// rng is any uniform random bit generator, e.g. std::mt19937_64.
template <class Scalar = double, class Rng>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_orthogonal(index r, Rng& rng) {
  detail::require_group_size(r, "random_orthogonal");
  return detail::haar_orthonormal(r, r, rng).template cast<Scalar>();
}

/// A Haar-random m×n matrix with orthonormal columns (a point of the Stiefel manifold), m ≥ n:
/// the first n columns of a Haar-random element of O(m) in distribution, at O(m·n²) cost.
template <class Scalar = double, class Rng>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_stiefel(index m, index n, Rng& rng) {
  detail::require_group_size(n, "random_stiefel");
  if (m < n)
    throw error(error_code::invalid_argument,
                "random_stiefel: " + std::to_string(n) + " orthonormal columns need at least as "
                "many rows, got " + std::to_string(m));
  return detail::haar_orthonormal(m, n, rng).template cast<Scalar>();
}

/// A random G ∈ GL(r) with 2-norm condition number `cond`: G = Q₁·diag(σ)·Q₂ᵀ with Q₁, Q₂ Haar and
/// σᵢ = cond^(1/2 − i/(r−1)) geometrically spaced, so σ₁/σ_r = cond and |det G| = 1.
/// For r = 1 every non-zero scalar has condition number 1; G is then ±1 and cond must be 1.
/// Throws invalid_argument for r < 0, cond < 1, a non-finite cond, or r = 1 with cond ≠ 1.
template <class Scalar = double, class Rng>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_gl(index r, double cond, Rng& rng) {
  detail::require_group_size(r, "random_gl");
  if (!(cond >= 1.0) || !std::isfinite(cond))
    throw error(error_code::invalid_argument,
                "random_gl: the condition number must be finite and >= 1, got " +
                    std::to_string(cond));
  if (r == 1 && cond != 1.0)
    throw error(error_code::invalid_argument,
                "random_gl: a 1x1 matrix has condition number 1, cannot draw one with cond " +
                    std::to_string(cond));
  Eigen::VectorXd sigma(r);
  for (index i = 0; i < r; ++i)
    sigma(i) = r == 1 ? 1.0 : std::pow(cond, 0.5 - static_cast<double>(i) / (r - 1));
  const Eigen::MatrixXd q1 = detail::haar_orthonormal(r, r, rng);
  const Eigen::MatrixXd q2 = detail::haar_orthonormal(r, r, rng);
  return (q1 * sigma.asDiagonal() * q2.transpose()).template cast<Scalar>();
}

}  // namespace lola
