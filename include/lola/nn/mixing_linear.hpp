#pragma once
/// @file
/// The O(r)-only linear layer: one weight W ((h_u + h_v)×(n + m)) mixes the rows of U and V,
///   [U'; V'] = W·[U; V],   U' the first h_u rows, V' the last h_v rows.
/// O(r)-equivariant: (U·Q, V·Q) ↦ W·[U; V]·Q for Q orthogonal, since both factors carry the same Q.
/// NOT GL-equivariant: a general G acts as (U·G, V·G⁻ᵀ), and a row of U' that mixes rows of U·G with
/// rows of V·G⁻ᵀ is neither. This is the reference's models_metanet.EquivariantLinear (stacked
/// [U; V], one weight, split in halves), which the LoL models do not use; it is here for
/// comparison and for data already O-aligned. Cost O((h_u + h_v)·(n + m)·r).

#include <string>

#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

template <class S>
class mixing_linear {
 public:
  mixing_linear() = default;
  /// W is (h_u + h_v)×(n + m); the first h_u output rows form U'.
  mixing_linear(matrix<S> weight, index n, index out_u)
      : weight_(std::move(weight)), n_(n), out_u_(out_u) {
    if (n_ < 0 || n_ > weight_.cols() || out_u_ < 0 || out_u_ > weight_.rows())
      throw error(error_code::invalid_argument,
                  "mixing_linear: the split (n = " + std::to_string(n_) + ", h_u = " +
                      std::to_string(out_u_) + ") does not fit the " + shape_string(weight_) +
                      " weight");
  }

  const matrix<S>& weight() const noexcept { return weight_; }

  uv_pair<S> operator()(const uv_pair<S>& x) const {
    detail::require_same_rank(x, "mixing_linear");
    if (x.U.rows() != n_ || x.U.rows() + x.V.rows() != weight_.cols())
      throw error(error_code::shape_mismatch,
                  "mixing_linear: the layer takes U with " + std::to_string(n_) + " rows and V with " +
                      std::to_string(weight_.cols() - n_) + ", got " + shape_string(x.U) + " and " +
                      shape_string(x.V));
    const index m = x.V.rows(), h_v = weight_.rows() - out_u_;
    uv_pair<S> out;
    out.U.noalias() = weight_.topLeftCorner(out_u_, n_) * x.U;
    out.U.noalias() += weight_.topRightCorner(out_u_, m) * x.V;
    out.V.noalias() = weight_.bottomLeftCorner(h_v, n_) * x.U;
    out.V.noalias() += weight_.bottomRightCorner(h_v, m) * x.V;
    return out;
  }

 private:
  matrix<S> weight_;
  index n_ = 0, out_u_ = 0;
};

}  // namespace lola::nn
