#pragma once
/// @file
/// Whether a factor X is conditioned well enough for the Gram route, decided from its Gram
/// G = XᵀX alone: κ(X)² = λ_max/λ_min ≤ limit. The one rule behind both the CPU's choice of route
/// per factor (linalg/column_space.hpp) and the batched r×r kernel (linalg/spectrum_from_grams.hpp),
/// on plain column-major storage and callable from device code. O(n²) in the common case:
///   Gershgorin's discs: λ_min ≥ minᵢ (Gᵢᵢ − Σ_{j≠i} |Gᵢⱼ|), λ_max ≤ maxᵢ (Gᵢᵢ + Σ_{j≠i} |Gᵢⱼ|),
///       which settle nearly orthogonal columns of similar norms;
///   otherwise Sylvester's law of inertia with one Cholesky (n³/6): λ_min ≥ τ iff G − τ·I is
///       positive semi-definite, so with τ = (the bound on λ_max)/limit a successful factorisation
///       proves the bound;
///   otherwise the eigenvalues themselves (cyclic Jacobi, linalg/jacobi_eigen.hpp).
/// False for a singular, indefinite or non-finite G.

#include <cmath>

#include "lola/core/config.hpp"
#include "lola/linalg/jacobi_eigen.hpp"

namespace lola::detail {

/// κ_max of the Gram route: a factor takes it when κ(X) ≤ 4, i.e. κ(X)² ≤ 16 (linalg/column_space.hpp
/// says why 4).
template <class S>
inline constexpr S gram_route_condition_limit = S(4);

/// Scalars of workspace gram_condition_within needs for n×n: 2n² + n.
LOLA_HOST_DEVICE constexpr int gram_condition_workspace_size(int n) { return 2 * n * n + n; }

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

/// λ_max(G) ≤ limit·λ_min(G) with λ_min > 0, for symmetric g (n×n, column-major, both triangles;
/// left unchanged); `work` holds gram_condition_workspace_size(n) scalars.
template <class S>
LOLA_HOST_DEVICE bool gram_condition_within(const S* g, int n, S limit, S* work) {
  using std::abs;
  if (n == 0) return true;
  S low = kernel_limits<S>::max, high = -kernel_limits<S>::max;
  for (int j = 0; j < n; ++j) {
    S off = 0;
    for (int i = 0; i < n; ++i) {
      if (!(abs(g[i + j * n]) <= kernel_limits<S>::max)) return false;
      if (i != j) off += abs(g[i + j * n]);
    }
    const S d = g[j + j * n];
    low = d - off < low ? d - off : low;
    high = d + off > high ? d + off : high;
  }
  if (low > 0 && high <= limit * low) return true;
  if (!(high > 0 && high <= kernel_limits<S>::max)) return false;
  const int nn = n * n;
  for (int i = 0; i < nn; ++i) work[i] = g[i];
  for (int j = 0; j < n; ++j) work[j + j * n] -= high / limit;
  if (cholesky_lower(work, n, work + nn)) return true;
  for (int i = 0; i < nn; ++i) work[i] = g[i];
  S* lambda = work + 2 * nn;
  if (!jacobi_eigen(work, n, lambda, static_cast<S*>(nullptr))) return false;
  return lambda[n - 1] > 0 && lambda[0] <= limit * lambda[n - 1];  // descending
}

}  // namespace lola::detail
