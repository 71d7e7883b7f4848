#pragma once
/// @file
/// Vector lanes for the hand-tiled host kernels (gram.hpp, thin_product.hpp), and the choice of
/// instruction set at run time.
///
/// A lane is one SIMD register of S. Where the compiler has GCC's vector extensions (GCC, Clang;
/// not nvcc or MSVC) it is a `vector_size` type of any width, whose +, * and broadcasts compile
/// to the instructions of the function they are inlined into; elsewhere it is Eigen's Array of
/// one packet. A kernel is written once over a lane width (`Bytes`) and always inlined, so the
/// same source compiles to SSE2 in an ordinary function and to AVX2 with fused multiply-adds in
/// one marked LOLA_TARGET_AVX2_FMA.
///
/// Dispatch (x86-64 with vector extensions, unless the translation unit is already compiled for
/// AVX2 and FMA, or LOLA_NO_ISA_DISPATCH is defined): kernels ask cpu_has_avx2_fma() and run
/// their AVX2 entry point when it holds. Binaries built for the x86-64 baseline (Debian's, the
/// lola tool's) thereby use the 256-bit units of the machine they run on; a translation unit
/// built with -mavx2 -mfma (or -march=native) uses its own width everywhere and needs no check.
/// The AVX2 and SSE2 paths add the same products in a different order (4 lanes against 2, fused
/// against separately rounded), so results agree to rounding, not bit for bit, across machines;
/// on one machine every call takes the same path. As with Eigen, the translation units of one
/// program should agree on their instruction-set flags (the kernels are inline templates).

#include <cstring>

#include <Eigen/Core>

#include "lola/core/config.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && !defined(__HIPCC__)
#define LOLA_VECTOR_EXTENSIONS 1
#define LOLA_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LOLA_VECTOR_EXTENSIONS 0
#define LOLA_ALWAYS_INLINE inline
#endif

#if LOLA_VECTOR_EXTENSIONS && defined(__x86_64__) && !(defined(__AVX2__) && defined(__FMA__)) && \
    !defined(LOLA_NO_ISA_DISPATCH)
#define LOLA_AVX2_DISPATCH 1
#define LOLA_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))
#else
#define LOLA_AVX2_DISPATCH 0
#endif

namespace lola {
namespace detail {

/// The width in bytes of the lanes the translation unit is compiled for: Eigen's packet of S
/// (16 with SSE2, 32 with AVX, 64 with AVX-512).
template <class S>
constexpr int native_lane_bytes = int(Eigen::internal::packet_traits<S>::size * sizeof(S));

#if LOLA_VECTOR_EXTENSIONS
template <class S, int Bytes>
struct lane_type {
  typedef S type __attribute__((vector_size(Bytes)));
  /// The same lane in memory: aligned to S only and allowed to alias S, so that it reads and
  /// writes any S array in place (a memcpy, folded before the kernel is inlined into its AVX2
  /// entry point, went through the stack).
  typedef S in_memory __attribute__((vector_size(Bytes), aligned(sizeof(S)), may_alias));
};
/// One register of Bytes / sizeof(S) values of S.
template <class S, int Bytes>
using lane = typename lane_type<S, Bytes>::type;

template <class L, class S>
LOLA_ALWAYS_INLINE void load_lane(L& v, const S* p) {
  v = *reinterpret_cast<const typename lane_type<S, int(sizeof(L))>::in_memory*>(p);
}
template <class L, class S>
LOLA_ALWAYS_INLINE void store_lane(S* p, const L& v) {
  *reinterpret_cast<typename lane_type<S, int(sizeof(L))>::in_memory*>(p) = v;
}
template <class L>
LOLA_ALWAYS_INLINE void zero_lane(L& v) {
  v = L{};
}
/// The sum of the lane's values, as a tree: (v₀ + v₁) + (v₂ + v₃), …
template <class S, class L>
LOLA_ALWAYS_INLINE S lane_sum(const L& v) {
  constexpr int width = int(sizeof(L) / sizeof(S));
  S part[width];
  std::memcpy(part, &v, sizeof v);
  for (int half = width / 2; half > 0; half /= 2)
    for (int i = 0; i < half; ++i) part[i] += part[i + half];
  return part[0];
}
#else
template <class S, int Bytes>
using lane = Eigen::Array<S, Bytes / int(sizeof(S)), 1>;

template <class L, class S>
void load_lane(L& v, const S* p) {
  v = Eigen::Map<const L>(p);
}
template <class L, class S>
void store_lane(S* p, const L& v) {
  Eigen::Map<L>(p) = v;
}
template <class L>
void zero_lane(L& v) {
  v.setZero();
}
template <class S, class L>
S lane_sum(const L& v) {
  return v.sum();
}
#endif

#if LOLA_AVX2_DISPATCH
/// Whether the processor (and the operating system, which must save the 256-bit registers) runs
/// AVX2 and FMA instructions; asked once.
inline bool cpu_has_avx2_fma() noexcept {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
}
#endif

}  // namespace detail
}  // namespace lola
