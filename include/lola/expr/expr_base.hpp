#pragma once
/// @file
/// The base of every low-rank expression, the closure rule, and where operands live.
///
/// A low-rank expression says *what* to compute: a d×k matrix s·B·A given through its factors
/// (B d×r, A r×k) and a tree of nodes over them. It never says *how*: evaluation is a set of
/// overloads per backend (backend/eigen/ for host memory), chosen by the `storage` tag that every
/// node carries. A backend that lacks an overload is a plain compile error at the call.
///
/// Every node provides
///   scalar   the compute scalar (float or double),
///   storage  where its operands live (host_storage for Eigen objects),
///   rows(), cols(), rank()  the shape d×k of the represented matrix and the inner dimension r
///                           of the factors an evaluation yields (ranks add under a sum).

#include <type_traits>

#include <Eigen/Core>

#include "lola/core/config.hpp"

namespace lola {

/// Storage tag: the operands are Eigen objects in host memory, evaluated by backend/eigen/.
struct host_storage {};

/// CRTP base of every low-rank expression node.
template <class Derived>
struct expr_base {};

/// True for low-rank expression nodes (after removing references and cv-qualifiers).
template <class T>
inline constexpr bool is_low_rank_expr_v =
    std::is_base_of_v<expr_base<std::remove_cv_t<std::remove_reference_t<T>>>,
                      std::remove_cv_t<std::remove_reference_t<T>>>;

/// True for Eigen dense matrices and matrix expressions (the operands of host expressions).
template <class T>
inline constexpr bool is_eigen_dense_v =
    std::is_base_of_v<Eigen::DenseBase<std::remove_cv_t<std::remove_reference_t<T>>>,
                      std::remove_cv_t<std::remove_reference_t<T>>>;

/// The storage tag of an expression or of an operand: host_storage for Eigen objects, the nested
/// `storage` type for expressions and for the factor views of other backends.
template <class T, class = void>
struct storage_of {};
template <class T>
struct storage_of<T, std::enable_if_t<is_eigen_dense_v<T>>> {
  using type = host_storage;
};
template <class T>
struct storage_of<T, std::enable_if_t<!is_eigen_dense_v<T>, std::void_t<typename T::storage>>> {
  using type = typename T::storage;
};
template <class T>
using storage_of_t = typename storage_of<std::remove_cv_t<std::remove_reference_t<T>>>::type;

/// True for types that a backend holds factors in (an Eigen dense object, or a view or matrix of
/// another backend that names its storage).
template <class T, class = void>
inline constexpr bool is_factor_v = false;
template <class T>
inline constexpr bool is_factor_v<T, std::void_t<storage_of_t<T>>> = !is_low_rank_expr_v<T>;

/// The owning factor type of a backend: a matrix of S in the memory `Storage` names, what the
/// algorithms return. Each backend specializes it; host memory holds column-major Eigen matrices.
template <class Storage, class S>
struct factor_matrix;
template <class S>
struct factor_matrix<host_storage, S> {
  using type = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
};
template <class Storage, class S>
using factor_matrix_t = typename factor_matrix<Storage, S>::type;

/// True for low-rank expressions whose operands all live in host memory.
template <class E, class = void>
inline constexpr bool is_host_expr_v = false;
template <class E>
inline constexpr bool is_host_expr_v<E, std::enable_if_t<is_low_rank_expr_v<E>>> =
    std::is_same_v<storage_of_t<E>, host_storage>;

/// The closure rule: a node holds an operand passed as an lvalue by const reference and one passed
/// as an rvalue by value (moved in), so `auto e = 2.0 * lola::factor(B, A);` never dangles while
/// named operands are never copied. Deduce T with a forwarding reference (T&&).
template <class T>
using closure_t = std::conditional_t<std::is_lvalue_reference_v<T>,
                                     const std::remove_reference_t<T>&,
                                     std::remove_cv_t<std::remove_reference_t<T>>>;

/// The type of an expression's compute scalar.
template <class E>
using scalar_of_t = typename std::remove_cv_t<std::remove_reference_t<E>>::scalar;

}  // namespace lola
