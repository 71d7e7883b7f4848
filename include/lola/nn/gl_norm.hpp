#pragma once
/// @file
/// GLNorm (LoL reference code, models_metanet.GLNorm): per module,
///   N = ‖U·Vᵀ‖_F + ε,   U ← s_U ⊙ U / √N,   V ← s_V ⊙ V / √N,
/// so U·Vᵀ has unit Frobenius norm before the learnable per-row scales s_U (n) and s_V (m).
/// ‖U·Vᵀ‖_F comes from lola::norm (backend/eigen/reductions.hpp): |R_U·Vᵀ|_F after a QR of U,
/// O((n + m)·r²), P never formed. The reference's Gram form tr((UᵀU)·(VᵀV)) gives the same value
/// up to rounding but loses ε·κ² relative accuracy (κ = ‖U‖‖V‖/‖UVᵀ‖, up to cond(G)² after a GL
/// action), the QR route ε·κ.
/// GL-equivariant: N is invariant and the scales act on rows. The reference instantiates it but
/// leaves it out of GL-net's forward (the call is commented out); lola's gl_net does the same.

#include <cmath>

#include "lola/backend/eigen/reductions.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

template <class S>
struct gl_norm {
  vector<S> scale_u;  ///< s_U, one per row of U (reference init 1)
  vector<S> scale_v;  ///< s_V, one per row of V
  S epsilon = S(1e-6);

  /// Unit scales for U with n rows and V with m rows.
  static gl_norm identity(index n, index m) { return {vector<S>::Ones(n), vector<S>::Ones(m)}; }

  void operator()(uv_pair<S>& x) const {
    detail::require_same_rank(x, "gl_norm");
    if (x.U.rows() != scale_u.size() || x.V.rows() != scale_v.size())
      throw error(error_code::shape_mismatch,
                  "gl_norm: scales for " + std::to_string(scale_u.size()) + " and " +
                      std::to_string(scale_v.size()) + " rows, got U " + shape_string(x.U) +
                      " and V " + shape_string(x.V));
    const S frobenius = lola::norm(factor(x.U, matrix<S>(x.V.transpose())));
    const S inv = S(1) / std::sqrt(frobenius + epsilon);
    x.U = (scale_u * inv).asDiagonal() * x.U;
    x.V = (scale_v * inv).asDiagonal() * x.V;
  }
};

}  // namespace lola::nn
