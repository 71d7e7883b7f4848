#pragma once
/// @file
/// lola::low_rank_svd: the thin SVD of ΔW = s·B·A computed from the factors.
///
///   B = Q_B·R_B,  Aᵀ = Q_A·R_A            (O(d·r²) and O(k·r²), linalg/column_space.hpp)
///   C = s·R_B·R_Aᵀ = P·Σ·Sᵀ               (SVD of the p_b×p_a core by Eigen's BDCSVD, O(r³))
///   U = Q_B·P (d×p),  V = Q_A·S (k×p),  p = min(d, k, r)
/// so ΔW = U·Σ·Vᵀ without ever forming the d×k matrix: O((d + k)·r² + r³) in all. When both
/// factors are well conditioned (κ ≤ 4, linalg/gram_condition.hpp) and their Grams in range, the
/// r×r work is instead the Gram kernel svd_from_grams (linalg/spectrum_from_grams.hpp: Cholesky of
/// G_A = L·Lᵀ, the eigen-decomposition of M = Lᵀ·G_B·L, U = B·X_B and V = Aᵀ·X_A), the very
/// kernel whole adapters run batched by rank, so a module's results do not depend on whether it
/// was computed alone or in a batch.
/// Each triangular factor is exact for a small relative perturbation of its factor (Householder,
/// or Cholesky of the Gram for factors with κ ≤ 4), and the core SVD is backward stable, so σᵢ
/// carries an absolute error of order ε·|s|·‖B‖·‖A‖ (on the Gram route, one of order
/// 16·r·ε·s²·‖B‖²·‖A‖²/σᵢ, κ ≤ 4 bounding σ₁/σᵢ by 16).
///
/// Range: nothing squares a value that can leave the compute type's range. The Gram route needs
/// Grams in range and scales them by exact powers of four (spectrum_from_grams.hpp). Otherwise the
/// factors are rescaled by exact powers of two where their Grams would overflow or underflow
/// (column_space.hpp: R_B = 2^e_B·R'_B, R_A = 2^e_A·R'_A); the core R'_B·R'_Aᵀ is scaled by 2^-e_C
/// so that its largest entry is in [½, 1) (O(r²), always), decomposed without s, and
///   σᵢ(s·B·A) = |s|·2^(e_B + e_A + e_C)·σᵢ(core),   U, V unchanged (U negated when s < 0),
/// with s's mantissa and exponent applied separately, so σᵢ is inf only when it exceeds the
/// compute type's range itself. float factors with entries up to ~1e38 or down to ~1e-38 give
/// σ to the accuracy above whenever σ is representable.
///
/// The API follows Eigen's decompositions: compute(), singularValues(), matrixU(), matrixV(), rank()
/// with setThreshold(), info(). The default threshold for the numerical rank is max(d, k)·ε
/// (NumPy's matrix_rank convention): σᵢ counts when σᵢ > threshold·σ₁.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include "lola/backend/eigen/batched_spectra.hpp"
#include "lola/backend/eigen/evaluate.hpp"
#include "lola/core/error.hpp"
#include "lola/core/shape.hpp"
#include "lola/linalg/column_space.hpp"
#include "lola/linalg/spectrum_from_grams.hpp"
#include "lola/linalg/thin_qr.hpp"

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

namespace detail {

/// The default relative threshold of the numerical rank of a d×k matrix: max(d, k)·ε.
template <class S>
S default_rank_threshold(index d, index k) {
  return S(std::max<index>({d, k, 1})) * std::numeric_limits<S>::epsilon();
}

/// The one report of non-finite input to a decomposition of ΔW (low_rank_svd, singular_values,
/// canonicalize, project_base_weight, featurize): numerical, naming the function and the d×k module.
inline void require_finite_factors(bool finite, const char* function, index d, index k) {
  if (!finite)
    throw error(error_code::numerical,
                std::string(function) + ": the factors of the " + shape_string(d, k) + " module are not finite");
}

/// The report of finite factors whose singular values exceed the compute type's range (σ = +inf,
/// see the file comment): numerical, naming the function and the d×k module.
template <class V>
void require_finite_singular_values(const V& sigma, const char* function, index d, index k) {
  if (!sigma.allFinite())
    throw error(error_code::numerical, std::string(function) + ": the singular values of the " +
                                           shape_string(d, k) + " module exceed the range of the compute type");
}

/// The number of σᵢ > threshold·σ₁ for σ descending (0 for a zero or empty σ).
template <class V>
index numerical_rank(const V& sigma, typename V::Scalar threshold) {
  if (sigma.size() == 0 || !(sigma(0) > 0)) return 0;
  return static_cast<index>((sigma.array() > threshold * sigma(0)).count());
}

/// Whether a d×k module of rank r can take the Gram route, whatever its values: r > 0, d ≥ r, k ≥ r.
inline bool gram_route_shape(index d, index k, index r) noexcept { return r > 0 && d >= r && k >= r; }

/// Whether Grams whose largest diagonal entries are largest_b (BᵀB, B d×r) and largest_a (A·Aᵀ, A
/// r×k) are in the range the Gram route needs (squared_norms_in_range, linalg/thin_qr.hpp).
template <class S>
bool grams_in_range(S largest_b, S largest_a, index d, index k, index r) {
  return squared_norms_in_range<S>(largest_b, d, r) && squared_norms_in_range<S>(largest_a, k, r);
}

/// The factor-space SVD in its pieces, s·B·A = U·Σ·Vᵀ with U and V never formed unless asked:
///   Gram route (both factors κ ≤ 4, d ≥ r, k ≥ r, their Grams in range): the r×r kernel
///     svd_from_grams (linalg/spectrum_from_grams.hpp) on G_B and G_A gives σ and U = B·X_B,
///     V = Aᵀ·X_A;
///   otherwise: the column spaces of B and Aᵀ (linalg/column_space.hpp) and the core's SVD by
///     BDCSVD, U = Q_B·P, V = Q_A·S (P = core_u, S = core_v).
/// low_rank_svd forms U and V from them; canonical forms build U·D and D'·Vᵀ for diagonal D
/// directly, one thin product each from B or A. Whole adapters compute the Gram route of many
/// modules batched by rank and adopt each result (adopt_gram_route).
template <class S, class Storage = host_storage>
struct factor_space_svd {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

  column_space<S, Storage> b_space, a_space;  ///< off the Gram route only
  vector sigma;           ///< σ₁ ≥ … ≥ σ_p, p = min(d, k, r)
  matrix core_u, core_v;  ///< P and S, off the Gram route, when vectors were requested
  matrix x_b, x_a;        ///< X_B and X_A, on the Gram route, when vectors were requested
  bool gram_route = false;

  /// False (nothing else meaningful) when the factors or s are not finite. σᵢ is +inf only when
  /// the exact σᵢ exceeds the range of S (see the file comment). grams_b and grams_a, when given,
  /// are BᵀB and A·Aᵀ (r×r, column-major) as gram_into computes them, already at hand (a batch's).
  template <class BX, class AX>
  bool compute(const BX& B, const AX& A, S s, bool vectors, const S* grams_b = nullptr, const S* grams_a = nullptr) {
    const index d = B.rows(), r = B.cols(), k = A.cols();
    matrix b_gram, a_gram;
    const bool grams = gram_route_shape(d, k, r);
    if (grams) {
      if (grams_b != nullptr && grams_a != nullptr) {
        b_gram = Eigen::Map<const matrix>(grams_b, r, r);
        a_gram = Eigen::Map<const matrix>(grams_a, r, r);
      } else {
        gram_into(B, b_gram);
        gram_into(A.transpose(), a_gram);
      }
      if (std::isfinite(s) && grams_in_range<S>(b_gram.diagonal().maxCoeff(), a_gram.diagonal().maxCoeff(), d, k, r)) {
        sigma.resize(r);
        if (vectors) {
          x_b.resize(r, r);
          x_a.resize(r, r);
        }
        std::vector<S> work(static_cast<std::size_t>(svd_workspace_size(static_cast<int>(r))));
        const auto status = svd_from_grams(b_gram.data(), a_gram.data(), s, int(r), sigma.data(),
                                           vectors ? x_b.data() : nullptr, vectors ? x_a.data() : nullptr,
                                           work.data(), tridiagonal_eigensystem{});
        if (status == gram_spectrum::computed && sigma.allFinite()) {
          gram_route = true;
          return true;
        }
      }
    }
    gram_route = false;
    b_space.compute(B, grams ? &b_gram : nullptr);
    a_space.compute(A.transpose(), grams ? &a_gram : nullptr);
    matrix core = b_space.R() * a_space.R().transpose();  // p_b × p_a, of the rescaled factors
    if (!core.allFinite() || !std::isfinite(s)) return false;
    int exponent = b_space.exponent() + a_space.exponent();
    if (core.size() > 0) {
      const S largest = core.cwiseAbs().maxCoeff();
      if (largest > 0) {
        int e = 0;
        std::frexp(largest, &e);
        core = core.unaryExpr([e](S v) { return static_cast<S>(std::ldexp(v, -e)); });
        exponent += e;
      }
    }
    decompose_core(core, vectors);
    // σ(s·2^exponent·core) = |s|·2^exponent·σ(core), from s = ±m·2^q with m ∈ [½, 1).
    int q = 0;
    const S m = std::frexp(std::abs(s), &q);
    sigma = sigma.unaryExpr(
        [m, q, exponent](S v) { return static_cast<S>(std::ldexp(v * m, q + exponent)); });
    if (vectors && s < 0) core_u = -core_u;
    return true;
  }

  /// The Gram route's result computed elsewhere (svd_from_grams on the same Grams, e.g. batched):
  /// σ (r), X_B and X_A (r×r).
  template <class V, class X>
  void adopt_gram_route(const V& sigma_in, const X& x_b_in, const X& x_a_in) {
    gram_route = true;
    sigma = sigma_in;
    x_b = x_b_in;
    x_a = x_a_in;
  }

  /// out = U·diag(w) over the first w.size() singular vectors (d×n); B as passed to compute().
  template <class BX, class W, class Out>
  void u_diagonal_into(const BX& B, const W& w, Out&& out) const {
    if (w.size() == 0) return;
    if (gram_route) {
      const matrix coefficients = x_b.leftCols(w.size()) * w.asDiagonal();
      thin_product_into<S>(B, coefficients, out);
    } else {
      b_space.basis_times_into(B, core_u.leftCols(w.size()) * w.asDiagonal(), out);
    }
  }
  /// out = V·diag(w) over the first w.size() singular vectors (k×n).
  template <class AX, class W, class Out>
  void v_diagonal_into(const AX& A, const W& w, Out&& out) const {
    if (w.size() == 0) return;
    if (gram_route) {
      const matrix coefficients = x_a.leftCols(w.size()) * w.asDiagonal();
      thin_product_into<S>(A.transpose(), coefficients, out);
    } else {
      a_space.basis_times_into(A.transpose(), core_v.leftCols(w.size()) * w.asDiagonal(), out);
    }
  }
  /// out = diag(w)·Vᵀ over the first w.size() singular vectors (n×k), in A's layout: outᵀ is one
  /// thin product reading A as stored.
  template <class AX, class W, class Out>
  void diagonal_vt_into(const AX& A, const W& w, Out&& out) const {
    if (w.size() == 0) return;
    if (gram_route) {
      const matrix coefficients = x_a.leftCols(w.size()) * w.asDiagonal();
      thin_product_into<S>(A.transpose(), coefficients, out.transpose());
    } else {
      a_space.transposed_basis_times_into(A.transpose(), core_v.leftCols(w.size()) * w.asDiagonal(), out);
    }
  }

 private:
  /// sigma (and core_u, core_v when vectors) of the core's SVD.
  void decompose_core(const matrix& core, bool vectors) {
    if (std::min(core.rows(), core.cols()) == 0) {
      sigma.resize(0);
      core_u.resize(core.rows(), 0);
      core_v.resize(core.cols(), 0);
      return;
    }
    const Eigen::BDCSVD<matrix> svd(core, vectors ? unsigned(Eigen::ComputeThinU | Eigen::ComputeThinV) : 0u);
    sigma = svd.singularValues();
    if (vectors) {
      core_u = svd.matrixU();
      core_v = svd.matrixV();
    }
  }
};

}  // namespace detail

/// Storage: the backend of the factors it decomposes (host_storage: Eigen objects); U, V and Vᵀ
/// are that backend's matrices, σ a host vector.
template <class S, class Storage = host_storage>
class low_rank_svd {
 public:
  using scalar = S;
  using storage = Storage;
  using matrix = factor_matrix_t<Storage, S>;
  using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

  low_rank_svd() = default;
  template <class E>
  explicit low_rank_svd(const E& e, unsigned options = compute_uv) {
    compute(e, options);
  }

  /// Decomposes the matrix a low-rank expression of this backend represents.
  template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
  low_rank_svd& compute(const E& e, unsigned options = compute_uv) {
    static_assert(std::is_same_v<scalar_of_t<E>, S>,
                  "lola::low_rank_svd<S> decomposes expressions of compute scalar S");
    static_assert(std::is_same_v<storage_of_t<E>, Storage>,
                  "lola::low_rank_svd<S, Storage> decomposes expressions of that storage");
    using detail::as_compute;  // the host overload; other backends' by argument-dependent lookup
    decltype(auto) f = detail::evaluator::factors(e);
    return compute_factors(as_compute<S>(f.B()), as_compute<S>(f.A()), f.scale(), options);
  }

  /// Decomposes s·B·A for factors B (d×r) and A (r×k) of this backend.
  template <class BX, class AX, class = std::enable_if_t<is_factor_v<BX> && is_factor_v<AX>>>
  low_rank_svd& compute_factors(const BX& B, const AX& A, S s = S(1), unsigned options = compute_uv) {
    detail::require_shapes(B.cols() == A.rows(), "low_rank_svd (B's columns must equal A's rows)",
                           "B", B.rows(), B.cols(), "A", A.rows(), A.cols());
    rows_ = B.rows();
    cols_ = A.cols();
    options_ = options;
    computed_ = false;
    detail::factor_space_svd<S, Storage> parts;
    if (!parts.compute(B, A, s, options != singular_values_only)) {
      info_ = Eigen::NumericalIssue;
      return *this;
    }
    singular_values_ = std::move(parts.sigma);
    const index p = singular_values_.size();
    const vector ones = vector::Ones(p);
    if (options & compute_u) {
      u_ = matrix(rows_, p);
      parts.u_diagonal_into(B, ones, u_);
    }
    if (options & compute_v) {
      v_ = matrix(cols_, p);
      parts.v_diagonal_into(A, ones, v_);
    }
    if (options & compute_vt) {
      vt_ = matrix(p, cols_);
      parts.diagonal_vt_into(A, ones, vt_);
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
    return detail::numerical_rank(singular_values_, threshold());
  }
  low_rank_svd& setThreshold(S threshold) {
    if (!(threshold >= 0))
      throw error(error_code::invalid_argument, "low_rank_svd::setThreshold: must be >= 0");
    threshold_ = threshold;
    return *this;
  }
  /// The relative threshold of rank(): the one set, or max(d, k)·ε.
  S threshold() const {
    return threshold_ >= 0 ? threshold_ : detail::default_rank_threshold<S>(rows_, cols_);
  }

  Eigen::ComputationInfo info() const { return info_; }
  index rows() const { return rows_; }
  index cols() const { return cols_; }

 private:
  void require_computed(const char* what) const {
    if (computed_) return;
    const std::string function = std::string("low_rank_svd::") + what;
    detail::require_finite_factors(info_ != Eigen::NumericalIssue, function.c_str(), rows_, cols_);
    throw error(error_code::invalid_argument, function + ": compute() has not been called");
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
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
low_rank_svd(const E&, unsigned = compute_uv) -> low_rank_svd<scalar_of_t<E>, storage_of_t<E>>;

}  // namespace lola
