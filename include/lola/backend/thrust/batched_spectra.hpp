#pragma once
/// @file
/// The singular values of many modules of one rank r from their Grams, one module per Thrust work
/// item: the r×r stage of the batched spectra algorithm (linalg/spectrum_from_grams.hpp), launched
/// with any Thrust execution policy. thrust::cuda::par runs it on the GPU, one thread per module;
/// thrust::cpp::par and thrust::omp::par run the very same functor on the CPU, which is how it is
/// tested on machines without a GPU. The Grams come from the Gram primitive of the backend that
/// holds the factors (backend/eigen/gram.hpp on the CPU, a strided batched GEMM on the GPU).
///
/// Needs Thrust (CCCL) on the include path; host systems compile with any C++17 compiler.
/// Memory: every pointer lives in the memory of the policy's system. Modules are stored one after
/// another: r×r column-major Grams, r singular values, spectrum_workspace_size(r) scalars of work.
/// Cost: O(n·r³) flops, no traffic beyond reading the Grams and writing σ.

#include <string>

#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/linalg/spectrum_from_grams.hpp"

namespace lola {

/// σ (descending, r per module) of n modules s_i·B_i·A_i of rank r, from b_grams (n r×r BᵀB),
/// a_grams (n r×r A·Aᵀ) and scales (n). `work` holds n·detail::spectrum_workspace_size(r)
/// scalars, `status` n ints: detail::gram_spectrum per module. A module with a factor outside the
/// Gram route (status needs_householder: κ > 4, rank-deficient, d < r or k < r) gets no σ; the
/// caller computes it by the Householder route, as the CPU's low_rank_svd does for that factor, so
/// that both reach the same accuracy. Throws lola::error (numerical), naming the first module
/// whose Grams were not finite or whose iteration did not converge; the other modules' results
/// are written. With x_b and x_a (n r×r each; work then n·detail::svd_workspace_size(r)) the
/// coefficients of the singular vectors too, U_i = B_i·X_B,i and V_i = A_iᵀ·X_A,i (svd_from_grams):
/// the r×r stage of whole-adapter canonical forms and resizes.
template <class Policy, class S>
void batched_spectra_from_grams(const Policy& policy, index n, int r, const S* b_grams,
                                const S* a_grams, const S* scales, S* sigma, S* work, int* status,
                                S* x_b = nullptr, S* x_a = nullptr) {
  if (n < 0 || r < 0)
    throw error(error_code::invalid_argument,
                "batched_spectra_from_grams: negative count (" + std::to_string(n) +
                    " modules of rank " + std::to_string(r) + ")");
  if (n == 0) return;
  thrust::for_each(policy, thrust::counting_iterator<index>(0), thrust::counting_iterator<index>(n),
                   detail::spectrum_from_grams_item<S>{b_grams, a_grams, scales, sigma, work,
                                                       status, r, {}, x_b, x_a});
  const int* failed = thrust::find(policy, status, status + n, 0);
  if (failed != status + n)
    throw error(error_code::numerical,
                "batched_spectra_from_grams: module " + std::to_string(failed - status) + " of " +
                    std::to_string(n) +
                    ": its Grams or scale are not finite, or the Jacobi iteration did not converge");
}

}  // namespace lola
