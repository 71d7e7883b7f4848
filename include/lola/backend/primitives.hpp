#pragma once
/// @file
/// The seam between the algorithms and the backends: the primitives through which linalg/, canon/,
/// features/, ops/ and nn/ reach factor-sized data (a d×r B, an r×k A, a view of either, or of
/// its transpose). Everything else an algorithm computes is r×r or shorter and lives in small host
/// Eigen matrices and vectors.
///
/// A backend is a storage tag (expr/expr_base.hpp), the types that hold its factors, and overloads
/// of the functions below for those types, in lola::detail or (for types outside lola) in the
/// types' own namespace, where argument-dependent lookup finds them. backend/eigen/primitives.hpp
/// is the host backend. A call an algorithm makes that a backend lacks is a compile error at the
/// call, so a backend whose views offer nothing else proves that no algorithm bypasses the seam
/// (tests/support/probe_backend.hpp).
///
/// Views (X, Y below; Out a writable one): rows(), cols(), transpose(), leftCols(n), rightCols(n),
/// topRows(n), bottomRows(n), middleCols(j, n), middleRows(i, n), and a nested Scalar. Owning
/// matrices: factor_matrix_t<Storage, S>, constructible empty, as (rows, cols), and from a view.
/// In the costs, m×n is the factor's shape with n the rank.
///
///   Products                                                      cost
///     gram_into<S>(X, G)             G = XᵀX (host n×n), exactly symmetric      m·n²
///     cross_gram_into<S>(X, Y, G)    G = XᵀY (host p×q)                         m·p·q
///     thin_product_into<S>(X, C, Out) Out = X·C for a host n×c matrix C          m·n·c
///     product_into<S>(X, Y, Out)     Out = X·Y (host p×q) for X p×m, Y m×q:     p·m·q
///                                    the GEMM of the nn layers (a host weight
///                                    moved into the storage by in_storage) and
///                                    of dense features
///     householder_qr<Storage, S>     X = Q·R: compute(X), R() (host p×n),       m·n²
///                                    apply_q_into(P, Out): Out = Q·[P; 0],
///                                    apply_q_transposed_into(P, Out): Out = (Q·[P; 0])ᵀ
///   Reductions (to host scalars and vectors)
///     max_abs(X), all_finite(X), max_column_squared_norm(X)                     m·n
///     frobenius_dot(X, Y) = Σ Xᵢⱼ·Yᵢⱼ, frobenius_norm(X)                        m·n
///     largest_magnitude_signs(X)     per column, the sign of its entry of largest magnitude
///                                    (the first of equal magnitudes)           m·n
///   Updates
///     scaled_by_power_of_two<S>(X, e) a new matrix of 2ᵉ·X, exact wherever the result is normal
///     assign_scaled(Out, c, X)       Out = c·X (converting X's scalar)          m·n
///                                    Out and X of one storage, or one of them a
///                                    host Eigen object: the transfer between a
///                                    backend and the host (a download into a
///                                    host table, an upload of host weights)
///     add_scaled(Out, c, X)          Out += c·X                                 m·n
///     scale_columns(Out, w)          column j of Out times w(j)                 m·n
///     set_zero(Out)                                                             m·n
///   Conversion
///     as_compute<S>(X)               X read in the compute scalar S (a lazy conversion on the host)
///     in_storage<Storage>(W)         a host matrix W where Storage's factors live: W itself on
///                                    the host, an uploaded copy elsewhere (defined below)

#include <type_traits>

#include <Eigen/Core>

#include "lola/expr/expr_base.hpp"

namespace lola {
namespace detail {

/// The host matrix w where the factors of Storage live: w itself for host_storage (no copy), else
/// an owning factor_matrix_t<Storage, S> that assign_scaled filled (one upload of rows·cols
/// values). The weights of a layer, a template adapter: host data an algorithm combines with
/// factors of another backend.
template <class Storage, class W>
decltype(auto) in_storage(const Eigen::MatrixBase<W>& w) {
  if constexpr (std::is_same_v<Storage, host_storage>) {
    return (w.derived());
  } else {
    factor_matrix_t<Storage, typename W::Scalar> out(w.rows(), w.cols());
    assign_scaled(out, typename W::Scalar(1), w.derived());  // found by argument-dependent lookup
    return out;
  }
}

/// Householder QR of a tall factor and the application of its Q, specialized per backend (see the
/// file comment).
template <class Storage, class S>
class householder_qr;

}  // namespace detail
}  // namespace lola
