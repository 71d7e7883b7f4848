#pragma once
/// @file
/// The singular values of ΔW = s·B·A from the two r×r Grams G_B = BᵀB and G_A = A·Aᵀ alone: the
/// per-module r×r step of the batched singular-value algorithm (Grams by a batched GEMM, then this
/// kernel once per module), on plain column-major storage and callable from device code.
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
  failed = 0,           ///< an input is not finite, or an eigenvalue iteration did not converge
  computed = 1,         ///< σ written
  needs_householder = 2 ///< a factor is outside the Gram route (κ > 4, rank-deficient, d < r or
                        ///< k < r): nothing written; compute it by the Householder route
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

/// The eigenvalues of a symmetric r×r matrix by cyclic Jacobi (linalg/jacobi_eigen.hpp): the
/// kernel's own eigen-solver, for device code. eigenvalues(m, r, w) writes m's eigenvalues to w in
/// descending order (m destroyed) and returns false when m is not finite or the iteration did not
/// converge; a backend may pass its own (backend/eigen/batched_spectra.hpp).
struct jacobi_eigenvalues {
  template <class S>
  LOLA_HOST_DEVICE bool operator()(S* m, int r, S* w) const {
    return jacobi_eigen(m, r, w, static_cast<S*>(nullptr));
  }
};

/// Writes σ₁ ≥ … ≥ σ_r ≥ 0 of s·B·A to sigma[0..r) from G_B = BᵀB and G_A = A·Aᵀ (r×r,
/// column-major, symmetric with both triangles stored; left unchanged), when both factors pass
/// the Gram route's rule (see the file comment). `work` holds spectrum_workspace_size(r) scalars.
/// The eigenvalues of M come from `eigenvalues` (jacobi_eigenvalues' contract).
template <class S, class Eigenvalues = jacobi_eigenvalues>
LOLA_HOST_DEVICE gram_spectrum spectrum_from_grams(const S* b_gram, const S* a_gram, S s, int r, S* sigma,
                                                   S* work, Eigenvalues eigenvalues = {}) {
  using std::abs;
  using std::frexp;
  using std::ldexp;
  using std::sqrt;
  const int rr = r * r;
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
  if (!eigenvalues(m, r, sigma)) return gram_spectrum::failed;
  int q = 0;
  const S mantissa = frexp(abs(s), &q);  // |s| = mantissa·2^q, mantissa in [½, 1)
  for (int i = 0; i < r; ++i) sigma[i] = sigma[i] > 0 ? ldexp(mantissa * sqrt(sigma[i]), q + h_b + h_a) : S(0);
  return gram_spectrum::computed;
}

/// Module i of a batch of modules of one rank r, stored one after another (r×r column-major Grams,
/// r singular values, spectrum_workspace_size(r) scalars of work): σ of s_i·B_i·A_i into
/// sigma + i·r, what spectrum_from_grams did into status[i]. The work item every launcher of the
/// batched r×r stage runs (a Thrust policy; the host backend's executor threads, with its own
/// eigen-solver).
template <class S, class Eigenvalues = jacobi_eigenvalues>
struct spectrum_from_grams_item {
  const S* b_grams;
  const S* a_grams;
  const S* scales;
  S* sigma;
  S* work;
  int* status;
  int r;
  Eigenvalues eigenvalues{};

  LOLA_HOST_DEVICE void operator()(index i) const {
    const index rr = index(r) * r;
    status[i] = static_cast<int>(spectrum_from_grams(b_grams + i * rr, a_grams + i * rr, scales[i], r,
                                                     sigma + i * r, work + i * spectrum_workspace_size(r),
                                                     eigenvalues));
  }
};

}  // namespace lola::detail
