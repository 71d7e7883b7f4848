#pragma once
/// @file
/// Eᵀ: (s·B·A)ᵀ = s·Aᵀ·Bᵀ, so the factors swap roles: B' = Aᵀ (k×r), A' = Bᵀ (r×d).
/// Evaluates to transposed views of E's factors when E's factors are themselves views.

#include <type_traits>
#include <utility>

#include "lola/expr/expr_base.hpp"

namespace lola {

template <class EHeld>
class transposed : public expr_base<transposed<EHeld>> {
 public:
  using inner_type = std::remove_cv_t<std::remove_reference_t<EHeld>>;
  using scalar = typename inner_type::scalar;
  using storage = typename inner_type::storage;

  template <class EArg>
  explicit transposed(EArg&& e) : e_(std::forward<EArg>(e)) {}

  index rows() const { return e_.cols(); }
  index cols() const { return e_.rows(); }
  index rank() const { return e_.rank(); }
  const inner_type& inner() const { return e_; }

 private:
  EHeld e_;
};

/// The transpose of a low-rank expression, lazily.
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
auto transpose(E&& e) {
  return transposed<closure_t<E&&>>(std::forward<E>(e));
}

}  // namespace lola
