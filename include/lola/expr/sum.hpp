#pragma once
/// @file
/// E₁ + E₂: the sum of two low-rank expressions of the same shape stays low-rank, with the ranks
/// adding: s₁B₁A₁ + s₂B₂A₂ = [s₁B₁  s₂B₂]·[A₁; A₂] (rank r₁ + r₂). Evaluation concatenates the
/// factors; it never adds d×k matrices. E₁ − E₂ is E₁ + (−1)·E₂.

#include <type_traits>
#include <utility>

#include "lola/core/shape.hpp"
#include "lola/expr/expr_base.hpp"
#include "lola/expr/scaled.hpp"

namespace lola {

template <class LHeld, class RHeld>
class sum : public expr_base<sum<LHeld, RHeld>> {
 public:
  using lhs_type = std::remove_cv_t<std::remove_reference_t<LHeld>>;
  using rhs_type = std::remove_cv_t<std::remove_reference_t<RHeld>>;
  static_assert(std::is_same_v<typename lhs_type::scalar, typename rhs_type::scalar>,
                "lola: cannot add low-rank expressions of different compute scalars (float and "
                "double); convert one first");
  static_assert(std::is_same_v<typename lhs_type::storage, typename rhs_type::storage>,
                "lola: cannot add low-rank expressions whose operands live in different memory");
  using scalar = typename lhs_type::scalar;
  using storage = typename lhs_type::storage;

  /// Throws shape_mismatch naming both shapes unless they are equal.
  template <class LArg, class RArg>
  sum(LArg&& lhs, RArg&& rhs) : lhs_(std::forward<LArg>(lhs)), rhs_(std::forward<RArg>(rhs)) {
    detail::require_shapes(lhs_.rows() == rhs_.rows() && lhs_.cols() == rhs_.cols(),
                           "sum of low-rank expressions", "the left operand", lhs_.rows(),
                           lhs_.cols(), "the right operand", rhs_.rows(), rhs_.cols());
  }

  index rows() const { return lhs_.rows(); }
  index cols() const { return lhs_.cols(); }
  index rank() const { return lhs_.rank() + rhs_.rank(); }
  const lhs_type& lhs() const { return lhs_; }
  const rhs_type& rhs() const { return rhs_; }

 private:
  LHeld lhs_;
  RHeld rhs_;
};

template <class L, class R,
          class = std::enable_if_t<is_low_rank_expr_v<L> && is_low_rank_expr_v<R>>>
auto operator+(L&& lhs, R&& rhs) {
  return sum<closure_t<L&&>, closure_t<R&&>>(std::forward<L>(lhs), std::forward<R>(rhs));
}

template <class L, class R,
          class = std::enable_if_t<is_low_rank_expr_v<L> && is_low_rank_expr_v<R>>>
auto operator-(L&& lhs, R&& rhs) {
  return std::forward<L>(lhs) + (-std::forward<R>(rhs));
}

}  // namespace lola
