#pragma once
/// @file
/// The orthogonal Procrustes rotation of a small r×r matrix, on plain column-major storage and
/// callable from device code (LOLA_HOST_DEVICE): O-Align's r×r stage (canon/o_align.hpp), in the
/// form a batch of modules runs it, one item per thread. No allocation, no Eigen, no exceptions.
///
/// For M = P·Σ·Sᵀ, the Q ∈ O(r) maximising tr(Qᵀ·M) is Q = P·Sᵀ, the orthogonal factor of M's polar
/// decomposition M = Q·H (H = Qᵀ·M symmetric positive semidefinite). It is computed by one-sided
/// (Hestenes) Jacobi on the columns of W = M: rotations J in the (p, q) plane, W ← W·J, V ← V·J,
/// until the columns are orthogonal (|w_pᵀw_q| ≤ ε·‖w_p‖·‖w_q‖ for every pair); then W = P·Σ with
/// σ_j = ‖w_j‖, P's columns w_j/σ_j, S = V and Q = P·Vᵀ. M is never squared (MᵀM would square
/// κ(M)), so Q is accurate whenever σ_r(M) is not negligible against σ₁(M).
/// A column of W that vanishes (M singular) leaves that column of P free: it is completed to an
/// orthonormal basis (Gram–Schmidt of unit vectors), one of the equally optimal rotations.
/// Cost: 6r³ flops per sweep; 5–10 sweeps for r ≤ 64 in practice.

#include <cmath>

#include "lola/core/config.hpp"
#include "lola/linalg/jacobi_eigen.hpp"

namespace lola::detail {

/// Scalars of workspace procrustes_rotation needs for r×r.
LOLA_HOST_DEVICE constexpr int procrustes_workspace_size(int r) { return 2 * r * r; }

/// Q (r×r, column-major) = the Procrustes rotation of m (r×r, column-major; not modified), and
/// *ratio = σ_r(M)/σ₁(M) (0 for a zero M): Q is unique only when it is > 0. work holds
/// procrustes_workspace_size(r) scalars. False when m is not finite or the sweeps ran out.
template <class S>
LOLA_HOST_DEVICE bool procrustes_rotation(const S* m, int r, S* q, S* work, S* ratio) {
  using std::abs;
  using std::sqrt;
  const S eps = kernel_limits<S>::epsilon;
  S* w = work;          // W = M·V, column-major
  S* v = work + r * r;  // V, accumulated rotations
  for (int i = 0; i < r * r; ++i) {
    if (!(abs(m[i]) <= kernel_limits<S>::max)) return false;
    w[i] = m[i];
    v[i] = S(i % r == i / r);
  }
  bool converged = r < 2;
  for (int sweep = 0; sweep < jacobi_max_sweeps && !converged; ++sweep) {
    converged = true;
    for (int p = 0; p + 1 < r; ++p)
      for (int c = p + 1; c < r; ++c) {
        S alpha = 0, beta = 0, gamma = 0;
        for (int i = 0; i < r; ++i) {
          const S wp = w[i + p * r], wq = w[i + c * r];
          alpha += wp * wp;
          beta += wq * wq;
          gamma += wp * wq;
        }
        if (!(abs(gamma) > eps * sqrt(alpha) * sqrt(beta))) continue;
        converged = false;
        // Rutishauser's rotation zeroing the (p, c) entry of WᵀW: ζ = (β − α)/(2γ).
        const S zeta = (beta - alpha) / (S(2) * gamma);
        const S t = (zeta >= 0 ? S(1) : S(-1)) / (abs(zeta) + sqrt(S(1) + zeta * zeta));
        const S cs = S(1) / sqrt(S(1) + t * t), sn = cs * t;
        for (int i = 0; i < r; ++i) {
          const S wp = w[i + p * r], wq = w[i + c * r];
          w[i + p * r] = cs * wp - sn * wq;
          w[i + c * r] = sn * wp + cs * wq;
          const S vp = v[i + p * r], vq = v[i + c * r];
          v[i + p * r] = cs * vp - sn * vq;
          v[i + c * r] = sn * vp + cs * vq;
        }
      }
  }
  if (!converged) return false;
  // σ_j = ‖w_j‖; P's columns w_j/σ_j, written into w. A column negligible against σ₁ is dropped
  // (zeroed) and completed below.
  S largest = 0, smallest = kernel_limits<S>::max;
  for (int j = 0; j < r; ++j) {
    S norm2 = 0;
    for (int i = 0; i < r; ++i) norm2 += w[i + j * r] * w[i + j * r];
    const S sigma = sqrt(norm2);
    largest = sigma > largest ? sigma : largest;
    smallest = sigma < smallest ? sigma : smallest;
  }
  *ratio = largest > 0 ? smallest / largest : S(0);
  const S negligible = S(r) * eps * largest;
  for (int j = 0; j < r; ++j) {
    S norm2 = 0;
    for (int i = 0; i < r; ++i) norm2 += w[i + j * r] * w[i + j * r];
    const S sigma = sqrt(norm2);
    for (int i = 0; i < r; ++i) w[i + j * r] = sigma > negligible ? w[i + j * r] / sigma : S(0);
  }
  // Complete the dropped columns: the first unit vector e_k that keeps a component of at least 1/2
  // after removing the kept columns (two Gram–Schmidt passes), normalised.
  for (int j = 0; j < r; ++j) {
    bool zero = true;
    for (int i = 0; i < r && zero; ++i) zero = w[i + j * r] == S(0);
    if (!zero) continue;
    for (int k = 0; k < r; ++k) {
      for (int i = 0; i < r; ++i) w[i + j * r] = S(i == k);
      for (int pass = 0; pass < 2; ++pass)
        for (int l = 0; l < r; ++l) {
          if (l == j) continue;
          S dot = 0;
          for (int i = 0; i < r; ++i) dot += w[i + l * r] * w[i + j * r];
          for (int i = 0; i < r; ++i) w[i + j * r] -= dot * w[i + l * r];
        }
      S norm2 = 0;
      for (int i = 0; i < r; ++i) norm2 += w[i + j * r] * w[i + j * r];
      if (norm2 >= S(0.25)) {
        const S norm = sqrt(norm2);
        for (int i = 0; i < r; ++i) w[i + j * r] /= norm;
        break;
      }
      for (int i = 0; i < r; ++i) w[i + j * r] = S(0);
    }
  }
  // Q = P·Vᵀ.
  for (int c = 0; c < r; ++c)
    for (int i = 0; i < r; ++i) {
      S sum = 0;
      for (int l = 0; l < r; ++l) sum += w[i + l * r] * v[c + l * r];
      q[i + c * r] = sum;
    }
  return true;
}

/// Work item i of a batch of n Procrustes problems of one rank r (backend/thrust/batched_procrustes.hpp):
/// M_i at m + i·r², Q_i at q + i·r² (column-major), ratio_i at ratio[i], procrustes_workspace_size(r)
/// scalars of work at work + i·procrustes_workspace_size(r); ok[i] = 1 when solved, 0 when M_i is not
/// finite or the sweeps ran out.
template <class S>
struct procrustes_item {
  const S* m;
  S* q;
  S* ratio;
  S* work;
  int* ok;
  int r;

  LOLA_HOST_DEVICE void operator()(index i) const {
    const index rr = index(r) * r;
    ok[i] = procrustes_rotation(m + i * rr, r, q + i * rr, work + i * procrustes_workspace_size(r), ratio + i) ? 1 : 0;
  }
};

}  // namespace lola::detail
