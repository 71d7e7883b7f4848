#pragma once
/// @file
/// Umbrella header: everything in lola that compiles with the host compiler alone.

#include "lola/version.hpp"

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/core/random.hpp"
#include "lola/core/scalar.hpp"
#include "lola/core/widen.hpp"
#include "lola/core/shape.hpp"

#include "lola/expr/expr_base.hpp"
#include "lola/expr/group_action.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/expr/product.hpp"
#include "lola/expr/scaled.hpp"
#include "lola/expr/sum.hpp"
#include "lola/expr/transposed.hpp"

#include "lola/backend/eigen/dense.hpp"
#include "lola/backend/eigen/evaluate.hpp"
#include "lola/backend/eigen/merge.hpp"
#include "lola/backend/eigen/reductions.hpp"

#include "lola/linalg/column_space.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "lola/linalg/thin_qr.hpp"

#include "lola/canon/canonical_form.hpp"
#include "lola/canon/canonicalize_adapter.hpp"
#include "lola/canon/o_align.hpp"

#include "lola/features/adapter_spectra.hpp"
#include "lola/features/base_projection.hpp"
#include "lola/features/featurize.hpp"
#include "lola/features/grams.hpp"
#include "lola/features/marginals.hpp"
#include "lola/features/similarity.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/features/subspace_similarity.hpp"

#include "lola/nn/dropout.hpp"
#include "lola/nn/equivariant_linear.hpp"
#include "lola/nn/gate.hpp"
#include "lola/nn/gl_net.hpp"
#include "lola/nn/gl_net_weights.hpp"
#include "lola/nn/gl_norm.hpp"
#include "lola/nn/invariant_head.hpp"
#include "lola/nn/mixing_linear.hpp"
#include "lola/nn/uv_pair.hpp"

#include "lola/ops/combine.hpp"
#include "lola/ops/edit_modules.hpp"
#include "lola/ops/merge_adapters.hpp"
#include "lola/ops/resize.hpp"
#include "lola/ops/resize_adapter.hpp"

#include "lola/io/adapter.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/encoded_adapter.hpp"
#include "lola/io/json.hpp"
#include "lola/io/load.hpp"
#include "lola/io/module_lookup.hpp"
#include "lola/io/safetensors.hpp"
