#pragma once
/// @file
/// merge_into(W, e): W += ΔW; unmerge_from(W, e): W −= ΔW.
///
/// One GEMM accumulating straight into W (Eigen's noalias GEMM with β = 1 and α = ±s), so no d×k
/// temporary exists; O(d·k·r) flops and one read and write of W.
///
/// Aliasing: W may appear in the expression. A dense factor of a product node is consumed when the
/// factors are evaluated, before W changes. A factor that is a view of memory overlapping W, or an
/// expression that might read W, is copied first (O((d + k)·r), small next to the GEMM), so the
/// result always equals the mathematical W ± ΔW computed from the old W.

#include <type_traits>
#include <utility>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/core/shape.hpp"

namespace lola {
namespace detail {

/// Whether evaluating x could read memory that w occupies. Exact for objects with direct access
/// (address ranges), conservatively true for other expressions.
template <class X, class W>
bool may_read_memory_of(const X& x, const W& w) {
  if constexpr (!(static_cast<unsigned>(X::Flags) & Eigen::DirectAccessBit)) {
    return true;
  } else {
    if (x.size() == 0 || w.size() == 0) return false;
    const auto extent = [](const auto& m) {
      return (m.outerSize() - 1) * m.outerStride() + (m.innerSize() - 1) * m.innerStride() + 1;
    };
    const char* x_begin = reinterpret_cast<const char*>(x.data());
    const char* x_end = x_begin + extent(x) * sizeof(typename X::Scalar);
    const char* w_begin = reinterpret_cast<const char*>(w.data());
    const char* w_end = w_begin + extent(w) * sizeof(typename W::Scalar);
    return x_begin < w_end && w_begin < x_end;
  }
}

template <class W, class E>
void accumulate_product(W& w, const E& e, scalar_of_t<E> sign, const char* function) {
  using S = scalar_of_t<E>;
  static_assert(std::is_same_v<typename W::Scalar, S>,
                "lola: merge target W must have the expression's compute scalar");
  static_assert(static_cast<unsigned>(W::Flags) & Eigen::DirectAccessBit,
                "lola: merge target W must be a matrix, a Map, a Ref or a block of one");
  detail::require_shapes(w.rows() == e.rows() && w.cols() == e.cols(), function, "W", w.rows(),
                         w.cols(), "the low-rank expression", e.rows(), e.cols());
  decltype(auto) f = evaluator::factors(e);
  if (f.rank() == 0) return;
  const S alpha = sign * f.scale();
  if (may_read_memory_of(f.B(), w) || may_read_memory_of(f.A(), w)) {
    const dense_matrix<S> B = f.B().template cast<S>();
    const dense_matrix<S> A = f.A().template cast<S>();
    w.noalias() += alpha * B * A;
  } else {
    w.noalias() += alpha * as_compute<S>(f.B()) * as_compute<S>(f.A());
  }
}

}  // namespace detail

/// W += s·B·A. W is any writable Eigen matrix, Map, Ref or block of the expression's scalar.
template <class W, class E,
          class = std::enable_if_t<is_eigen_dense_v<W> && is_host_expr_v<E>>>
void merge_into(W&& w, const E& e) {
  detail::accumulate_product(w, e, scalar_of_t<E>(1), "merge_into");
}

/// W −= s·B·A, the inverse of merge_into up to rounding.
template <class W, class E,
          class = std::enable_if_t<is_eigen_dense_v<W> && is_host_expr_v<E>>>
void unmerge_from(W&& w, const E& e) {
  detail::accumulate_product(w, e, scalar_of_t<E>(-1), "unmerge_from");
}

}  // namespace lola
