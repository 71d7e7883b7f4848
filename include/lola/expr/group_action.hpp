#pragma once
/// @file
/// The symmetry of the factorization (DESIGN.md §1): G ∈ GL(r) acts on the rank index,
///   g·(B, A) = (B·G, G⁻¹·A),
/// and leaves ΔW = s·B·A unchanged. The O(r) subgroup acts as (B·Q, Qᵀ·A).
///
/// act(E, G) evaluates G⁻¹·A by an LU solve with partial pivoting, never an explicit inverse.
/// act_orthogonal(E, Q) uses Qᵀ, which is the inverse only for orthogonal Q; evaluation checks
/// ‖QᵀQ − I‖_max ≤ √ε and throws invalid_argument otherwise. A G that is singular to working
/// precision (reciprocal condition estimate below ε) is not in GL(r): evaluation throws
/// invalid_argument. Both are value checks, made at evaluation; shapes are checked here.

#include <type_traits>
#include <utility>

#include "lola/core/shape.hpp"
#include "lola/expr/expr_base.hpp"

namespace lola {

/// Which inverse the action uses.
enum class group { general_linear, orthogonal };

template <class EHeld, class GHeld, group Group>
class group_action : public expr_base<group_action<EHeld, GHeld, Group>> {
 public:
  using inner_type = std::remove_cv_t<std::remove_reference_t<EHeld>>;
  using element_type = std::remove_cv_t<std::remove_reference_t<GHeld>>;
  using scalar = typename inner_type::scalar;
  using storage = typename inner_type::storage;
  static constexpr group group_kind = Group;
  static_assert(std::is_same_v<typename element_type::Scalar, scalar>,
                "lola: the group element must have the expression's compute scalar");

  /// Throws shape_mismatch unless G is r×r with r the expression's rank.
  template <class EArg, class GArg>
  group_action(EArg&& e, GArg&& g) : e_(std::forward<EArg>(e)), g_(std::forward<GArg>(g)) {
    detail::require_shapes(g_.rows() == e_.rank() && g_.cols() == e_.rank(),
                           "group action (G must be r x r with r the rank)", "G", g_.rows(),
                           g_.cols(), "the factors' r x r", e_.rank(), e_.rank());
  }

  index rows() const { return e_.rows(); }
  index cols() const { return e_.cols(); }
  index rank() const { return e_.rank(); }
  const inner_type& inner() const { return e_; }
  const element_type& element() const { return g_; }

 private:
  EHeld e_;
  GHeld g_;
};

/// (B·G, G⁻¹·A) for G ∈ GL(r).
template <class E, class G,
          class = std::enable_if_t<is_low_rank_expr_v<E> && is_eigen_dense_v<G>>>
auto act(E&& e, G&& g) {
  return group_action<closure_t<E&&>, closure_t<G&&>, group::general_linear>(std::forward<E>(e),
                                                                            std::forward<G>(g));
}

/// (B·Q, Qᵀ·A) for Q ∈ O(r).
template <class E, class Q,
          class = std::enable_if_t<is_low_rank_expr_v<E> && is_eigen_dense_v<Q>>>
auto act_orthogonal(E&& e, Q&& q) {
  return group_action<closure_t<E&&>, closure_t<Q&&>, group::orthogonal>(std::forward<E>(e),
                                                                        std::forward<Q>(q));
}

}  // namespace lola
