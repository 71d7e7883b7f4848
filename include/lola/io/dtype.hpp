#pragma once
/// @file
/// The safetensors element types: names, bit sizes, and the little-endian conversions lola does
/// for the four floating types it computes with (F64, F32, F16, BF16).
///
/// Conversions read and write bytes one element at a time through integer assembly, never through a
/// typed pointer into the file, so a tensor at any byte offset is read correctly (files need not be
/// aligned: MLX writes unpadded headers) and the result does not depend on the host's byte order.
///
/// Finiteness: decode_finite_elements converts and finds the first value that is not finite in
/// the compute type (NaN or ±inf stored, or a finite F64 beyond float's range) in the same pass,
/// block by block while the block is in cache; encode_elements reports the first finite value that
/// the target dtype rounds to ±inf (|x| ≥ 65520 for F16).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <Eigen/Core>

#include "lola/core/error.hpp"
#include "lola/core/widen.hpp"

namespace lola::io {

/// The safetensors dtypes, in the reference implementation's declaration order. The reference
/// writer orders tensors by this enum descending, then by name, so the order is part of the format.
enum class dtype : std::uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

namespace detail {
struct dtype_entry {
  dtype type;
  std::string_view name;
  unsigned bits;
};
inline constexpr dtype_entry dtype_table[] = {
    {dtype::BOOL, "BOOL", 8},         {dtype::F4, "F4", 4},
    {dtype::F6_E2M3, "F6_E2M3", 6},   {dtype::F6_E3M2, "F6_E3M2", 6},
    {dtype::U8, "U8", 8},             {dtype::I8, "I8", 8},
    {dtype::F8_E5M2, "F8_E5M2", 8},   {dtype::F8_E4M3, "F8_E4M3", 8},
    {dtype::F8_E8M0, "F8_E8M0", 8},   {dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {dtype::I16, "I16", 16},          {dtype::U16, "U16", 16},
    {dtype::F16, "F16", 16},          {dtype::BF16, "BF16", 16},
    {dtype::I32, "I32", 32},          {dtype::U32, "U32", 32},
    {dtype::F32, "F32", 32},          {dtype::C64, "C64", 64},
    {dtype::F64, "F64", 64},          {dtype::I64, "I64", 64},
    {dtype::U64, "U64", 64},
};
}  // namespace detail

/// The name as written in a safetensors header: "F32", "BF16", ...
inline std::string_view dtype_name(dtype t) noexcept {
  return detail::dtype_table[static_cast<std::size_t>(t)].name;
}

/// Bits per element (4 for F4, 6 for the F6 types).
inline unsigned dtype_bits(dtype t) noexcept {
  return detail::dtype_table[static_cast<std::size_t>(t)].bits;
}

/// The dtype with this exact (case-sensitive) name, or nullopt.
inline std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  for (const auto& entry : detail::dtype_table)
    if (entry.name == name) return entry.type;
  return std::nullopt;
}

/// Whether lola converts this dtype for math: F64, F32, F16 and BF16.
inline bool is_math_dtype(dtype t) noexcept {
  return t == dtype::F64 || t == dtype::F32 || t == dtype::F16 || t == dtype::BF16;
}

/// The largest finite value of a math dtype: 65504 (F16), (2 − 2⁻⁷)·2¹²⁷ ≈ 3.39e38 (BF16),
/// FLT_MAX (F32), DBL_MAX (F64); 0 for the others. Every |x| ≤ dtype_max(t) encodes to a finite
/// value (round to nearest).
inline double dtype_max(dtype t) noexcept {
  switch (t) {
    case dtype::F16: return 65504.0;
    case dtype::BF16: return 0x1.fep127;
    case dtype::F32: return static_cast<double>(std::numeric_limits<float>::max());
    case dtype::F64: return std::numeric_limits<double>::max();
    default: return 0;
  }
}

/// The dtype that stores S exactly: double → F64, float → F32, Eigen::half → F16,
/// Eigen::bfloat16 → BF16.
template <class S>
constexpr dtype dtype_of() noexcept {
  if constexpr (std::is_same_v<S, double>) return dtype::F64;
  else if constexpr (std::is_same_v<S, float>) return dtype::F32;
  else if constexpr (std::is_same_v<S, Eigen::half>) return dtype::F16;
  else {
    static_assert(std::is_same_v<S, Eigen::bfloat16>, "lola: no safetensors dtype for this type");
    return dtype::BF16;
  }
}

namespace detail {

inline bool host_is_little_endian() noexcept {
  const std::uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

/// The little-endian unsigned integer at p (any alignment): one memcpy on little-endian hosts
/// (which compilers turn into a plain load and vectorise in loops), byte assembly elsewhere.
template <class UInt>
inline UInt load_le(const std::byte* p) noexcept {
  UInt v = 0;
  if (host_is_little_endian()) {
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  for (std::size_t i = 0; i < sizeof(UInt); ++i)
    v |= static_cast<UInt>(std::to_integer<unsigned>(p[i])) << (8 * i);
  return v;
}

template <class UInt>
inline void store_le(std::byte* p, UInt v) noexcept {
  if (host_is_little_endian()) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
  for (std::size_t i = 0; i < sizeof(UInt); ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

/// The BF16 bits of a float rounded to nearest, ties to even: Eigen's conversion bit for bit (a NaN
/// becomes the quiet NaN 0x7FC0 with its sign), branch-free so that loops of it vectorize.
inline std::uint16_t narrow_to_bf16_bits(float v) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t nan = ((u >> 16) & 0x8000u) | 0x7FC0u;
  return static_cast<std::uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

inline void require_math_dtype(dtype t, std::string_view what) {
  if (!is_math_dtype(t))
    throw error(error_code::unsupported,
                std::string(what) + " has dtype " + std::string(dtype_name(t)) +
                    ", which lola does not convert for math (F64, F32, F16 and BF16 are supported)");
}

/// The index of the first element of v[0, n) that is not finite, or n. Scans blocks with a
/// branch-free test (|x| ≤ max is false for NaN and ±inf) that compilers vectorise.
template <class S>
std::size_t first_non_finite(const S* v, std::size_t n) noexcept {
  constexpr std::size_t block = 1024;
  const S largest = std::numeric_limits<S>::max();
  for (std::size_t begin = 0; begin < n; begin += block) {
    const std::size_t end = std::min(n, begin + block);
    using flag = std::conditional_t<sizeof(S) == 8, std::uint64_t, std::uint32_t>;  // lane-sized
    flag bad = 0;
    for (std::size_t i = begin; i < end; ++i) bad |= std::abs(v[i]) <= largest ? flag(0) : flag(1);
    if (bad)
      for (std::size_t i = begin; i < end; ++i)
        if (!(std::abs(v[i]) <= largest)) return i;
  }
  return n;
}

}  // namespace detail

/// Converts n elements of dtype t starting at bytes (little-endian, any alignment) to S.
/// `what` names the tensor in the error raised for a dtype that is not F64/F32/F16/BF16.
/// F16 and BF16 widen exactly; F64 → float rounds to nearest.
template <class S>
void decode_elements(const std::byte* bytes, dtype t, std::size_t n, S* out,
                     std::string_view what = "the tensor") {
  detail::require_math_dtype(t, what);
  if (t == dtype_of<S>() && detail::host_is_little_endian() && n > 0) {
    std::memcpy(out, bytes, n * sizeof(S));
    return;
  }
  switch (t) {
    case dtype::F64:
      for (std::size_t i = 0; i < n; ++i) {
        const auto bits = detail::load_le<std::uint64_t>(bytes + 8 * i);
        double v;
        std::memcpy(&v, &bits, sizeof v);
        out[i] = static_cast<S>(v);
      }
      break;
    case dtype::F32:
      for (std::size_t i = 0; i < n; ++i) {
        const auto bits = detail::load_le<std::uint32_t>(bytes + 4 * i);
        float v;
        std::memcpy(&v, &bits, sizeof v);
        out[i] = static_cast<S>(v);
      }
      break;
    case dtype::F16:
      for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<S>(lola::detail::widen_f16_bits(detail::load_le<std::uint16_t>(bytes + 2 * i)));
      break;
    default:  // BF16
      for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<S>(lola::detail::widen_bf16_bits(detail::load_le<std::uint16_t>(bytes + 2 * i)));
      break;
  }
}

/// Converts n elements of dtype t at bytes to S, like decode_elements, and returns the index of
/// the first converted value that is not finite (n when all are): NaN or ±inf in the file, or a
/// finite F64 value beyond S's range. Decoding stops at that block; out is then partly written.
template <class S>
std::size_t decode_finite_elements(const std::byte* bytes, dtype t, std::size_t n, S* out,
                                   std::string_view what = "the tensor") {
  detail::require_math_dtype(t, what);
  constexpr std::size_t block = 4096;  // 16 KiB of float: the scan reads what was just written
  if (t == dtype::F16 || t == dtype::BF16) {
    // 16-bit storage: non-finite exactly when the exponent bits are all ones (F16 0x7C00, BF16
    // 0x7F80), and every stored value is finite in float and double; tested in the converting
    // loop on the stored bits.
    const std::uint16_t exponent = t == dtype::F16 ? 0x7C00 : 0x7F80;
    for (std::size_t begin = 0; begin < n; begin += block) {
      const std::size_t end = std::min(n, begin + block);
      std::uint32_t bad = 0;
      if (t == dtype::F16) {
        for (std::size_t i = begin; i < end; ++i) {
          const auto bits = detail::load_le<std::uint16_t>(bytes + 2 * i);
          out[i] = static_cast<S>(lola::detail::widen_f16_bits(bits));
          bad |= (bits & exponent) == exponent ? 1u : 0u;
        }
      } else {
        for (std::size_t i = begin; i < end; ++i) {
          const auto bits = detail::load_le<std::uint16_t>(bytes + 2 * i);
          out[i] = static_cast<S>(lola::detail::widen_bf16_bits(bits));
          bad |= (bits & exponent) == exponent ? 1u : 0u;
        }
      }
      if (bad) return begin + detail::first_non_finite(out + begin, end - begin);
    }
    return n;
  }
  if (t == dtype::F32) {  // every F32 value is finite in float and double: the stored bits decide
    for (std::size_t begin = 0; begin < n; begin += block) {
      const std::size_t end = std::min(n, begin + block);
      std::uint32_t bad = 0;
      for (std::size_t i = begin; i < end; ++i) {
        const auto bits = detail::load_le<std::uint32_t>(bytes + 4 * i);
        float v;
        std::memcpy(&v, &bits, sizeof v);
        out[i] = static_cast<S>(v);
        bad |= (bits & 0x7F800000u) == 0x7F800000u ? 1u : 0u;
      }
      if (bad) return begin + detail::first_non_finite(out + begin, end - begin);
    }
    return n;
  }
  const std::size_t width = dtype_bits(t) / 8;  // F64: the converted values decide (float overflows)
  for (std::size_t begin = 0; begin < n; begin += block) {
    const std::size_t count = std::min(block, n - begin);
    decode_elements(bytes + begin * width, t, count, out + begin, what);
    const std::size_t bad = detail::first_non_finite(out + begin, count);
    if (bad < count) return begin + bad;
  }
  return n;
}

/// The index of the first of n elements of dtype t (F64, F32, F16 or BF16) at bytes that is NaN
/// or ±inf as stored, or n: a test of the exponent bits, block by block, that compilers vectorize,
/// with no conversion (what a reader that keeps the values as stored checks).
inline std::size_t first_non_finite_stored(const std::byte* bytes, dtype t, std::size_t n,
                                           std::string_view what = "the tensor") {
  detail::require_math_dtype(t, what);
  constexpr std::size_t block = 4096;
  auto scan = [&](auto zero, auto exponent) -> std::size_t {
    using bits_type = decltype(zero);
    for (std::size_t begin = 0; begin < n; begin += block) {
      const std::size_t end = std::min(n, begin + block);
      bits_type bad = 0;
      for (std::size_t i = begin; i < end; ++i)
        bad |= (detail::load_le<bits_type>(bytes + sizeof(bits_type) * i) & exponent) == exponent ? 1 : 0;
      if (bad)
        for (std::size_t i = begin; i < end; ++i)
          if ((detail::load_le<bits_type>(bytes + sizeof(bits_type) * i) & exponent) == exponent) return i;
    }
    return n;
  };
  switch (t) {
    case dtype::F64: return scan(std::uint64_t{0}, std::uint64_t{0x7FF0000000000000u});
    case dtype::F32: return scan(std::uint32_t{0}, std::uint32_t{0x7F800000u});
    case dtype::F16: return scan(std::uint16_t{0}, std::uint16_t{0x7C00u});
    default: return scan(std::uint16_t{0}, std::uint16_t{0x7F80u});
  }
}

/// What element i of a math-dtype tensor at bytes holds, for a message about a value that is not
/// finite in the compute type: "NaN", "inf", "-inf", or "1e+300, beyond the range of the compute
/// type" (a finite F64 that float cannot hold).
inline std::string describe_non_finite(const std::byte* bytes, dtype t, std::size_t i) {
  double stored = 0;
  decode_elements(bytes + i * (dtype_bits(t) / 8), t, 1, &stored);
  if (std::isnan(stored)) return "NaN";
  if (std::isinf(stored)) return stored > 0 ? "inf" : "-inf";
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", stored);
  return std::string(text) + ", beyond the range of the compute type";
}

/// Converts n values of S to dtype t (little-endian) at bytes, which holds n·bits/8 bytes.
/// Narrowing rounds to nearest, ties to even (Eigen's half and bfloat16 conversions); values
/// beyond the target's range become ±inf, as in PyTorch's casts. Returns the index of the first
/// finite value that became ±inf that way (n when none did); NaN and ±inf are encoded as they are.
template <class S>
std::size_t encode_elements(const S* values, std::size_t n, dtype t, std::byte* bytes,
                            std::string_view what = "the tensor") {
  detail::require_math_dtype(t, what);
  if (t == dtype_of<S>() && detail::host_is_little_endian() && n > 0) {
    std::memcpy(bytes, values, n * sizeof(S));
    return n;
  }
  // Block by block through local arrays, so that each loop is a plain map that compilers vectorize
  // (no early exit, no store through std::byte*): the target's bits, then one copy out. A block in
  // which some value became ±inf is searched again for the first finite value that did.
  constexpr std::size_t block = 256;
  std::size_t overflow = n;
  const auto encode_block = [&](auto zero, auto encode_bits, auto infinite_bits) {
    using bits_type = decltype(zero);
    bits_type bits[block];
    for (std::size_t begin = 0; begin < n; begin += block) {
      const std::size_t count = std::min(block, n - begin);
      const S* v = values + begin;
      bits_type any_infinite = 0;
      for (std::size_t i = 0; i < count; ++i) {
        bits[i] = encode_bits(v[i]);
        any_infinite |= infinite_bits(bits[i]) ? 1 : 0;
      }
      if (detail::host_is_little_endian())
        std::memcpy(bytes + begin * sizeof(bits_type), bits, count * sizeof(bits_type));
      else
        for (std::size_t i = 0; i < count; ++i) detail::store_le(bytes + (begin + i) * sizeof(bits_type), bits[i]);
      if (any_infinite && overflow == n)
        for (std::size_t i = 0; i < count; ++i)
          if (infinite_bits(bits[i]) && !Eigen::numext::isinf(v[i])) {
            overflow = begin + i;
            break;
          }
    }
  };
  switch (t) {
    case dtype::F64:
      encode_block(
          std::uint64_t{0}, [](S x) { return Eigen::numext::bit_cast<std::uint64_t>(static_cast<double>(x)); },
          [](std::uint64_t b) { return (b & 0x7FFFFFFFFFFFFFFFu) == 0x7FF0000000000000u; });
      break;
    case dtype::F32:
      encode_block(
          std::uint32_t{0}, [](S x) { return Eigen::numext::bit_cast<std::uint32_t>(static_cast<float>(x)); },
          [](std::uint32_t b) { return (b & 0x7FFFFFFFu) == 0x7F800000u; });
      break;
    case dtype::F16:
      encode_block(
          std::uint16_t{0},
          [](S x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(static_cast<float>(x))); },
          [](std::uint16_t b) { return (b & 0x7FFFu) == 0x7C00u; });
      break;
    default:
      encode_block(
          std::uint16_t{0}, [](S x) { return detail::narrow_to_bf16_bits(static_cast<float>(x)); },
          [](std::uint16_t b) { return (b & 0x7FFFu) == 0x7F80u; });
      break;
  }
  return overflow;
}

}  // namespace lola::io
