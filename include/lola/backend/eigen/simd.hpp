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

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "lola/core/config.hpp"
#include "lola/core/widen.hpp"

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

template <class F, int... I>
LOLA_ALWAYS_INLINE void unrolled_over(F& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
/// f(0), f(1), …, f(N − 1), each index a std::integral_constant: the loop over a register tile
/// written out at compile time, so that the tile's accumulators (arrays indexed by it) are
/// registers at -O2 as at -O3 (GCC unrolls such loops itself only at -O3; at -O2 the Gram tiles
/// kept their sums in memory and ran 3× slower).
template <int N, class F>
LOLA_ALWAYS_INLINE void unrolled(F&& f) {
  unrolled_over(f, std::make_integer_sequence<int, N>{});
}
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

/// out[i] = widen_value<S>(in[i]) for i < n (core/widen.hpp, the same values), 32 bytes of S at a
/// time: the widening loops of the blocked kernels, which GCC vectorizes by itself only at -O3 (at
/// -O2 the scalar conversion took 40% of a BF16 Gram's time).
template <class S, class T>
LOLA_ALWAYS_INLINE void widen_run(const T* in, index n, S* out) {
  constexpr bool lanes = (std::is_same_v<S, float> || std::is_same_v<S, double>) &&
                        (std::is_same_v<T, Eigen::bfloat16> || std::is_same_v<T, Eigen::half> ||
                         (std::is_same_v<T, float> && std::is_same_v<S, double>));
  if constexpr (std::is_same_v<S, T>) {
    std::memcpy(out, in, std::size_t(n) * sizeof(S));
  } else if constexpr (!lanes) {  // double to float (rounding), integers, …: as widen_value converts
    for (index i = 0; i < n; ++i) out[i] = widen_value<S>(in[i]);
  } else {
    constexpr int k = 32 / int(sizeof(S));
    using halves = typename lane_type<std::uint16_t, 2 * k>::in_memory;
    using words = lane<std::uint32_t, 4 * k>;
    using floats = lane<float, 4 * k>;
    using floats_in_memory = typename lane_type<float, 4 * k>::in_memory;
    index i = 0;
    for (; i + k <= n; i += k) {
      floats f;
      if constexpr (std::is_same_v<T, Eigen::bfloat16>) {
        f = (floats)(__builtin_convertvector(*reinterpret_cast<const halves*>(in + i), words) << 16);
      } else if constexpr (std::is_same_v<T, Eigen::half>) {
        const words bits = __builtin_convertvector(*reinterpret_cast<const halves*>(in + i), words);
        const words em = bits & 0x7FFFu, sign = (bits & 0x8000u) << 16;
        const words magnitude = (words)((floats)(em << 13) * 0x1p112f);
        const words special = (words)(em >= 0x7C00u);  // all ones where infinite or NaN
        f = (floats)(((magnitude & ~special) | (((em << 13) | 0x7F800000u) & special)) | sign);
      } else {
        f = *reinterpret_cast<const floats_in_memory*>(in + i);
      }
      store_lane(out + i, __builtin_convertvector(f, lane<S, 32>));
    }
    for (; i < n; ++i) out[i] = widen_value<S>(in[i]);
  }
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
template <class S, class T>
void widen_run(const T* in, index n, S* out) {
  widen(in, n, out);
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
