#pragma once
/// @file
/// Products of a low-rank expression with a dense matrix, absorbed into one factor:
///   M·(s·B·A) = s·(M·B)·A     rank unchanged, B' = M·B
///   (s·B·A)·M = s·B·(A·M)     rank unchanged, A' = A·M
/// A low-rank expression times a vector or a thin matrix X is the second form: its dense value
/// s·B·(A·X) is computed right to left, O((d + k)·r·n) instead of O(d·k·n), and ΔW is never formed.

#include <type_traits>
#include <utility>

#include "lola/core/shape.hpp"
#include "lola/expr/expr_base.hpp"

namespace lola {

namespace detail {
template <class M, class E>
constexpr void check_dense_operand() {
  static_assert(std::is_same_v<typename std::remove_cv_t<std::remove_reference_t<M>>::Scalar,
                               scalar_of_t<E>>,
                "lola: a dense factor must have the expression's compute scalar (float or "
                "double); use .cast<>() on it");
  static_assert(std::is_same_v<storage_of_t<E>, host_storage>,
                "lola: Eigen matrices multiply only expressions whose operands live in host "
                "memory");
}
}  // namespace detail

/// M·E with M dense (m×d) and E low-rank (d×k).
template <class MHeld, class EHeld>
class left_product : public expr_base<left_product<MHeld, EHeld>> {
 public:
  using dense_type = std::remove_cv_t<std::remove_reference_t<MHeld>>;
  using inner_type = std::remove_cv_t<std::remove_reference_t<EHeld>>;
  using scalar = typename inner_type::scalar;
  using storage = typename inner_type::storage;

  template <class MArg, class EArg>
  left_product(MArg&& m, EArg&& e) : m_(std::forward<MArg>(m)), e_(std::forward<EArg>(e)) {
    detail::require_shapes(m_.cols() == e_.rows(), "dense * low-rank product", "the dense matrix",
                           m_.rows(), m_.cols(), "the low-rank expression", e_.rows(), e_.cols());
  }

  index rows() const { return static_cast<index>(m_.rows()); }
  index cols() const { return e_.cols(); }
  index rank() const { return e_.rank(); }
  const dense_type& dense_factor() const { return m_; }
  const inner_type& inner() const { return e_; }

 private:
  MHeld m_;
  EHeld e_;
};

/// E·M with E low-rank (d×k) and M dense (k×n).
template <class EHeld, class MHeld>
class right_product : public expr_base<right_product<EHeld, MHeld>> {
 public:
  using inner_type = std::remove_cv_t<std::remove_reference_t<EHeld>>;
  using dense_type = std::remove_cv_t<std::remove_reference_t<MHeld>>;
  using scalar = typename inner_type::scalar;
  using storage = typename inner_type::storage;

  template <class EArg, class MArg>
  right_product(EArg&& e, MArg&& m) : e_(std::forward<EArg>(e)), m_(std::forward<MArg>(m)) {
    detail::require_shapes(e_.cols() == m_.rows(), "low-rank * dense product",
                           "the low-rank expression", e_.rows(), e_.cols(), "the dense matrix",
                           m_.rows(), m_.cols());
  }

  index rows() const { return e_.rows(); }
  index cols() const { return static_cast<index>(m_.cols()); }
  index rank() const { return e_.rank(); }
  const inner_type& inner() const { return e_; }
  const dense_type& dense_factor() const { return m_; }

 private:
  EHeld e_;
  MHeld m_;
};

template <class M, class E,
          class = std::enable_if_t<is_eigen_dense_v<M> && is_low_rank_expr_v<E>>>
auto operator*(M&& m, E&& e) {
  detail::check_dense_operand<M, E>();
  return left_product<closure_t<M&&>, closure_t<E&&>>(std::forward<M>(m), std::forward<E>(e));
}

template <class E, class M,
          class = std::enable_if_t<is_low_rank_expr_v<E> && is_eigen_dense_v<M>>, class = void>
auto operator*(E&& e, M&& m) {
  detail::check_dense_operand<M, E>();
  return right_product<closure_t<E&&>, closure_t<M&&>>(std::forward<E>(e), std::forward<M>(m));
}

}  // namespace lola
