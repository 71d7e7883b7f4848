// The Thrust-launched kernels compiled by nvcc for the device (thrust::cuda::par), float and
// double: a compile check that they stay device code (no host-only call, no Eigen, no exception).
// Built by the test lola.compile.device where nvcc is found; nothing here runs.
#include <thrust/execution_policy.h>

#include "lola/backend/thrust/batched_procrustes.hpp"
#include "lola/backend/thrust/batched_spectra.hpp"

template <class S>
void launch_on_device(lola::index n, int r, const S* grams, const S* scales, S* sigma, S* work,
                      int* status) {
  lola::batched_spectra_from_grams(thrust::cuda::par, n, r, grams, grams, scales, sigma, work,
                                   status);
}

template void launch_on_device<float>(lola::index, int, const float*, const float*, float*, float*,
                                      int*);
template void launch_on_device<double>(lola::index, int, const double*, const double*, double*,
                                       double*, int*);

template <class S>
void procrustes_on_device(lola::index n, int r, const S* m, S* q, S* ratio, S* work, int* ok) {
  lola::batched_procrustes(thrust::cuda::par, n, r, m, q, ratio, work, ok);
}

template void procrustes_on_device<float>(lola::index, int, const float*, float*, float*, float*, int*);
template void procrustes_on_device<double>(lola::index, int, const double*, double*, double*, double*, int*);
