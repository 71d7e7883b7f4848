#pragma once
/// @file
/// The eigen-decomposition of a small symmetric n×n matrix by cyclic Jacobi rotations, on plain
/// column-major storage and callable from device code (LOLA_HOST_DEVICE): the per-item r×r kernel
/// of the batched primitives, which a GPU runs one item per thread and the CPU through Thrust's
/// host systems or a plain loop. No allocation, no Eigen, no exceptions.
///
/// Each rotation J in the (p, q) plane zeroes a_pq of A ← JᵀAJ (Rutishauser's formulas:
/// θ = (a_qq − a_pp)/(2a_pq), t = sgn θ/(|θ| + √(θ² + 1)), c = 1/√(t² + 1), s = t·c). A pair is
/// skipped when |a_pq| ≤ ε·√|a_pp·a_qq|, the Demmel–Veselić criterion, under which the
/// eigenvalues of a positive definite matrix come out with small relative error; a sweep without
/// a rotation ends the iteration. Convergence is quadratic: 5–10 sweeps for n ≤ 64 in practice.
/// Cost: 4n³ flops per sweep for the eigenvalues, another 2n³ with the eigenvectors.

#include <cfloat>
#include <cmath>

#include "lola/core/config.hpp"

namespace lola::detail {

/// ε and the largest finite value of the compute scalars, usable in device code (where
/// std::numeric_limits, a host constexpr, is not).
template <class S>
struct kernel_limits;
template <>
struct kernel_limits<float> {
  static constexpr float epsilon = FLT_EPSILON, max = FLT_MAX;
};
template <>
struct kernel_limits<double> {
  static constexpr double epsilon = DBL_EPSILON, max = DBL_MAX;
};

/// Sweeps after which jacobi_eigen gives up (reports false).
inline constexpr int jacobi_max_sweeps = 40;

/// Diagonalises the symmetric n×n matrix `a` (column-major, leading dimension n, both triangles
/// stored; destroyed) as A = V·diag(w)·Vᵀ: writes the eigenvalues in descending order to w[0..n)
/// and, when `v` is not null, the orthonormal eigenvectors as the columns of v (n×n, column-major),
/// in the same order. Returns false when the matrix was not finite or the sweeps ran out.
template <class S>
LOLA_HOST_DEVICE bool jacobi_eigen(S* a, int n, S* w, S* v) {
  using std::abs;
  using std::sqrt;
  const S eps = kernel_limits<S>::epsilon;
  const S huge_theta = S(1) / eps;  // beyond it θ² + 1 would overflow or round to θ²
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      if (!(abs(a[i + j * n]) <= kernel_limits<S>::max)) return false;
      if (v) v[i + j * n] = S(i == j);
    }
  bool converged = n < 2;
  for (int sweep = 0; sweep < jacobi_max_sweeps && !converged; ++sweep) {
    converged = true;
    for (int p = 0; p + 1 < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const S apq = a[p + q * n], app = a[p + p * n], aqq = a[q + q * n];
        if (!(abs(apq) > eps * sqrt(abs(app)) * sqrt(abs(aqq)))) continue;
        converged = false;
        const S theta = (aqq - app) / (S(2) * apq);
        const S t = abs(theta) > huge_theta
                        ? S(0.5) / theta
                        : (theta < 0 ? S(-1) : S(1)) / (abs(theta) + sqrt(theta * theta + S(1)));
        const S c = S(1) / sqrt(t * t + S(1)), s = t * c;
        a[p + p * n] = app - t * apq;
        a[q + q * n] = aqq + t * apq;
        a[p + q * n] = a[q + p * n] = S(0);
        for (int k = 0; k < n; ++k) {
          if (k == p || k == q) continue;
          const S akp = a[k + p * n], akq = a[k + q * n];
          a[k + p * n] = a[p + k * n] = c * akp - s * akq;
          a[k + q * n] = a[q + k * n] = s * akp + c * akq;
        }
        if (v)
          for (int k = 0; k < n; ++k) {
            const S vkp = v[k + p * n], vkq = v[k + q * n];
            v[k + p * n] = c * vkp - s * vkq;
            v[k + q * n] = s * vkp + c * vkq;
          }
      }
  }
  for (int i = 0; i < n; ++i) w[i] = a[i + i * n];
  // Descending order; a selection sort keeps it allocation-free and moves each column once.
  for (int i = 0; i + 1 < n; ++i) {
    int largest = i;
    for (int j = i + 1; j < n; ++j)
      if (w[j] > w[largest]) largest = j;
    if (largest == i) continue;
    const S wi = w[i];
    w[i] = w[largest];
    w[largest] = wi;
    if (v)
      for (int k = 0; k < n; ++k) {
        const S vk = v[k + i * n];
        v[k + i * n] = v[k + largest * n];
        v[k + largest * n] = vk;
      }
  }
  return converged;
}

}  // namespace lola::detail
