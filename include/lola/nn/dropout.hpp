#pragma once
/// @file
/// Equivariant row dropout (LoL reference code, models_metanet.EquivDropout) in its inference form.
/// Training keeps each row of U and of V with probability 1 − p (rows, so it commutes with the
/// action on columns); it is not inverted dropout, so at inference the reference multiplies U and
/// V each by 1 − p, matching E[masked U·Vᵀ] = (1 − p)²·U·Vᵀ. A model trained with dropout p must be
/// run with the same p to reproduce its outputs.

#include <string>

#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

/// The factor 1 − p that U and V are each multiplied by at inference; p ∈ [0, 1).
inline double dropout_inference_scale(double p) {
  if (!(p >= 0 && p < 1))
    throw error(error_code::invalid_argument,
                "equivariant dropout: p must be in [0, 1), got " + std::to_string(p));
  return 1 - p;
}

/// Scales U and V by 1 − p.
template <class S>
void equivariant_dropout_inference(uv_pair<S>& x, double p) {
  const S keep = static_cast<S>(dropout_inference_scale(p));
  if (keep == S(1)) return;
  x.U *= keep;
  x.V *= keep;
}

}  // namespace lola::nn
