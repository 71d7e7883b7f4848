#pragma once
/// @file
/// The column space of a tall factor X (m×n): a triangular R with XᵀX = RᵀR, and products Q·P with
/// the orthonormal basis Q = X·R⁻¹ (m×p), without forming Q unless asked. Used by the factor-space
/// SVD for B and for Aᵀ.
///
/// Two routes, chosen per factor by its conditioning κ(X) = √(λ_max/λ_min) of the Gram XᵀX (an r×r
/// eigenvalue problem, O(n³)):
///   κ ≤ 4    Cholesky of the Gram (CholeskyQR): one GEMM, O(m·n²) at GEMM speed. The Gram carries
///            an error γ_m·‖X‖², which reaches R amplified by at most κ², so R is exact for a
///            perturbation of X of relative size ≤ 16·γ_m; Q·P = X·(R⁻¹·P) is one more GEMM, with
///            columns orthonormal to O(κ²·ε).
///   otherwise (including rank deficiency and m < n) Householder QR: backward stable for any κ,
///            but BLAS-2 speed when n is below Eigen's block size; Q·P applies the reflectors.
/// Well-conditioned factors are the common case (random initialisations, trained A factors), so
/// the fast route serves most modules and the stable one takes over where squaring κ would hurt.

#include <algorithm>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include "lola/core/config.hpp"

namespace lola {
namespace detail {

template <class S>
class column_space {
 public:
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

  /// The largest κ(X) for which the Gram route is taken.
  static constexpr S gram_condition_limit = S(4);

  template <class X>
  void compute(const Eigen::MatrixBase<X>& x) {
    m_ = x.rows();
    const index n = x.cols();
    gram_ = false;
    if (m_ >= n && n > 0) {
      const matrix gram = x.transpose() * x;
      const Eigen::SelfAdjointEigenSolver<matrix> eigen(gram, Eigen::EigenvaluesOnly);
      const S lambda_min = eigen.eigenvalues()(0), lambda_max = eigen.eigenvalues()(n - 1);
      if (lambda_min > 0 &&
          lambda_max <= gram_condition_limit * gram_condition_limit * lambda_min) {
        const Eigen::LLT<matrix> llt(gram);
        if (llt.info() == Eigen::Success) {
          r_ = llt.matrixU();
          gram_ = true;
          return;
        }
      }
    }
    qr_.compute(x);
    const index p = std::min(m_, n);
    r_ = qr_.matrixQR().topRows(p).template triangularView<Eigen::Upper>();
  }

  /// R, p×n upper triangular (trapezoidal when m < n), p = min(m, n).
  const matrix& R() const { return r_; }
  bool via_gram() const { return gram_; }

  /// Q·P for P with p rows; x must be the matrix passed to compute().
  template <class X, class P>
  matrix basis_times(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& p) const {
    if (gram_) return x * r_.template triangularView<Eigen::Upper>().solve(p);
    matrix padded = matrix::Zero(m_, p.cols());
    padded.topRows(p.rows()) = p;
    padded.applyOnTheLeft(qr_.householderQ());
    return padded;
  }

 private:
  matrix r_;
  Eigen::HouseholderQR<matrix> qr_;
  index m_ = 0;
  bool gram_ = false;
};

}  // namespace detail
}  // namespace lola
