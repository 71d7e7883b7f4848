#pragma once
/// @file
/// Resizing a whole adapter: every module of an io::adapter_view replaced by its best
/// approximation of the rank a rule selects (ops/resize.hpp), computed in S from the factors as
/// stored and encoded back into the file's dtypes (ops/edit_modules.hpp); the scale of each module
/// is kept. What `lola resize` writes. Batched by rank as canonical forms are
/// (canon/canonicalize_adapter.hpp); each module's factors equal resize's for it alone, bit for bit.

#include <cstddef>
#include <vector>

#include "lola/canon/canonical_form.hpp"
#include "lola/canon/canonicalize_adapter.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/encoded_adapter.hpp"
#include "lola/ops/edit_modules.hpp"
#include "lola/ops/resize.hpp"

namespace lola {

struct adapter_resize {
  io::encoded_adapter adapter;
  /// Per module, in order: ‖ΔW_k‖_F / ‖ΔW‖_F (resize_result::retained_fro_fraction).
  std::vector<double> retained_fro_fraction;
};

template <class S = double>
adapter_resize resize_adapter(const io::adapter_view& in, const rank_rule& rule,
                              canonical_form form = canonical_form::left, const module_pass& pass = {}) {
  adapter_resize out;
  out.retained_fro_fraction.assign(in.modules.size(), 1.0);
  out.adapter = detail::edit_modules_from_svds<S>(
      in, pass, [&](std::size_t i, const auto& svd, const auto& B, const auto& A, S scale, io::encoded_module& m) {
        const auto resized = detail::resize_from_svd(svd, B, A, scale, rule, form);
        out.retained_fro_fraction[i] = static_cast<double>(resized.retained_fro_fraction);
        m.set_factors(resized.factors.B(), resized.factors.A(), m.scale);
      });
  return out;
}

}  // namespace lola
