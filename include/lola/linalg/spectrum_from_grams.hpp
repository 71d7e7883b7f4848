#pragma once
/// @file
/// The singular values of ΔW = s·B·A from the two r×r Grams G_B = BᵀB and G_A = A·Aᵀ alone: the
/// per-module r×r step of the batched singular-value algorithm (Grams by a batched GEMM, then this
/// kernel once per module), on plain column-major storage and callable from device code.
///
///   G_A = V·Λ·Vᵀ,  W = V·Λ^½            (so G_A = W·Wᵀ; Jacobi, linalg/jacobi_eigen.hpp)
///   M = Wᵀ·G_B·W = Z·diag(μ)·Zᵀ          (symmetric positive semi-definite, r×r)
///   σᵢ = |s|·√μᵢ
/// since the eigenvalues of M are those of G_B·W·Wᵀ = BᵀB·AAᵀ, the non-zero ones being those of
/// (BA)ᵀ(BA). Everything is O(r³), independent of d and k; GL(r) acts on the Grams as
/// (GᵀG_B G, G⁻¹G_A G⁻ᵀ), which leaves BᵀB·AAᵀ similar to itself, so σ is invariant.
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

/// Writes σ₁ ≥ … ≥ σ_r ≥ 0 of s·B·A to sigma[0..r) from G_B = BᵀB and G_A = A·Aᵀ (r×r,
/// column-major, both triangles; left unchanged). `work` holds spectrum_workspace_size(r) scalars.
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
  for (int i = 0; i < rr; ++i) m[i] = a_gram[i];
  if (!jacobi_eigen(m, r, sigma, w)) return false;
  for (int j = 0; j < r; ++j) {
    const S root = sigma[j] > 0 ? sqrt(sigma[j]) : S(0);  // G_A is PSD: negative λ are rounding
    for (int i = 0; i < r; ++i) w[i + j * r] *= root;
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
