#pragma once
/// @file
/// Similarity of two modules of the same shape, from the factors (backend/eigen/reductions.hpp):
///   cosine_similarity(E₁, E₂) = ⟨ΔW₁, ΔW₂⟩_F / (‖ΔW₁‖_F·‖ΔW₂‖_F) ∈ [−1, 1],
/// defined as 0 when either matrix is zero. GL(r)-invariant in each argument separately.
/// O((d + k)·(r₁ + r₂)²).

#include <algorithm>

#include "lola/backend/eigen/reductions.hpp"

namespace lola {

template <class E1, class E2,
          class = std::enable_if_t<is_low_rank_expr_v<E1> && is_low_rank_expr_v<E2>>>
scalar_of_t<E1> cosine_similarity(const E1& e1, const E2& e2) {
  using S = scalar_of_t<E1>;
  const S dot = inner(e1, e2);
  const S n1 = norm(e1), n2 = norm(e2);
  if (!(n1 > 0) || !(n2 > 0)) return S(0);
  return std::clamp(dot / (n1 * n2), S(-1), S(1));
}

}  // namespace lola
