#pragma once
/// @file
/// Exact widening of stored floating values to a compute scalar: BF16 and F16 to float (and
/// double), float to double. Every value of the narrower type is exactly representable in the
/// wider one, so these are bit-exact conversions; the loops are branch-free so that compilers
/// vectorize them at any instruction-set level (plain SSE2 included, where Eigen's scalar
/// half-to-float conversion does not vectorize).
///   BF16: the upper 16 bits of a float, so bits << 16.
///   F16:  with em the 15 bits below the sign, the float with bits em << 13 is the half's value
///         times 2⁻¹¹², exactly, normals and subnormals alike (a half subnormal m·2⁻²⁴ becomes
///         the float subnormal m·2⁻¹³⁶); one multiplication by 2¹¹² restores it. Infinities and
///         NaNs (em ≥ 0x7C00) take the float exponent of all ones, the NaN payload shifted along.
///         This needs subnormal floats to be honoured (no flush-to-zero or denormals-are-zero
///         mode, which -ffast-math programs turn on: there a subnormal half widens to 0).

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Eigen/Core>

#include "lola/core/config.hpp"

namespace lola::detail {

/// The float with the given bits.
inline float float_from_bits(std::uint32_t bits) noexcept {
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

/// The float value of BF16 bits.
inline float widen_bf16_bits(std::uint16_t bits) noexcept { return float_from_bits(std::uint32_t{bits} << 16); }

/// The float value of F16 bits (see the file comment).
inline float widen_f16_bits(std::uint16_t bits) noexcept {
  const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16;
  const std::uint32_t em = bits & 0x7FFFu;
  const float magnitude = float_from_bits(em << 13) * 0x1p112f;
  std::uint32_t out;
  std::memcpy(&out, &magnitude, sizeof out);
  out = em >= 0x7C00u ? (em << 13) | 0x7F800000u : out;
  return float_from_bits(out | sign);
}

/// The 16 stored bits of a half or bfloat16.
template <class T>
std::uint16_t stored_bits(const T& v) noexcept {
  static_assert(sizeof(T) == 2, "lola: 16-bit storage types only");
  std::uint16_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}

/// v converted to S: T is Eigen::bfloat16, Eigen::half, float or double. Exact when S is at least
/// as wide as T; double to float rounds to nearest (static_cast).
template <class S, class T>
S widen_value(const T& v) noexcept {
  if constexpr (std::is_same_v<T, Eigen::bfloat16>)
    return static_cast<S>(widen_bf16_bits(stored_bits(v)));
  else if constexpr (std::is_same_v<T, Eigen::half>)
    return static_cast<S>(widen_f16_bits(stored_bits(v)));
  else
    return static_cast<S>(v);
}

/// out[i] = widen_value<S>(in[i]) for i < n.
template <class T, class S>
void widen(const T* in, index n, S* out) noexcept {
  for (index i = 0; i < n; ++i) out[i] = widen_value<S>(in[i]);
}

}  // namespace lola::detail
