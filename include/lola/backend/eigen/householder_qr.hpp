#pragma once
/// @file
/// The host backend's Householder QR of a factor X (m×n), X = Q·R with p = min(m, n): R is the top
/// p rows of the packed factor's upper triangle (p×n upper trapezoidal, its diagonal carrying the
/// reflectors' signs; callers that need a unique R fix the signs themselves, linalg/thin_qr.hpp),
/// and Q is applied as reflectors, never formed unless asked (Q = apply_q_into(I)). O(m·n²) for
/// the factorisation, O(m·n·c) to apply Q to c columns; backward stable for any conditioning.

#include <algorithm>

#include <Eigen/Core>
#include <Eigen/QR>

#include "lola/backend/eigen/matrix.hpp"
#include "lola/backend/primitives.hpp"
#include "lola/core/config.hpp"

namespace lola {
namespace detail {

template <class S>
class householder_qr<host_storage, S> {
 public:
  template <class X>
  void compute(const Eigen::MatrixBase<X>& x) {
    qr_.compute(x);
  }

  /// p×n upper trapezoidal.
  dense_matrix<S> R() const {
    const index p = std::min<index>(qr_.rows(), qr_.cols());
    return qr_.matrixQR().topRows(p).template triangularView<Eigen::Upper>();
  }

  /// out = Q·[P; 0] (m×P.cols()) for P with at most p rows.
  template <class P, class Out>
  void apply_q_into(const Eigen::MatrixBase<P>& p, Out&& out) const {
    dense_matrix<S> padded = dense_matrix<S>::Zero(qr_.rows(), p.cols());
    padded.topRows(p.rows()) = p;
    // Eigen's reflector loop forms blocks of the target even when it has no columns (offsets
    // into a null buffer: undefined behaviour), so an empty product is left as the empty matrix.
    if (padded.size() != 0) padded.applyOnTheLeft(qr_.householderQ());
    out = padded;
  }

  /// out = (Q·[P; 0])ᵀ (P.cols()×m), written in out's layout.
  template <class P, class Out>
  void apply_q_transposed_into(const Eigen::MatrixBase<P>& p, Out&& out) const {
    dense_matrix<S> padded = dense_matrix<S>::Zero(p.cols(), qr_.rows());
    padded.leftCols(p.rows()) = p.transpose();
    if (padded.size() != 0) padded.applyOnTheRight(qr_.householderQ().transpose());
    out = padded;
  }

 private:
  Eigen::HouseholderQR<dense_matrix<S>> qr_;
};

}  // namespace detail
}  // namespace lola
