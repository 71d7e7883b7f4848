#pragma once
/// @file
/// The singular values of ΔW = s·B·A, and optionally its singular vectors as r×r coefficients of B
/// and Aᵀ, from the two r×r Grams G_B = BᵀB and G_A = A·Aᵀ alone: the per-module r×r step of the
/// batched factor-space SVD (Grams by a batched GEMM, then this kernel once per module), on plain
/// column-major storage and callable from device code.
///
///   G_A = W·Wᵀ                           (Cholesky, W = L lower triangular)
///   M = Wᵀ·G_B·W = Z·diag(μ)·Zᵀ          (symmetric positive semi-definite, r×r)
///   σᵢ = |s|·√μᵢ
/// since the eigenvalues of M are those of G_B·W·Wᵀ = BᵀB·AAᵀ, the non-zero ones being those of
/// (BA)ᵀ(BA). Everything is O(r³), independent of d and k; GL(r) acts on the Grams as
/// (GᵀG_B G, G⁻¹G_A G⁻ᵀ), which leaves BᵀB·AAᵀ similar to itself, so σ is invariant.
///
/// Range: M scales like ‖B‖²·‖A‖², which leaves the compute type's range long before either Gram
/// does (two double Grams near 1e-200 give M ≈ 1e-400: zero, and σ = 0 for a non-zero ΔW). So
/// each Gram is read at an exact power of four, G' = 4^-h·G with max diag(G') in [¼, 1), and
///   σᵢ = |s|·2^(h_B + h_A)·√μᵢ(M'),
/// with s's mantissa and exponent applied separately (as linalg/low_rank_svd.hpp does), so that σ
/// is inf only when it exceeds the range itself. Powers of two change no digit: in range, σ is
/// what the unscaled M gives, bit for bit.
///
/// Cost: r³/3 (Cholesky) + 2r³ (M) + the eigenvalues of M. Scalar code, one module per work item.
/// The eigen-solver is a parameter: the kernel's own is cyclic Jacobi (4r³ per sweep, 6–10
/// sweeps: on one core of this 2-CPU EPYC VM 0.9 µs at r = 4, 44 µs at r = 16, 400 µs at r = 32
/// in float, for a dense positive definite M); the host backend passes Eigen's tridiagonal QR
/// (1.1, 13 and 47 µs), backend/eigen/batched_spectra.hpp. Whole adapters run this stage batched
/// per rank (features/adapter_spectra.hpp): on the CPU through the host backend, on the GPU
/// through the Thrust launch (backend/thrust/batched_spectra.hpp).
///
/// The route: a factor with κ > 4 (linalg/gram_condition.hpp, decided from its Gram alone), a
/// rank-deficient one, or d < r or k < r gets gram_spectrum::needs_householder and no σ; the caller
/// computes it by the Householder route. Within it, μᵢ carries an absolute error of order
/// r·κ²·ε·‖B‖²·‖A‖², κ² ≤ 16, and σᵢ one of order s²·16·r·ε·‖B‖²·‖A‖²/σᵢ. Entries past min(d, k)
/// cannot occur: such a factor is rank-deficient. This kernel is the Gram route of the CPU's
/// factor-space SVD too (linalg/low_rank_svd.hpp calls it module by module with the host
/// eigen-solver), so a module's σ is the same whether computed alone or batched.
///
/// Singular vectors (svd_from_grams): with M = Z·diag(μ)·Zᵀ,
///   V = Aᵀ·L⁻ᵀ·Z,   U = sign(s)·B·L·Z·Σ⁻¹   (Σ = diag(σ)/|s|)
/// since VᵀV = Zᵀ·L⁻¹·G_A·L⁻ᵀ·Z = I, ΔWᵀ·ΔW·V = s²·Aᵀ·G_B·L·Z = s²·Aᵀ·L⁻ᵀ·Z·diag(μ) = V·Σ²·s²
/// (G_B·L·Z = L⁻ᵀ·Z·diag(μ) is M's eigen-equation), and U = ΔW·V·Σ⁻¹/|s| = sign(s)·B·G_A·L⁻ᵀ·Z·Σ⁻¹
/// = sign(s)·B·L·Z·Σ⁻¹.
/// So the kernel returns the r×r coefficients X_B = sign(s)·L·Z·Σ⁻¹ and X_A = L⁻ᵀ·Z, and the caller
/// forms U = B·X_B and V = Aᵀ·X_A with the thin-product primitive, one more read of each factor.
/// Only G_A is factorised; G_B enters through M. UᵀU = Σ⁻¹·Zᵀ·M·Z·Σ⁻¹ = I up to the eigen-solver's
/// O(r·ε·‖M‖), i.e. columns orthonormal to O(r·ε·σ₁²/(σᵢ·σⱼ)) ≤ O(256·r·ε) on the Gram route
/// (κ(M) ≤ κ(B)²·κ(A)² ≤ 256). A singular M (μ_r = 0) leaves U undefined: needs_householder. Whole
/// adapters run this stage batched per rank for canonical forms and resizes as well
/// (canon/canonicalize_adapter.hpp, ops/resize_adapter.hpp).

#include <cmath>

#include "lola/core/config.hpp"
#include "lola/linalg/gram_condition.hpp"
#include "lola/linalg/jacobi_eigen.hpp"

namespace lola::detail {

/// Scalars of workspace spectrum_from_grams needs for rank r.
LOLA_HOST_DEVICE constexpr int spectrum_workspace_size(int r) { return 3 * r * r; }
/// Scalars of workspace svd_from_grams needs for rank r with singular vectors.
LOLA_HOST_DEVICE constexpr int svd_workspace_size(int r) { return 4 * r * r; }

/// What spectrum_from_grams did for a module.
enum class gram_spectrum : int {
  failed = 0,           ///< an input is not finite, or an eigenvalue iteration did not converge
  computed = 1,         ///< σ written (and X_B, X_A when asked for)
  needs_householder = 2 ///< a factor is outside the Gram route (κ > 4, rank-deficient, d < r or
                        ///< k < r; with vectors also a singular M): nothing written; compute it
                        ///< by the Householder route
};

/// h with 4^h > max diag(G) ≥ 4^(h−1), so that 4^-h·G has its largest diagonal entry in [¼, 1); 0
/// for a zero diagonal. G finite, r ≥ 1.
template <class S>
LOLA_HOST_DEVICE int gram_quarter_exponent(const S* g, int r) {
  using std::frexp;
  S largest = 0;
  for (int i = 0; i < r; ++i) largest = g[i + i * r] > largest ? g[i + i * r] : largest;
  if (!(largest > 0)) return 0;
  int e = 0;
  frexp(largest, &e);  // largest in [2^(e−1), 2^e)
  return e >= 0 ? (e + 1) / 2 : -((-e) / 2);
}

/// The eigen-decomposition of a symmetric r×r matrix by cyclic Jacobi (linalg/jacobi_eigen.hpp):
/// the kernel's own eigen-solver, for device code. eigensystem(m, r, w, z) writes m's eigenvalues
/// to w in descending order and, when z is not null, the matching orthonormal eigenvectors as the
/// columns of z (r×r column-major); m is destroyed. It returns false when m is not finite or the
/// iteration did not converge. A backend may pass its own (backend/eigen/batched_spectra.hpp).
struct jacobi_eigensystem {
  template <class S>
  LOLA_HOST_DEVICE bool operator()(S* m, int r, S* w, S* z) const {
    return jacobi_eigen(m, r, w, z);
  }
};

/// Writes σ₁ ≥ … ≥ σ_r ≥ 0 of s·B·A to sigma[0..r) from G_B = BᵀB and G_A = A·Aᵀ (r×r,
/// column-major, symmetric with both triangles stored; left unchanged), when both factors pass
/// the Gram route's rule (see the file comment); when x_b and x_a are not null, also the r×r
/// coefficients of the singular vectors, U = B·X_B and V = Aᵀ·X_A (column-major, column i for
/// σᵢ). `work` holds spectrum_workspace_size(r) scalars, svd_workspace_size(r) with vectors. The
/// eigen-decomposition of M comes from `eigensystem` (jacobi_eigensystem's contract).
template <class S, class Eigensystem = jacobi_eigensystem>
LOLA_HOST_DEVICE gram_spectrum svd_from_grams(const S* b_gram, const S* a_gram, S s, int r, S* sigma, S* x_b,
                                              S* x_a, S* work, Eigensystem eigensystem = {}) {
  using std::abs;
  using std::frexp;
  using std::ldexp;
  using std::sqrt;
  const int rr = r * r;
  const bool vectors = x_b != nullptr && x_a != nullptr;
  if (!(abs(s) <= kernel_limits<S>::max)) return gram_spectrum::failed;
  for (int i = 0; i < rr; ++i)
    if (!(abs(b_gram[i]) <= kernel_limits<S>::max && abs(a_gram[i]) <= kernel_limits<S>::max))
      return gram_spectrum::failed;
  const S limit = gram_route_condition_limit<S> * gram_route_condition_limit<S>;
  if (!gram_condition_within(b_gram, r, limit, work) || !gram_condition_within(a_gram, r, limit, work))
    return gram_spectrum::needs_householder;
  const int h_b = gram_quarter_exponent(b_gram, r), h_a = gram_quarter_exponent(a_gram, r);
  S* m = work;           // M'
  S* w = work + rr;      // W = L', G_A' = L'·L'ᵀ: L' = 2^-h_a·L
  S* t = work + 2 * rr;  // G_B'·W = 4^-h_b·(G_B·W), of the size of G_B': the scaling is exact
  S* z = vectors ? work + 3 * rr : nullptr;  // M's eigenvectors
  if (!cholesky_lower(a_gram, r, w)) return gram_spectrum::needs_householder;
  for (int i = 0; i < rr; ++i) w[i] = ldexp(w[i], -h_a);
  for (int j = 0; j < r; ++j)
    for (int i = 0; i < r; ++i) {
      S sum = 0;
      for (int l = j; l < r; ++l) sum += b_gram[i + l * r] * w[l + j * r];  // W lower triangular
      t[i + j * r] = ldexp(sum, -2 * h_b);
    }
  for (int j = 0; j < r; ++j)
    for (int i = 0; i <= j; ++i) {
      S sum = 0;
      for (int l = i; l < r; ++l) sum += w[l + i * r] * t[l + j * r];
      m[i + j * r] = m[j + i * r] = sum;  // one triangle, mirrored: M exactly symmetric
    }
  if (!eigensystem(m, r, sigma, z)) return gram_spectrum::failed;
  if (vectors) {
    // μ' = sigma (descending): X_B = sign(s)·2^-h_b·L'·Z·diag(μ')^-½ needs μ'_r > 0.
    if (!(r == 0 || sigma[r - 1] > 0)) return gram_spectrum::needs_householder;
    for (int j = 0; j < r; ++j) {
      const S inverse = (s < 0 ? S(-1) : S(1)) / sqrt(sigma[j]);
      for (int i = 0; i < r; ++i) {
        S sum = 0;
        for (int l = 0; l <= i; ++l) sum += w[i + l * r] * z[l + j * r];  // L' lower triangular
        x_b[i + j * r] = ldexp(sum * inverse, -h_b);
      }
      // X_A = 2^-h_a·L'⁻ᵀ·Z: back substitution with the upper triangular L'ᵀ.
      for (int i = r - 1; i >= 0; --i) {
        S sum = z[i + j * r];
        for (int l = i + 1; l < r; ++l) sum -= w[l + i * r] * x_a[l + j * r];
        x_a[i + j * r] = sum / w[i + i * r];
      }
      for (int i = 0; i < r; ++i) x_a[i + j * r] = ldexp(x_a[i + j * r], -h_a);
    }
  }
  int q = 0;
  const S mantissa = frexp(abs(s), &q);  // |s| = mantissa·2^q, mantissa in [½, 1)
  for (int i = 0; i < r; ++i) sigma[i] = sigma[i] > 0 ? ldexp(mantissa * sqrt(sigma[i]), q + h_b + h_a) : S(0);
  return gram_spectrum::computed;
}

/// σ only: svd_from_grams without vectors (spectrum_workspace_size(r) scalars of work).
template <class S, class Eigensystem = jacobi_eigensystem>
LOLA_HOST_DEVICE gram_spectrum spectrum_from_grams(const S* b_gram, const S* a_gram, S s, int r, S* sigma,
                                                   S* work, Eigensystem eigensystem = {}) {
  return svd_from_grams(b_gram, a_gram, s, r, sigma, static_cast<S*>(nullptr), static_cast<S*>(nullptr), work,
                        eigensystem);
}

/// Module i of a batch of modules of one rank r, stored one after another (r×r column-major Grams,
/// r singular values, r×r coefficients X_B and X_A when x_b and x_a are not null, and
/// svd_workspace_size(r) scalars of work with vectors, spectrum_workspace_size(r) without): σ of
/// s_i·B_i·A_i into sigma + i·r, what svd_from_grams did into status[i]. The work item every
/// launcher of the batched r×r stage runs (a Thrust policy; the host backend's executor threads,
/// with its own eigen-solver).
template <class S, class Eigensystem = jacobi_eigensystem>
struct spectrum_from_grams_item {
  const S* b_grams;
  const S* a_grams;
  const S* scales;
  S* sigma;
  S* work;
  int* status;
  int r;
  Eigensystem eigensystem{};
  S* x_b = nullptr;
  S* x_a = nullptr;

  LOLA_HOST_DEVICE void operator()(index i) const {
    const index rr = index(r) * r;
    const bool vectors = x_b != nullptr && x_a != nullptr;
    const index work_size = vectors ? svd_workspace_size(r) : spectrum_workspace_size(r);
    status[i] = static_cast<int>(svd_from_grams(b_grams + i * rr, a_grams + i * rr, scales[i], r, sigma + i * r,
                                                vectors ? x_b + i * rr : x_b, vectors ? x_a + i * rr : x_a,
                                                work + i * work_size, eigensystem));
  }
};

}  // namespace lola::detail
