#pragma once
/// @file
/// The singular values of ΔW = s·B·A from the two r×r Grams G_B = BᵀB and G_A = A·Aᵀ alone: the
/// per-module r×r step of the batched singular-value algorithm (Grams by a batched GEMM, then this
/// kernel once per module), on plain column-major storage and callable from device code.
///
///   G_A = W·Wᵀ                           (Cholesky, W = L lower triangular; when G_A is singular
///                                          or not numerically positive definite, W = V·Λ^½ from
///                                          its Jacobi eigen-decomposition, linalg/jacobi_eigen.hpp)
///   M = Wᵀ·G_B·W = Z·diag(μ)·Zᵀ          (symmetric positive semi-definite, r×r; Jacobi)
///   σᵢ = |s|·√μᵢ
/// since the eigenvalues of M are those of G_B·W·Wᵀ = BᵀB·AAᵀ, the non-zero ones being those of
/// (BA)ᵀ(BA). Everything is O(r³), independent of d and k; GL(r) acts on the Grams as
/// (GᵀG_B G, G⁻¹G_A G⁻ᵀ), which leaves BᵀB·AAᵀ similar to itself, so σ is invariant.
///
/// Cost: r³/3 (Cholesky) + 2r³ (M) + the Jacobi sweeps on M, 4r³ each. Scalar code, one module
/// per work item: on one core of a 2.6 GHz VM 0.4 µs at r = 4, 19 µs at r = 16, 165 µs at r = 32
/// (low_rank_svd's r×r stage with Eigen's tridiagonal QR: about 12 µs at r = 16, so the CPU keeps
/// that route and this kernel serves where Eigen cannot run).
///
/// Accuracy: forming the Grams and M is backward stable with respect to ‖G_B‖·‖G_A‖, so μᵢ carries
/// an absolute error of order r·ε·‖B‖²·‖A‖² and σᵢ one of order s²·r·ε·‖B‖²·‖A‖²/σᵢ: like every
/// Gram route it loses the small singular values of ill-conditioned factors, where the CPU route
/// (linalg/low_rank_svd.hpp) switches to Householder QR. Entries past min(d, k) come out as zeros
/// up to that error; the caller, who knows d and k, truncates.

#include <cmath>

#include "lola/core/config.hpp"
#include "lola/linalg/jacobi_eigen.hpp"

namespace lola::detail {

/// Scalars of workspace spectrum_from_grams needs for rank r.
LOLA_HOST_DEVICE constexpr int spectrum_workspace_size(int r) { return 3 * r * r; }

/// G = L·Lᵀ for symmetric g (n×n, column-major; the lower triangle is read) into l (n×n, upper
/// part zeroed); false when a pivot is not positive and finite (G singular, indefinite to working
/// precision, or not finite). n³/3 flops.
template <class S>
LOLA_HOST_DEVICE bool cholesky_lower(const S* g, int n, S* l) {
  using std::sqrt;
  for (int j = 0; j < n; ++j) {
    S pivot = g[j + j * n];
    for (int k = 0; k < j; ++k) pivot -= l[j + k * n] * l[j + k * n];
    if (!(pivot > 0 && pivot <= kernel_limits<S>::max)) return false;
    const S root = sqrt(pivot);
    for (int i = 0; i < j; ++i) l[i + j * n] = S(0);
    l[j + j * n] = root;
    for (int i = j + 1; i < n; ++i) {
      S sum = g[i + j * n];
      for (int k = 0; k < j; ++k) sum -= l[i + k * n] * l[j + k * n];
      l[i + j * n] = sum / root;
    }
  }
  return true;
}

/// Writes σ₁ ≥ … ≥ σ_r ≥ 0 of s·B·A to sigma[0..r) from G_B = BᵀB and G_A = A·Aᵀ (r×r,
/// column-major, symmetric with both triangles stored; left unchanged). `work` holds spectrum_workspace_size(r) scalars.
/// Returns false when an input is not finite or a Jacobi iteration did not converge.
template <class S>
LOLA_HOST_DEVICE bool spectrum_from_grams(const S* b_gram, const S* a_gram, S s, int r, S* sigma,
                                          S* work) {
  using std::abs;
  using std::sqrt;
  if (!(abs(s) <= kernel_limits<S>::max)) return false;
  const int rr = r * r;
  S* m = work;            // G_A, then M
  S* w = work + rr;       // V, then W = V·Λ^½
  S* t = work + 2 * rr;   // G_B·W
  if (!cholesky_lower(a_gram, r, w)) {
    for (int i = 0; i < rr; ++i) m[i] = a_gram[i];
    if (!jacobi_eigen(m, r, sigma, w)) return false;
    for (int j = 0; j < r; ++j) {
      const S root = sigma[j] > 0 ? sqrt(sigma[j]) : S(0);  // G_A is PSD: negative λ are rounding
      for (int i = 0; i < r; ++i) w[i + j * r] *= root;
    }
  }
  for (int j = 0; j < r; ++j)
    for (int i = 0; i < r; ++i) {
      S sum = 0;
      for (int l = 0; l < r; ++l) sum += b_gram[i + l * r] * w[l + j * r];
      t[i + j * r] = sum;
    }
  for (int j = 0; j < r; ++j)
    for (int i = 0; i <= j; ++i) {
      S sum = 0;
      for (int l = 0; l < r; ++l) sum += w[l + i * r] * t[l + j * r];
      m[i + j * r] = m[j + i * r] = sum;  // one triangle, mirrored: M exactly symmetric
    }
  if (!jacobi_eigen(m, r, sigma, static_cast<S*>(nullptr))) return false;
  const S scale = abs(s);
  for (int i = 0; i < r; ++i) sigma[i] = sigma[i] > 0 ? scale * sqrt(sigma[i]) : S(0);
  return true;
}

}  // namespace lola::detail
