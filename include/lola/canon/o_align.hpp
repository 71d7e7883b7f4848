#pragma once
/// @file
/// O-Align (LoL §3.2): rotate a module's factors onto a template's with the Q ∈ O(r) minimising
///   ‖B·Q − B̄‖²_F + ‖Aᵀ·Q − Āᵀ‖²_F        (LoL notation: ‖U·Q − Ū‖² + ‖V·Q − V̄‖², U = B, V = Aᵀ)
/// an orthogonal Procrustes problem with closed form Q = P·Sᵀ from the SVD of the r×r matrix
///   M = Bᵀ·B̄ + A·Āᵀ = P·Σ·Sᵀ.
/// The aligned factors (B·Q, Qᵀ·A) represent the same ΔW. Cost O((d + k)·r² + r³).
/// Stages: M from two cross-Grams (the backend's primitive), Q from M by the host-device r×r kernel
/// linalg/procrustes.hpp (one-sided Jacobi on M, never MᵀM), the two thin products. The kernel is
/// the one a batch of modules launches on any backend, one item per module.
///
/// Invariance: aligning (B·Q₀, Q₀ᵀ·A) for any Q₀ ∈ O(r) gives the same aligned factors, since
/// M ↦ Q₀ᵀ·M and so Q ↦ Q₀ᵀ·Q. A general G ∈ GL(r) changes them: O-Align is O(r)-invariant only.
/// Q is not unique when M is singular or has repeated singular values; `min_singular_value` and
/// the relative gap report how close to that the problem is.
///
/// The raw factors are aligned, as the LoL reference code does; the scales of module and template
/// are not involved and the module's scale is kept.

#include <limits>

#include <vector>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/error.hpp"
#include "lola/core/shape.hpp"
#include "lola/linalg/procrustes.hpp"

namespace lola {

template <class S, class Storage = host_storage>
struct alignment_result {
  owning_low_rank<Storage, S> aligned;                 ///< (B·Q, Qᵀ·A), the module's scale
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> Q;  ///< the rotation, r×r
  S min_singular_value = 0;  ///< σ_r(M)/σ₁(M): Q is unique only when this is > 0
};

/// Aligns `module` to `templ` (both d×k with the same rank r, factors of one backend).
/// error_code::numerical when M is not finite (a non-finite or overflowing factor) or the r×r kernel's
/// sweeps do not converge.
template <class E, class T,
          class = std::enable_if_t<is_low_rank_expr_v<E> && is_low_rank_expr_v<T>>>
alignment_result<scalar_of_t<E>, storage_of_t<E>> o_align(const E& module, const T& templ) {
  using detail::as_compute, detail::cross_gram_into, detail::thin_product_into;
  using S = scalar_of_t<E>;
  using storage = storage_of_t<E>;
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  using factor = factor_matrix_t<storage, S>;
  static_assert(std::is_same_v<S, scalar_of_t<T>>,
                "lola::o_align: module and template must have the same compute scalar");
  static_assert(std::is_same_v<storage, storage_of_t<T>>,
                "lola::o_align: module and template must live in the same memory");
  detail::require_shapes(module.rows() == templ.rows() && module.cols() == templ.cols() &&
                             module.rank() == templ.rank(),
                         "o_align (module and template must agree in d, k and r)",
                         "the module's d x k", module.rows(), module.cols(),
                         "the template's d x k", templ.rows(), templ.cols());
  decltype(auto) f = detail::evaluator::factors(module);
  decltype(auto) t = detail::evaluator::factors(templ);
  const index r = f.rank();
  alignment_result<S, storage> out;
  factor BQ(f.rows(), r), QtA(r, f.cols());
  if (r == 0) {
    out.aligned = owning_low_rank<storage, S>(std::move(BQ), std::move(QtA), f.scale());
    out.Q = matrix(0, 0);
    return out;
  }
  const auto& B = as_compute<S>(f.B());
  const auto& A = as_compute<S>(f.A());
  matrix M, from_a;  // M = Bᵀ·B̄ + A·Āᵀ, each a cross-Gram of factors of one shape
  cross_gram_into(B, as_compute<S>(t.B()), M);
  cross_gram_into(A.transpose(), as_compute<S>(t.A()).transpose(), from_a);
  M += from_a;
  out.Q.resize(r, r);
  std::vector<S> work(static_cast<std::size_t>(detail::procrustes_workspace_size(static_cast<int>(r))));
  if (!detail::procrustes_rotation(M.data(), static_cast<int>(r), out.Q.data(), work.data(), &out.min_singular_value))
    throw error(error_code::numerical, "o_align: M = Bᵀ·B̄ + A·Āᵀ (" + std::to_string(r) + "×" + std::to_string(r) +
                                           ") is not finite (a factor of the module or template is not, "
                                           "or their products overflow), or its Jacobi sweeps did not converge");
  thin_product_into<S>(B, out.Q, BQ);
  thin_product_into<S>(A.transpose(), out.Q, QtA.transpose());  // (Qᵀ·A)ᵀ = Aᵀ·Q
  out.aligned = owning_low_rank<storage, S>(std::move(BQ), std::move(QtA), f.scale());
  return out;
}

}  // namespace lola
