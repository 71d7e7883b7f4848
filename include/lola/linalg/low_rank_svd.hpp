#pragma once
/// @file
/// lola::low_rank_svd: the thin SVD of ΔW = s·B·A computed from the factors.
///
///   B = Q_B·R_B,  Aᵀ = Q_A·R_A            (O(d·r²) and O(k·r²), linalg/column_space.hpp)
///   C = s·R_B·R_Aᵀ = P·Σ·Sᵀ               (SVD of the p_b×p_a core, O(r³): from the eigenvectors of
///                                          CᵀC when both factors took the Gram route, so κ(C) ≤ 16;
///                                          otherwise Eigen's BDCSVD)
///   U = Q_B·P (d×p),  V = Q_A·S (k×p),  p = min(d, k, r)
/// so ΔW = U·Σ·Vᵀ without ever forming the d×k matrix: O((d + k)·r² + r³) in all.
/// Each triangular factor is exact for a small relative perturbation of its factor (Householder,
/// or Cholesky of the Gram for factors with κ ≤ 4), and the core SVD is backward stable, so σᵢ
/// carries an absolute error of order ε·|s|·‖B‖·‖A‖ (a constant up to 16 times larger on the
/// Gram route).
///
/// The API follows Eigen's decompositions: compute(), singularValues(), matrixU(), matrixV(), rank()
/// with setThreshold(), info(). The default threshold for the numerical rank is max(d, k)·ε
/// (NumPy's matrix_rank convention): σᵢ counts when σᵢ > threshold·σ₁.

#include <algorithm>
#include <limits>
#include <string>

#include <Eigen/Core>
#include <Eigen/SVD>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/core/error.hpp"
#include "lola/linalg/column_space.hpp"

namespace lola {

/// Which parts low_rank_svd computes. compute_vt gives Vᵀ (p×k) laid out like A, for callers that
/// build factors from it (canonical forms): it costs the same GEMM as V and saves a transpose.
enum svd_options : unsigned {
  singular_values_only = 0,
  compute_u = 1,
  compute_v = 2,
  compute_uv = 3,
  compute_vt = 4
};

template <class S>
class low_rank_svd {
 public:
  using scalar = S;
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

  low_rank_svd() = default;
  template <class E>
  explicit low_rank_svd(const E& e, unsigned options = compute_uv) {
    compute(e, options);
  }

  /// Decomposes the matrix a host low-rank expression represents.
  template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
  low_rank_svd& compute(const E& e, unsigned options = compute_uv) {
    static_assert(std::is_same_v<scalar_of_t<E>, S>,
                  "lola::low_rank_svd<S> decomposes expressions of compute scalar S");
    decltype(auto) f = detail::eigen_evaluator::factors(e);
    return compute_factors(detail::as_compute<S>(f.B()), detail::as_compute<S>(f.A()), f.scale(),
                           options);
  }

  /// Decomposes s·B·A for dense B (d×r) and A (r×k).
  template <class BX, class AX>
  low_rank_svd& compute_factors(const Eigen::MatrixBase<BX>& B, const Eigen::MatrixBase<AX>& A,
                                S s = S(1), unsigned options = compute_uv) {
    detail::require_shapes(B.cols() == A.rows(), "low_rank_svd (B's columns must equal A's rows)",
                           "B", B.rows(), B.cols(), "A", A.rows(), A.cols());
    rows_ = B.rows();
    cols_ = A.cols();
    options_ = options;
    computed_ = false;
    const bool want_u = options & compute_u, want_v = options & (compute_v | compute_vt);
    detail::column_space<S> qb, qa;
    qb.compute(B);
    qa.compute(A.transpose());
    const matrix core = s * qb.R() * qa.R().transpose();  // p_b × p_a
    if (!core.allFinite()) {
      info_ = Eigen::NumericalIssue;
      return *this;
    }
    const index p = std::min(core.rows(), core.cols());
    if (p == 0) {
      singular_values_.resize(0);
      u_ = matrix::Zero(rows_, 0);
      v_ = matrix::Zero(cols_, 0);
      vt_ = matrix::Zero(0, cols_);
    } else {
      matrix core_u, core_v;  // the core's singular vectors: core = core_u·Σ·core_vᵀ
      if (!(qb.via_gram() && qa.via_gram() &&
            decompose_by_cross_product(core, want_u || want_v, core_u, core_v))) {
        const unsigned core_options = (want_u ? unsigned(Eigen::ComputeThinU) : 0u) |
                                      (want_v ? unsigned(Eigen::ComputeThinV) : 0u);
        const Eigen::BDCSVD<matrix> svd(core, core_options);
        singular_values_ = svd.singularValues();
        if (want_u) core_u = svd.matrixU();
        if (want_v) core_v = svd.matrixV();
      }
      if (want_u) u_ = qb.basis_times(B, core_u);
      if (options & compute_v) v_ = qa.basis_times(A.transpose(), core_v);
      if (options & compute_vt) vt_ = qa.transposed_basis_times(A.transpose(), core_v);
    }
    info_ = Eigen::Success;
    computed_ = true;
    return *this;
  }

  /// σ₁ ≥ σ₂ ≥ … ≥ σ_p ≥ 0, p = min(d, k, r).
  const vector& singularValues() const {
    require_computed("singularValues");
    return singular_values_;
  }
  /// d×p, orthonormal columns: the left singular vectors.
  const matrix& matrixU() const {
    require_computed("matrixU");
    if (!(options_ & compute_u))
      throw error(error_code::invalid_argument, "low_rank_svd::matrixU: U was not requested");
    return u_;
  }
  /// k×p, orthonormal columns: the right singular vectors (ΔW = U·Σ·Vᵀ).
  const matrix& matrixV() const {
    require_computed("matrixV");
    if (!(options_ & compute_v))
      throw error(error_code::invalid_argument, "low_rank_svd::matrixV: V was not requested");
    return v_;
  }

  /// p×k: Vᵀ, laid out like A (requested with compute_vt).
  const matrix& matrixVt() const {
    require_computed("matrixVt");
    if (!(options_ & compute_vt))
      throw error(error_code::invalid_argument, "low_rank_svd::matrixVt: Vᵀ was not requested");
    return vt_;
  }

  /// The number of σᵢ > threshold()·σ₁ (0 for a zero matrix).
  index rank() const {
    require_computed("rank");
    if (singular_values_.size() == 0 || !(singular_values_(0) > 0)) return 0;
    const S cut = threshold() * singular_values_(0);
    return static_cast<index>((singular_values_.array() > cut).count());
  }
  low_rank_svd& setThreshold(S threshold) {
    if (!(threshold >= 0))
      throw error(error_code::invalid_argument, "low_rank_svd::setThreshold: must be >= 0");
    threshold_ = threshold;
    return *this;
  }
  /// The relative threshold of rank(): the one set, or max(d, k)·ε.
  S threshold() const {
    return threshold_ >= 0 ? threshold_
                           : S(std::max<index>({rows_, cols_, 1})) * std::numeric_limits<S>::epsilon();
  }

  Eigen::ComputationInfo info() const { return info_; }
  index rows() const { return rows_; }
  index cols() const { return cols_; }

 private:
  /// The SVD C = P·Σ·Sᵀ of a square core from the eigen-decomposition CᵀC = S·Σ²·Sᵀ, with
  /// P = C·S·Σ⁻¹; false (nothing written) when C is singular. Taken when both factors went the
  /// Gram route, so κ(C) ≤ κ(R_B)·κ(R_A) ≤ 16: the eigenvalues carry an absolute error of order
  /// ε·σ₁², hence σᵢ one of order ε·σ₁²/σᵢ ≤ 16·ε·σ₁, the accuracy the Gram route already has.
  /// A 16×16 core costs 6–9 µs this way against 26–35 µs for BDCSVD.
  bool decompose_by_cross_product(const matrix& core, bool vectors, matrix& core_u,
                                  matrix& core_v) {
    const matrix cross = core.transpose() * core;
    const Eigen::SelfAdjointEigenSolver<matrix> eigen(
        cross, vectors ? Eigen::ComputeEigenvectors : Eigen::EigenvaluesOnly);
    if (eigen.info() != Eigen::Success || !(eigen.eigenvalues()(0) > 0)) return false;
    singular_values_ = eigen.eigenvalues().reverse().cwiseSqrt();
    if (vectors) {
      core_v = eigen.eigenvectors().rowwise().reverse();
      core_u = core * core_v * singular_values_.cwiseInverse().asDiagonal();
    }
    return true;
  }

  void require_computed(const char* what) const {
    if (!computed_)
      throw error(error_code::invalid_argument,
                  std::string("low_rank_svd::") + what +
                      (info_ == Eigen::NumericalIssue ? ": the factors were not finite"
                                                      : ": compute() has not been called"));
  }

  vector singular_values_;
  matrix u_, v_, vt_;
  index rows_ = 0, cols_ = 0;
  unsigned options_ = 0;
  S threshold_ = S(-1);
  Eigen::ComputationInfo info_ = Eigen::InvalidInput;
  bool computed_ = false;
};

/// Class template argument deduction from an expression: low_rank_svd svd(e);
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
low_rank_svd(const E&, unsigned = compute_uv) -> low_rank_svd<scalar_of_t<E>>;

}  // namespace lola
