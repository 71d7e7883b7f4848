#pragma once
/// @file
/// The Procrustes rotations of many modules of one rank r, one module per Thrust work item: the r×r
/// stage of O-Align (canon/o_align.hpp) for a batch, launched with any Thrust execution policy:
/// thrust::cuda::par runs linalg/procrustes.hpp's kernel on the GPU, one thread per module;
/// thrust::cpp::par and thrust::omp::par run the very same functor on the CPU, which is how it is
/// tested without a GPU. M_i = B_iᵀ·B̄_i + A_i·Ā_iᵀ comes from the cross-Gram primitive of the
/// backend that holds the factors.
///
/// Needs Thrust (CCCL) on the include path. Memory: every pointer lives in the memory of the policy's
/// system; modules one after another: r×r column-major M and Q, one ratio, procrustes_workspace_size(r)
/// scalars of work. Cost: O(n·r³) flops per sweep, no traffic beyond reading M and writing Q.

#include <string>

#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/linalg/procrustes.hpp"

namespace lola {

/// Q_i (r×r, the rotation minimising ‖B_i·Q − B̄_i‖² + ‖Aᵢᵀ·Q − Āᵢᵀ‖²) and ratio_i = σ_r(M_i)/σ₁(M_i)
/// for n modules from their M_i (see the file comment). `work` holds
/// n·detail::procrustes_workspace_size(r) scalars, `ok` n ints. Throws lola::error (numerical) naming
/// the first module whose M was not finite or whose sweeps did not converge; the others' results are
/// written.
template <class Policy, class S>
void batched_procrustes(const Policy& policy, index n, int r, const S* m, S* q, S* ratio, S* work, int* ok) {
  if (n < 0 || r < 0)
    throw error(error_code::invalid_argument, "batched_procrustes: negative count (" + std::to_string(n) +
                                                  " modules of rank " + std::to_string(r) + ")");
  if (n == 0) return;
  thrust::for_each(policy, thrust::counting_iterator<index>(0), thrust::counting_iterator<index>(n),
                   detail::procrustes_item<S>{m, q, ratio, work, ok, r});
  const int* failed = thrust::find(policy, ok, ok + n, 0);
  if (failed != ok + n)
    throw error(error_code::numerical, "batched_procrustes: module " + std::to_string(failed - ok) + " of " +
                                           std::to_string(n) +
                                           ": its M is not finite, or the Jacobi sweeps did not converge");
}

}  // namespace lola
