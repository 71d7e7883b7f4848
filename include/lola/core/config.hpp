#pragma once
/// @file
/// Configuration macros shared by every header.
///
/// LOLA_HOST_DEVICE marks small functors that run on the host and, under nvcc, on the device.
/// LOLA_ASSERT guards internal invariants only; anything a caller or a file can get wrong is a
/// lola::error (core/error.hpp), checked in release builds too.
/// LOLA_PREFETCH(address) hints that a cache line will be read soon (a no-op where unsupported).

#include <cstdio>
#include <cstdlib>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LOLA_HOST_DEVICE __host__ __device__
#else
#define LOLA_HOST_DEVICE
#endif

#ifdef NDEBUG
#define LOLA_ASSERT(condition) static_cast<void>(0)
#else
#define LOLA_ASSERT(condition)                                                                   \
  ((condition) ? static_cast<void>(0)                                                           \
               : (std::fprintf(stderr, "%s:%d: lola internal invariant violated: %s\n", __FILE__, \
                               __LINE__, #condition),                                            \
                  std::abort()))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LOLA_PREFETCH(address) __builtin_prefetch(address)
#else
#define LOLA_PREFETCH(address) static_cast<void>(address)
#endif

namespace lola {
/// Index type of every dimension: the same as Eigen::Index.
using index = std::ptrdiff_t;
}  // namespace lola
