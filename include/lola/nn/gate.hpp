#pragma once
/// @file
/// The GL-equivariant nonlinearity of LoL (eq. 6): scale each row of U and V by σ of an invariant,
///   U_i,: ← σ((U·Vᵀ·1)_i)·U_i,:      (the i-th row sum of P = U·Vᵀ)
///   V_j,: ← σ((1ᵀ·U·Vᵀ)_j)·V_j,:     (the j-th column sum of P)
/// P is GL(r)-invariant, so the scalars are, and scaling rows commutes with the action on columns.
/// Computed in the fast form U·(Vᵀ·1) and V·(Uᵀ·1) (features/marginals.hpp): O((n + m)·r), P (n×m)
/// never formed.
/// The default σ is the step 1[x > 0] = relu(sign(x)) of the reference (GLNonlin / GLNorm2): it
/// closes a row whose sum is ≤ 0 or NaN. Summed in a different order than the reference's P·1, a
/// row sum within rounding of 0 may land on the other side of it; that is the only difference.

#include "lola/expr/low_rank.hpp"
#include "lola/features/marginals.hpp"
#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

/// σ(x) = 1 if x > 0, else 0: the reference's relu(sign(x)).
struct step {
  template <class S>
  S operator()(S x) const noexcept {
    return x > S(0) ? S(1) : S(0);
  }
};

namespace detail {

/// The gate on U (n×r) and V (m×r) held anywhere (a column block of a batch, say).
template <class S, class Sigma>
void gate_rows(Eigen::Ref<matrix<S>> U, Eigen::Ref<matrix<S>> V, Sigma& sigma) {
  const auto P = factor(U, V.transpose());  // U·Vᵀ, never formed
  const vector<S> rows = row_sums(P), cols = column_sums(P);
  for (index i = 0; i < U.rows(); ++i) U.row(i) *= static_cast<S>(sigma(rows(i)));
  for (index j = 0; j < V.rows(); ++j) V.row(j) *= static_cast<S>(sigma(cols(j)));
}

}  // namespace detail

/// Applies the gate to one module in place; sigma maps a scalar to a scalar.
template <class S, class Sigma = step>
void gl_gate(uv_pair<S>& x, Sigma sigma = {}) {
  detail::require_same_rank(x, "gl_gate");
  detail::gate_rows<S>(x.U, x.V, sigma);
}

/// Applies the gate to every module.
template <class S, class Sigma = step>
void gl_gate(uv_list<S>& modules, Sigma sigma = {}) {
  for (auto& x : modules) gl_gate(x, sigma);
}

}  // namespace lola::nn
