#pragma once
/// @file
/// lola::low_rank: the factorization ΔW = s·B·A, the leaf of every expression.
///
/// B is d×r, A is r×k, s a scalar (DESIGN.md §1; in the LoL paper's notation U = B, V = Aᵀ).
/// The factors are held as the template arguments say (Eigen objects for host memory, or the
/// factor views of another backend, whose storage tag the leaf takes on):
///   low_rank_matrix<S>          owns column-major Eigen matrices (what evaluations return);
///   low_rank_map<Storage, Opt>  views external memory through Eigen::Map, zero copy (what file
///                               readers return; Opt defaults to RowMajor, the layout of files);
///   factor(B, A, s)             holds named matrices by reference and temporaries by value.
/// Storage may be float, double, Eigen::half or Eigen::bfloat16; the compute scalar is float for
/// the 16-bit types (core/scalar.hpp).

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/core/scalar.hpp"
#include "lola/core/shape.hpp"
#include "lola/expr/expr_base.hpp"

namespace lola {

template <class BHeld, class AHeld>
class low_rank : public expr_base<low_rank<BHeld, AHeld>> {
 public:
  using b_held = BHeld;
  using a_held = AHeld;
  using b_type = std::remove_cv_t<std::remove_reference_t<BHeld>>;
  using a_type = std::remove_cv_t<std::remove_reference_t<AHeld>>;
  static_assert(is_factor_v<b_type> && is_factor_v<a_type>,
                "lola::low_rank: the factors must be Eigen dense matrices or expressions, or the "
                "factor views of another backend");
  static_assert(std::is_same_v<storage_of_t<b_type>, storage_of_t<a_type>>,
                "lola::low_rank: B and A must live in the same memory (one storage)");
  using scalar = common_compute_scalar_t<typename b_type::Scalar, typename a_type::Scalar>;
  /// Where the factors live, deduced from them: host_storage for Eigen objects.
  using storage = storage_of_t<b_type>;

  /// An empty 0×0 factorization of rank 0, for owning factor types.
  template <class B = BHeld, class A = AHeld,
            class = std::enable_if_t<!std::is_reference_v<B> && !std::is_reference_v<A>>>
  low_rank() : B_(), A_(), s_(1) {}

  /// Throws shape_mismatch unless B.cols() == A.rows(), invalid_argument for a non-finite s.
  template <class BArg, class AArg>
  low_rank(BArg&& B, AArg&& A, scalar s = scalar(1))
      : B_(std::forward<BArg>(B)), A_(std::forward<AArg>(A)), s_(s) {
    detail::require_shapes(B_.cols() == A_.rows(), "low_rank (B's columns must equal A's rows)",
                           "B", B_.rows(), B_.cols(), "A", A_.rows(), A_.cols());
    if (!std::isfinite(s_))
      throw error(error_code::invalid_argument,
                  "low_rank: the scale s must be finite, got " + std::to_string(s_));
  }

  /// d: out_features, the rows of ΔW.
  index rows() const { return static_cast<index>(B_.rows()); }
  /// k: in_features, the columns of ΔW.
  index cols() const { return static_cast<index>(A_.cols()); }
  /// r: the inner dimension (an upper bound on the rank of ΔW).
  index rank() const { return static_cast<index>(B_.cols()); }
  scalar scale() const { return s_; }

  const b_type& B() const& { return B_; }
  const a_type& A() const& { return A_; }
  /// From an rvalue: the owned factor moved out, or the referenced one passed on.
  BHeld&& B() && { return std::forward<BHeld>(B_); }
  AHeld&& A() && { return std::forward<AHeld>(A_); }

 private:
  BHeld B_;
  AHeld A_;
  scalar s_;
};

/// Owning factors in column-major Eigen matrices of the compute scalar S.
template <class S>
using low_rank_matrix = low_rank<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>,
                                 Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>>;

/// Owning factors of the compute scalar S in the memory a backend's `Storage` names
/// (low_rank_matrix<S> for host_storage): what an algorithm returns for factors of that backend.
template <class Storage, class S>
using owning_low_rank = low_rank<factor_matrix_t<Storage, S>, factor_matrix_t<Storage, S>>;

/// Non-owning views of external memory holding Storage values, row-major by default.
template <class Storage, int Options = Eigen::RowMajor>
using low_rank_map = low_rank<
    Eigen::Map<const Eigen::Matrix<Storage, Eigen::Dynamic, Eigen::Dynamic, Options>>,
    Eigen::Map<const Eigen::Matrix<Storage, Eigen::Dynamic, Eigen::Dynamic, Options>>>;

/// s·B·A over the given Eigen matrices or expressions: named ones by reference, temporaries by
/// value (expr_base.hpp, closure rule).
template <class B, class A>
auto factor(B&& b, A&& a,
            typename low_rank<closure_t<B&&>, closure_t<A&&>>::scalar s = 1) {
  return low_rank<closure_t<B&&>, closure_t<A&&>>(std::forward<B>(b), std::forward<A>(a), s);
}

/// Views of B (d×r) and A (r×k) stored contiguously at b and a in the given order, zero copy.
/// The memory must outlive the view.
template <class Storage, int Options = Eigen::RowMajor>
low_rank_map<Storage, Options> map_factors(const Storage* b, index d, index r, const Storage* a,
                                           index k, compute_scalar_t<Storage> s = 1) {
  if (d < 0 || r < 0 || k < 0)
    throw error(error_code::invalid_argument,
                "map_factors: negative dimension in B " + shape_string(d, r) + ", A " +
                    shape_string(r, k));
  using map_t = Eigen::Map<const Eigen::Matrix<Storage, Eigen::Dynamic, Eigen::Dynamic, Options>>;
  return low_rank_map<Storage, Options>(map_t(b, d, r), map_t(a, r, k), s);
}

}  // namespace lola
