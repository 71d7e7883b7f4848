#pragma once
/// @file
/// Factors stored narrower than the compute scalar (BF16, F16 or float factors of a double
/// computation), widened whole: as_compute<S> of such a factor is Eigen's lazy cast, which Eigen's
/// own product converts while packing, at its slower speed. The Gram and thin-product kernels read
/// such casts themselves, block by block (factor_ref and the tiled kernels in gram.hpp, through
/// widening_scratch); with_widened serves the rest — a cross-Gram of a stored factor with an
/// operand stored in another type or without direct access, columns outside the tiles — handing it the factor
/// widened into a per-thread scratch buffer of S in the factor's own layout: one exact conversion
/// pass (core/widen.hpp, in lanes: simd.hpp's widen_run), no copy of the whole adapter, and the
/// values a decoded copy would have.
///
/// Recognised: cast<S>() of a plain matrix or Map with contiguous inner dimension, and the
/// transpose of that (Aᵀ of a stored A). Anything else is passed through unchanged.

#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/simd.hpp"
#include "lola/core/config.hpp"
#include "lola/core/widen.hpp"

namespace lola {
namespace detail {

/// What a cast expression widens: `inner` the stored matrix, T its scalar; `transposed` for the
/// transpose of a cast.
template <class X, class S>
struct widening {
  static constexpr bool value = false;
};
template <class T, class S, class Inner>
struct widening<Eigen::CwiseUnaryOp<Eigen::internal::scalar_cast_op<T, S>, const Inner>, S> {
  static constexpr bool value = (int(Inner::Flags) & Eigen::DirectAccessBit) && Inner::InnerStrideAtCompileTime == 1;
  static constexpr bool transposed = false;
  static constexpr int order = (int(Inner::Flags) & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
  using stored = T;
  template <class X>
  static const Inner& inner(const X& x) {
    return x.nestedExpression();
  }
};
template <class Cast, class S>
struct widening<Eigen::Transpose<const Cast>, S> : widening<Cast, S> {
  static constexpr bool transposed = true;
  template <class X>
  static decltype(auto) inner(const X& x) {
    return widening<Cast, S>::inner(x.nestedExpression());
  }
};

/// Whether X and Y are both recognised casts of data stored as one type (the kernels that widen
/// block by block take one stored type for both operands).
template <class X, class Y, class S, bool = widening<X, S>::value && widening<Y, S>::value>
struct widened_alike : std::false_type {};
template <class X, class Y, class S>
struct widened_alike<X, Y, S, true>
    : std::is_same<typename widening<X, S>::stored, typename widening<Y, S>::stored> {};
template <class X, class Y, class S>
constexpr bool widened_alike_v = widened_alike<X, Y, S>::value;

/// A per-thread buffer of S for operand `slot` (0 or 1: the two operands of a cross-Gram).
template <class S>
S* widening_scratch(int slot, index size) {
  thread_local std::vector<S> buffers[2];
  auto& b = buffers[slot];
  if (b.size() < static_cast<std::size_t>(size)) b.resize(static_cast<std::size_t>(size));
  return b.data();
}

/// f(x), with x widened to S in the per-thread scratch `slot` when it is a recognised cast of
/// stored data (see the file comment); f(x) itself otherwise.
template <class S, class X, class F>
decltype(auto) with_widened(const X& x, int slot, F&& f) {
  using w = widening<X, S>;
  if constexpr (w::value) {
    const auto& stored = w::inner(x);
    using plain = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, w::order>;
    const index outer = stored.outerSize(), inner = stored.innerSize();
    S* buffer = widening_scratch<S>(slot, outer * inner);
    for (index o = 0; o < outer; ++o)
      widen_run(stored.data() + o * stored.outerStride(), inner, buffer + o * inner);
    const Eigen::Map<const plain> widened(buffer, stored.rows(), stored.cols());
    if constexpr (w::transposed)
      return f(widened.transpose());
    else
      return f(widened);
  } else {
    return f(x);
  }
}

}  // namespace detail
}  // namespace lola
