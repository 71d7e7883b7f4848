#pragma once
/// @file
/// Configuration macros shared by every header.
///
/// LOLA_HOST_DEVICE marks small functors that run on the host and, under nvcc, on the device.
/// LOLA_PREFETCH(address) hints that a cache line will be read soon (a no-op where unsupported).

#include <cstddef>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LOLA_HOST_DEVICE __host__ __device__
#else
#define LOLA_HOST_DEVICE
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
