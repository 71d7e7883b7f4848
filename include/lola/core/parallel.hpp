#pragma once
/// @file
/// Parallel loops over independent items (the modules of an adapter, the adapters of a batch).
///
/// parallel_for(ex, n, f) calls f(i) for i in [0, n), across the executor's OpenMP threads when lola
/// is built with OpenMP (the lola::lola target links it when found; lola::headers never does) and
/// serially otherwise. Items are scheduled
/// dynamically, since module shapes differ. An exception thrown by any f(i) stops the remaining
/// items from starting and the one from the lowest index i is rethrown on the calling thread
/// (exceptions never cross an OpenMP region boundary). Eigen's own GEMM threading is not used
/// inside the loop: Eigen detects the enclosing parallel region.
///
/// The default executor's thread count comes from OpenMP (OMP_NUM_THREADS), clamped to [1, parallel_thread_cap()]:
/// libgomp takes OMP_NUM_THREADS=100000 at its word and crashes creating the team, and reads
/// 2^40 as 0. An absurd count is also clamped in OpenMP itself for the program's initial thread
/// (omp_set_num_threads, once, at start-up, and only when the count is out of range), so that
/// Eigen's own parallel GEMM, which asks OpenMP for its count, is safe too.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <type_traits>
#include <utility>
#include <iterator>
#include <thread>
#include <vector>

#include "lola/core/config.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace lola {

/// The most threads lola runs: 4 × the hardware threads, within [4, 1024] (1024 where the count
/// is unknown).
inline int parallel_thread_cap() {
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1024 : static_cast<int>(std::clamp(4u * std::min(hardware, 1024u), 4u, 1024u));
}

/// The number of threads parallel_for uses: OpenMP's count (OMP_NUM_THREADS) within
/// [1, parallel_thread_cap()], a count OpenMP reports as ≤ 0 (one beyond int) taken as the cap;
/// 1 without OpenMP.
inline int parallel_threads() {
#if defined(_OPENMP)
  const int requested = omp_get_max_threads();
  const int cap = parallel_thread_cap();
  return requested <= 0 || requested > cap ? cap : requested;
#else
  return 1;
#endif
}

namespace detail {
/// Sets the calling thread's OpenMP count to parallel_threads() when it is out of range; true when
/// it did.
inline bool clamp_openmp_threads() {
#if defined(_OPENMP)
  const int requested = omp_get_max_threads();
  if (requested == parallel_threads()) return false;
  omp_set_num_threads(parallel_threads());
  return true;
#else
  return false;
#endif
}

/// Runs clamp_openmp_threads once per program, at start-up (libgomp reads OMP_NUM_THREADS
/// before any static initialiser of the program runs).
inline const bool openmp_threads_clamped = clamp_openmp_threads();
}  // namespace detail

/// How a call runs: passed per call to the entry points that loop over modules or adapters, so
/// that no global state (OMP_NUM_THREADS, omp_set_num_threads) has to change between calls. On the
/// CPU it carries the thread count; a GPU backend's context carries its stream the same way.
struct executor {
  /// Threads for the call: 0 (the default) means parallel_threads(); any other count is clamped
  /// to [1, parallel_thread_cap()]. Without OpenMP every call runs on the calling thread.
  int threads = 0;

  int thread_count() const noexcept {
    return threads == 0 ? parallel_threads() : std::clamp(threads, 1, parallel_thread_cap());
  }
  /// One thread: the calling one.
  static executor serial() noexcept { return executor{1}; }
};

/// How a pass over the modules of an adapter runs: on which threads, and whom it tells as each
/// module is done.
struct module_pass {
  executor ex{};
  /// Called once per module when it is done, with the number of modules in the pass (for a
  /// progress display); called from the executor's threads, so it must be safe to call
  /// concurrently.
  std::function<void(std::size_t modules)> module_done;
};

/// Items a thread takes at once so that each of the executor's threads gets about 8 runs of
/// consecutive items from n: for items of microseconds (an r×r spectrum, a copy of σ), where
/// taking them one at a time costs more than the items in the shared counter and in cache lines
/// that neighbouring items' results share between threads.
inline index fine_grain(const executor& ex, index n) {
  return std::max<index>(1, n / (8 * static_cast<index>(ex.thread_count())));
}

/// Calls f(i) for i in [0, n) on the executor's threads (see the file comment), each thread taking
/// `grain` consecutive items at a time (≥ 1; fine_grain for cheap items).
template <class F>
void parallel_for(const executor& ex, index n, F&& f, index grain = 1) {
  std::exception_ptr first_error;
  index first_error_index = n;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
#if defined(_OPENMP)
  const int threads = static_cast<int>(std::min<index>(ex.thread_count(), std::max<index>(n, 1)));
  const index chunk = std::max<index>(grain, 1);
#pragma omp parallel for schedule(dynamic, chunk) num_threads(threads) if (threads > 1)
#else
  (void)ex;
  (void)grain;
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

/// parallel_for on the default executor.
template <class F>
void parallel_for(index n, F&& f) {
  parallel_for(executor{}, n, std::forward<F>(f));
}

/// { f(items[0]), f(items[1]), … } computed with parallel_for on the executor.
template <class Items, class F>
auto parallel_map(const executor& ex, const Items& items, F&& f) {
  using result = std::decay_t<decltype(f(*std::begin(items)))>;
  const index n = static_cast<index>(std::size(items));
  std::vector<result> out(static_cast<std::size_t>(n));
  parallel_for(ex, n, [&](index i) { out[static_cast<std::size_t>(i)] = f(items[static_cast<std::size_t>(i)]); });
  return out;
}

template <class Items, class F>
auto parallel_map(const Items& items, F&& f) {
  return parallel_map(executor{}, items, std::forward<F>(f));
}

}  // namespace lola
