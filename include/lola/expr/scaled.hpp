#pragma once
/// @file
/// c·E: a scalar multiple of a low-rank expression. Evaluates to the factors of E with the scale
/// multiplied by c; the factors themselves are not touched.

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "lola/core/error.hpp"
#include "lola/expr/expr_base.hpp"

namespace lola {

template <class EHeld>
class scaled : public expr_base<scaled<EHeld>> {
 public:
  using inner_type = std::remove_cv_t<std::remove_reference_t<EHeld>>;
  using scalar = typename inner_type::scalar;
  using storage = typename inner_type::storage;

  template <class EArg>
  scaled(EArg&& e, scalar c) : e_(std::forward<EArg>(e)), c_(c) {
    if (!std::isfinite(c_))
      throw error(error_code::invalid_argument,
                  "scaled: the multiplier must be finite, got " + std::to_string(c_));
  }

  index rows() const { return e_.rows(); }
  index cols() const { return e_.cols(); }
  index rank() const { return e_.rank(); }
  const inner_type& inner() const { return e_; }
  scalar multiplier() const { return c_; }

 private:
  EHeld e_;
  scalar c_;
};

template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
auto operator*(scalar_of_t<E> c, E&& e) {
  return scaled<closure_t<E&&>>(std::forward<E>(e), c);
}

template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
auto operator*(E&& e, scalar_of_t<E> c) {
  return scaled<closure_t<E&&>>(std::forward<E>(e), c);
}

template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
auto operator/(E&& e, scalar_of_t<E> c) {
  if (c == 0) throw error(error_code::invalid_argument, "low-rank expression divided by zero");
  return scaled<closure_t<E&&>>(std::forward<E>(e), scalar_of_t<E>(1) / c);
}

template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
auto operator-(E&& e) {
  return scaled<closure_t<E&&>>(std::forward<E>(e), scalar_of_t<E>(-1));
}

}  // namespace lola
