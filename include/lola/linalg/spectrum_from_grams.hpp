#pragma once
/// @file
/// The singular values of ΔW = s·B·A from the two r×r Grams G_B = BᵀB and G_A = A·Aᵀ alone: the
/// per-module r×r step of the batched singular-value algorithm (Grams by a batched GEMM, then this
/// kernel once per module), on plain column-major storage and callable from device code.
///
///   G_A = W·Wᵀ                           (Cholesky, W = L lower triangular)
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
/// The route: the CPU's (linalg/low_rank_svd.hpp) decides per factor by the same rule
/// (linalg/gram_condition.hpp: κ ≤ 4 from the Gram alone) whether the Gram route may serve, and so
/// does this kernel: a module with a factor outside it gets gram_spectrum::needs_householder and no
/// σ, and the caller computes it by the Householder route, as the CPU does. Within it both compute
/// the eigenvalues of M = CᵀC for the core C = R_B·R_Aᵀ (here M = Lᵀ·G_B·L with G_A = L·Lᵀ =
/// R_Aᵀ·R_A, so L·… = C up to the order of the sums), so the two agree to the accuracy of the
/// Gram route: μᵢ carries an absolute error of order r·κ²·ε·‖B‖²·‖A‖², κ² ≤ 16, and σᵢ one of order
/// s²·16·r·ε·‖B‖²·‖A‖²/σᵢ. Entries past min(d, k) cannot occur: such a factor is rank-deficient.

#include <cmath>

#include "lola/core/config.hpp"
#include "lola/linalg/gram_condition.hpp"
#include "lola/linalg/jacobi_eigen.hpp"

namespace lola::detail {

/// Scalars of workspace spectrum_from_grams needs for rank r.
LOLA_HOST_DEVICE constexpr int spectrum_workspace_size(int r) { return 3 * r * r; }

/// What spectrum_from_grams did for a module.
enum class gram_spectrum : int {
  failed = 0,           ///< an input is not finite, or a Jacobi iteration did not converge
  computed = 1,         ///< σ written
  needs_householder = 2 ///< a factor is outside the Gram route (κ > 4, rank-deficient, d < r or
                        ///< k < r): nothing written; compute it by the Householder route
};

/// Writes σ₁ ≥ … ≥ σ_r ≥ 0 of s·B·A to sigma[0..r) from G_B = BᵀB and G_A = A·Aᵀ (r×r,
/// column-major, symmetric with both triangles stored; left unchanged), when both factors pass
/// the Gram route's rule (see the file comment). `work` holds spectrum_workspace_size(r) scalars.
template <class S>
LOLA_HOST_DEVICE gram_spectrum spectrum_from_grams(const S* b_gram, const S* a_gram, S s, int r, S* sigma,
                                                   S* work) {
  using std::abs;
  using std::sqrt;
  const int rr = r * r;
  if (!(abs(s) <= kernel_limits<S>::max)) return gram_spectrum::failed;
  for (int i = 0; i < rr; ++i)
    if (!(abs(b_gram[i]) <= kernel_limits<S>::max && abs(a_gram[i]) <= kernel_limits<S>::max))
      return gram_spectrum::failed;
  const S limit = gram_route_condition_limit<S> * gram_route_condition_limit<S>;
  if (!gram_condition_within(b_gram, r, limit, work) || !gram_condition_within(a_gram, r, limit, work))
    return gram_spectrum::needs_householder;
  S* m = work;           // M
  S* w = work + rr;      // W = L, G_A = L·Lᵀ
  S* t = work + 2 * rr;  // G_B·W
  if (!cholesky_lower(a_gram, r, w)) return gram_spectrum::needs_householder;
  for (int j = 0; j < r; ++j)
    for (int i = 0; i < r; ++i) {
      S sum = 0;
      for (int l = j; l < r; ++l) sum += b_gram[i + l * r] * w[l + j * r];  // W lower triangular
      t[i + j * r] = sum;
    }
  for (int j = 0; j < r; ++j)
    for (int i = 0; i <= j; ++i) {
      S sum = 0;
      for (int l = i; l < r; ++l) sum += w[l + i * r] * t[l + j * r];
      m[i + j * r] = m[j + i * r] = sum;  // one triangle, mirrored: M exactly symmetric
    }
  if (!jacobi_eigen(m, r, sigma, static_cast<S*>(nullptr))) return gram_spectrum::failed;
  const S scale = abs(s);
  for (int i = 0; i < r; ++i) sigma[i] = sigma[i] > 0 ? scale * sqrt(sigma[i]) : S(0);
  return gram_spectrum::computed;
}

}  // namespace lola::detail
