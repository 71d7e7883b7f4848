#pragma once
/// @file
/// Parallel loops over independent items (the modules of an adapter, the adapters of a batch).
///
/// parallel_for(n, f) calls f(i) for i in [0, n), across OpenMP threads when lola is built with
/// OpenMP (the lola::lola target links it when found) and serially otherwise. Items are scheduled
/// dynamically, since module shapes differ. An exception thrown by any f(i) stops the remaining
/// items from starting and the one from the lowest index i is rethrown on the calling thread
/// (exceptions never cross an OpenMP region boundary). Eigen's own GEMM threading is not used
/// inside the loop: Eigen detects the enclosing parallel region.

#include <atomic>
#include <exception>
#include <mutex>
#include <type_traits>
#include <utility>
#include <iterator>
#include <vector>

#include "lola/core/config.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace lola {

/// The number of threads parallel_for uses (1 without OpenMP).
inline int parallel_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <class F>
void parallel_for(index n, F&& f) {
  std::exception_ptr first_error;
  index first_error_index = n;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (index i = 0; i < n; ++i) {
    if (failed) continue;
    try {
      f(i);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (i < first_error_index) {
        first_error_index = i;
        first_error = std::current_exception();
      }
      failed = true;
    }
  }
  if (first_error) std::rethrow_exception(first_error);
}

/// { f(items[0]), f(items[1]), … } computed with parallel_for.
template <class Items, class F>
auto parallel_map(const Items& items, F&& f) {
  using result = std::decay_t<decltype(f(*std::begin(items)))>;
  const index n = static_cast<index>(std::size(items));
  std::vector<result> out(static_cast<std::size_t>(n));
  parallel_for(n, [&](index i) { out[static_cast<std::size_t>(i)] = f(items[static_cast<std::size_t>(i)]); });
  return out;
}

}  // namespace lola
