#pragma once
/// @file
/// The column space of a tall factor X (m×n): a triangular R with XᵀX = RᵀR, and products Q·P with
/// the orthonormal basis Q = X·R⁻¹ (m×p), without forming Q unless asked. Used by the factor-space
/// SVD for B and for Aᵀ. X is a factor of any backend: it is read only through the primitives of
/// backend/primitives.hpp (Gram, thin product, Householder QR, max |x|, 2ᵉ scaling); R and the
/// conditioning tests are r×r host work.
///
/// Two routes, chosen per factor by its conditioning κ(X) = √(λ_max/λ_min) of the Gram XᵀX
/// (backend/eigen/gram.hpp). Gershgorin's discs bound the spectrum in O(n²):
///   λ_min ≥ minᵢ (Gᵢᵢ − Σ_{j≠i} |Gᵢⱼ|),  λ_max ≤ maxᵢ (Gᵢᵢ + Σ_{j≠i} |Gᵢⱼ|),
/// which settles nearly orthogonal columns of similar norms (random initialisations: a 4096×16
/// Gaussian factor gives a bound near 1.5). Where the discs are too wide (they widen with n: a
/// 1280×32 Gaussian factor gives 18), Sylvester's law of inertia settles most of the rest with one
/// Cholesky: λ_min ≥ τ iff G − τ·I is positive semi-definite, so with τ = (Gershgorin's bound on
/// λ_max)/κ_max² a successful factorisation of G − τ·I proves κ ≤ κ_max (n³/6 flops, 2 µs at
/// n = 32). Only then does the r×r eigenvalue problem decide (Jacobi, O(n³)). The rule is
/// linalg/gram_condition.hpp, which the batched r×r kernel applies too.
///   κ ≤ 4    Cholesky of the Gram (CholeskyQR): one GEMM, O(m·n²) at GEMM speed. The Gram carries
///            an error γ_m·‖X‖², which reaches R amplified by at most κ², so R is exact for a
///            perturbation of X of relative size ≤ 16·γ_m; Q·P = X·(R⁻¹·P) is one more GEMM, with
///            columns orthonormal to O(κ²·ε).
///   otherwise (including rank deficiency and m < n) Householder QR: backward stable for any κ,
///            but BLAS-2 speed when n is below Eigen's block size; Q·P applies the reflectors.
/// Well-conditioned factors are the common case (random initialisations, trained A factors), so
/// the fast route serves most modules and the stable one takes over where squaring κ would hurt.
///
/// Range: both routes square entries (the Gram; the Householder vectors' norms), so a factor whose
/// largest squared column norm g = max diag(XᵀX) leaves [m·min/ε, max/(4n)] would overflow to inf
/// or lose its columns to underflow (float: column norms beyond ~1e19/√n or below ~3e-16·√m). The
/// Gram is computed anyway, so the test costs nothing; only outside that range is X rescaled by an
/// exact power of two, X' = 2⁻ᵉ·X with max|X'| ∈ [½, 1), and decomposed instead: R() is then the
/// factor of X' (R_X = 2ᵉ·R()), exponent() says e, and Q is the same. Non-finite or zero factors
/// are left as they are (the caller sees the non-finite R, or the zero).

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/config.hpp"
#include "lola/linalg/gram_condition.hpp"
#include "lola/linalg/thin_qr.hpp"

namespace lola {
namespace detail {

template <class S, class Storage = host_storage>
class column_space {
 public:
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using factor = factor_matrix_t<Storage, S>;

  /// The largest κ(X) for which the Gram route is taken.
  static constexpr S gram_condition_limit = gram_route_condition_limit<S>;

  /// gram: XᵀX when the caller has it (gram_into of this x), so that it is not computed again.
  template <class X>
  void compute(const X& x, const matrix* gram = nullptr) {
    m_ = x.rows();
    exponent_ = 0;
    scaled_ = factor();
    const index n = x.cols();
    if (m_ == 0 || n == 0) {
      factor_by_route(x, false);
      return;
    }
    if (m_ >= n) {
      if (gram)
        r_ = *gram;
      else
        gram_into(x, r_);
      if (in_range(r_.diagonal().maxCoeff(), n) || !rescale(x)) {
        factor_by_route(x, true);
        return;
      }
    } else if (in_range(max_column_squared_norm(x), n) || !rescale(x)) {
      factor_by_route(x, false);
      return;
    }
    if (m_ >= n) gram_into(scaled_, r_);
    factor_by_route(scaled_, m_ >= n);
  }

  /// R, p×n upper triangular (trapezoidal when m < n), p = min(m, n), of 2^-exponent()·X.
  const matrix& R() const { return r_; }
  /// e with X = 2ᵉ·X' for the X' that R() factors; 0 unless X was out of range.
  int exponent() const { return exponent_; }
  bool via_gram() const { return gram_; }

  /// out = Q·P for P with p rows (out: m×P.cols(), any writable block); x must be the matrix
  /// passed to compute(). Gram route: one product, x·(R⁻¹·P) (backend/eigen/thin_product.hpp).
  template <class X, class P, class Out>
  void basis_times_into(const X& x, const Eigen::MatrixBase<P>& p, Out&& out) const {
    // No columns (a ΔW of numerical rank 0 keeps none): nothing to write, and Eigen's triangular
    // solve and reflector loop would offset into the empty operand's null buffer.
    if (p.cols() == 0) return;
    if (gram_) {
      const matrix coefficients = r_.template triangularView<Eigen::Upper>().solve(p);
      if (exponent_ != 0)
        thin_product_into<S>(scaled_, coefficients, out);
      else
        thin_product_into<S>(x, coefficients, out);
      return;
    }
    qr_.apply_q_into(p, out);
  }

  /// out = (Q·P)ᵀ = Pᵀ·Qᵀ (P.cols()×m), written in that layout, with no transpose pass: on the
  /// Gram route outᵀ = x·(R⁻¹·P), one product reading x as stored (A's layout when x = Aᵀ).
  template <class X, class P, class Out>
  void transposed_basis_times_into(const X& x, const Eigen::MatrixBase<P>& p, Out&& out) const {
    if (p.cols() == 0) return;
    if (gram_) {
      const matrix coefficients = r_.template triangularView<Eigen::Upper>().solve(p);
      if (exponent_ != 0)
        thin_product_into<S>(scaled_, coefficients, out.transpose());
      else
        thin_product_into<S>(x, coefficients, out.transpose());
      return;
    }
    qr_.apply_q_transposed_into(p, out);
  }

 private:
  bool in_range(S g, index n) const { return squared_norms_in_range<S>(g, m_, n); }

  /// scaled_ = 2⁻ᵉ·x with max|scaled_| ∈ [½, 1); false (nothing kept) for a zero or non-finite x.
  template <class X>
  bool rescale(const X& x) {
    const S largest = max_abs(x);
    if (!(largest > 0) || !(largest <= std::numeric_limits<S>::max()) || !all_finite(x)) return false;
    std::frexp(largest, &exponent_);
    scaled_ = scaled_by_power_of_two<S>(x, -exponent_);
    return true;
  }

  /// R of x by the route its Gram (in r_ when have_gram) allows.
  template <class X>
  void factor_by_route(const X& x, bool have_gram) {
    gram_ = false;
    if (have_gram) {
      if (well_conditioned(r_)) {
        const Eigen::LLT<matrix> llt(r_);
        if (llt.info() == Eigen::Success) {
          r_ = llt.matrixU();
          gram_ = true;
          return;
        }
      }
    }
    qr_.compute(x);
    r_ = qr_.R();
  }

  /// κ(X)² = λ_max/λ_min of the Gram g ≤ gram_condition_limit² (linalg/gram_condition.hpp).
  static bool well_conditioned(const matrix& g) {
    S work_buffer[gram_condition_workspace_size(32)];
    std::vector<S> work_heap;
    S* work = work_buffer;
    const int n = static_cast<int>(g.rows());
    if (n > 32) {
      work_heap.resize(static_cast<std::size_t>(gram_condition_workspace_size(n)));
      work = work_heap.data();
    }
    return gram_condition_within(g.data(), n, gram_condition_limit * gram_condition_limit, work);
  }

  matrix r_;
  householder_qr<Storage, S> qr_;
  factor scaled_;  ///< 2⁻ᵉ·X when X was out of range, else empty
  index m_ = 0;
  int exponent_ = 0;
  bool gram_ = false;
};

}  // namespace detail
}  // namespace lola
