#pragma once
/// @file
/// Evaluation of low-rank expressions to factors, and lola::eval.
///
/// detail::evaluator::factors(e) turns an expression into a low_rank leaf whose scale times B·A
/// equals the expression. Leaves, scalings, transposes and sums work on the factors of any backend
/// (through backend/primitives.hpp); products with dense matrices and group actions on host
/// factors. It borrows where it can and computes only what the node
/// demands:
///   leaf            the leaf itself (no copy, whatever the storage scalar);
///   c·E             E's factors, borrowed, with the scale multiplied by c;
///   Eᵀ              transposed views of E's factors when they are borrowed;
///   E₁ + E₂         concatenated factors [s₁B₁ s₂B₂], [A₁; A₂]: O((d + k)(r₁ + r₂)) copies;
///   M·E, E·M        one GEMM into the affected factor, the other borrowed;
///   (BG, G⁻¹A)      one GEMM and one LU solve with partial pivoting; (BQ, QᵀA) two GEMMs.
/// Factors stored as half or bfloat16 are converted to float where a GEMM first reads them.
/// No path forms a d×k matrix.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>
#include <Eigen/LU>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/error.hpp"
#include "lola/core/shape.hpp"
#include "lola/expr/expr_base.hpp"
#include "lola/expr/group_action.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/product.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "lola/expr/transposed.hpp"

namespace lola {
namespace detail {

/// One block of a concatenation [… b·B_f …] and [… ; a·A_f ; …]: the factors of f times the
/// coefficients b and a, written at column `offset` of B and row `offset` of A. Stacking blocks
/// this way gives the factors of Σ bᵢaᵢ·BᵢAᵢ, of rank Σ rᵢ.
template <class S, class F, class Factor>
void stack_block(const F& f, S b, S a, index offset, Factor& B, Factor& A) {
  assign_scaled(B.middleCols(offset, f.rank()), b, f.B());
  assign_scaled(A.middleRows(offset, f.rank()), a, f.A());
}

/// How a factor is held after it is taken from an evaluation result of type F: by reference when
/// F is an lvalue (a leaf that outlives the evaluation) or itself holds a reference; otherwise the
/// owned matrix is moved along.
template <class F>
using taken_b_t = std::conditional_t<std::is_lvalue_reference_v<F>,
                                     const typename std::remove_reference_t<F>::b_type&,
                                     typename std::remove_reference_t<F>::b_held>;
template <class F>
using taken_a_t = std::conditional_t<std::is_lvalue_reference_v<F>,
                                     const typename std::remove_reference_t<F>::a_type&,
                                     typename std::remove_reference_t<F>::a_held>;

/// The transpose of a taken factor: a view of a borrowed one, a new matrix of its backend for an
/// owned one.
template <class Held, class Factor = std::remove_cv_t<std::remove_reference_t<Held>>>
using transposed_factor_t = std::conditional_t<
    std::is_reference_v<Held>, decltype(std::declval<const Factor&>().transpose()),
    factor_matrix_t<storage_of_t<Factor>, typename Factor::Scalar>>;

struct evaluator {
  template <class BH, class AH>
  static const low_rank<BH, AH>& factors(const low_rank<BH, AH>& e) {
    return e;
  }

  template <class E>
  static auto factors(const scaled<E>& e) {
    decltype(auto) f = factors(e.inner());
    using F = decltype(f);
    const auto s = e.multiplier() * f.scale();
    return low_rank<taken_b_t<F>, taken_a_t<F>>(std::forward<F>(f).B(), std::forward<F>(f).A(),
                                                 s);
  }

  template <class E>
  static auto factors(const transposed<E>& e) {
    decltype(auto) f = factors(e.inner());
    using F = decltype(f);
    using new_b = transposed_factor_t<taken_a_t<F>>;
    using new_a = transposed_factor_t<taken_b_t<F>>;
    const auto s = f.scale();
    return low_rank<new_b, new_a>(new_b(f.A().transpose()), new_a(f.B().transpose()), s);
  }

  template <class L, class R>
  static auto factors(const sum<L, R>& e) {
    using S = typename sum<L, R>::scalar;
    decltype(auto) f1 = factors(e.lhs());
    decltype(auto) f2 = factors(e.rhs());
    const index r1 = f1.rank(), r2 = f2.rank();
    const S s1 = f1.scale(), s2 = f2.scale();
    // One shared scale is kept as it is; different scales are folded into the blocks of B.
    const bool shared = s1 == s2;
    using storage = typename sum<L, R>::storage;
    factor_matrix_t<storage, S> B(e.rows(), r1 + r2), A(r1 + r2, e.cols());
    stack_block(f1, shared ? S(1) : s1, S(1), 0, B, A);
    stack_block(f2, shared ? S(1) : s2, S(1), r1, B, A);
    return owning_low_rank<storage, S>(std::move(B), std::move(A), shared ? s1 : S(1));
  }

  template <class MH, class E>
  static auto factors(const left_product<MH, E>& e) {
    using S = typename left_product<MH, E>::scalar;
    decltype(auto) f = factors(e.inner());
    using F = decltype(f);
    dense_matrix<S> MB(e.rows(), f.rank());
    MB.noalias() = e.dense_factor() * as_compute<S>(f.B());
    const S s = f.scale();
    return low_rank<dense_matrix<S>, taken_a_t<F>>(std::move(MB), std::forward<F>(f).A(), s);
  }

  template <class E, class MH>
  static auto factors(const right_product<E, MH>& e) {
    using S = typename right_product<E, MH>::scalar;
    decltype(auto) f = factors(e.inner());
    using F = decltype(f);
    dense_matrix<S> AM(f.rank(), e.cols());
    AM.noalias() = as_compute<S>(f.A()) * e.dense_factor();
    const S s = f.scale();
    return low_rank<taken_b_t<F>, dense_matrix<S>>(std::forward<F>(f).B(), std::move(AM), s);
  }

  template <class E, class GH, group Group>
  static auto factors(const group_action<E, GH, Group>& e) {
    using S = typename group_action<E, GH, Group>::scalar;
    decltype(auto) f = factors(e.inner());
    const auto& g = e.element();
    const index r = f.rank();
    dense_matrix<S> BG(f.rows(), r), GinvA(r, f.cols());
    BG.noalias() = as_compute<S>(f.B()) * g;
    if constexpr (Group == group::general_linear) {
      if (r > 0) {
        const Eigen::PartialPivLU<dense_matrix<S>> lu(g);
        // Eigen's rcond() estimate misses exactly zero pivots, so the pivot ratio min|Uᵢᵢ|/max|Uᵢᵢ|
        // (a lower bound on nothing, but zero exactly when G is singular) is checked as well.
        const auto pivots = lu.matrixLU().diagonal().cwiseAbs();
        const S rcond = std::min<S>(lu.rcond(), pivots.minCoeff() / pivots.maxCoeff());
        if (!(rcond >= std::numeric_limits<S>::epsilon()))
          throw error(error_code::invalid_argument,
                      "act: G (" + shape_string(r, r) +
                          ") is singular to working precision, reciprocal condition estimate " +
                          std::to_string(rcond));
        GinvA.noalias() = lu.solve(as_compute<S>(f.A()));
      }
    } else {
      const S deviation =
          r > 0 ? (g.transpose() * g - dense_matrix<S>::Identity(r, r)).cwiseAbs().maxCoeff() : S(0);
      if (!(deviation <= std::sqrt(std::numeric_limits<S>::epsilon())))
        throw error(error_code::invalid_argument,
                    "act_orthogonal: Q (" + shape_string(r, r) +
                        ") is not orthogonal, max |QᵀQ - I| = " + std::to_string(deviation));
      GinvA.noalias() = g.transpose() * as_compute<S>(f.A());
    }
    return low_rank_matrix<S>(std::move(BG), std::move(GinvA), f.scale());
  }
};

}  // namespace detail

/// The factors of a host expression as an owning low_rank_matrix (column-major, compute scalar):
/// s·B·A equals the expression, with B d×r and A r×k, r = e.rank().
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
low_rank_matrix<scalar_of_t<E>> eval(const E& e) {
  using S = scalar_of_t<E>;
  decltype(auto) f = detail::evaluator::factors(e);
  using F = decltype(f);
  const S s = f.scale();
  return low_rank_matrix<S>(detail::to_plain<S>(std::forward<F>(f).B()),
                            detail::to_plain<S>(std::forward<F>(f).A()), s);
}

}  // namespace lola
