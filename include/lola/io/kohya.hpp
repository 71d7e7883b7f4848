#pragma once
/// @file
/// The kohya / A1111 dialect (sd-scripts networks/lora.py).
///
/// Keys: <module>.lora_down.weight (A, r × in, conv r × in × kh × kw), <module>.lora_up.weight
/// (B, out × r, conv out × r × 1 × 1), <module>.alpha (a one-element tensor of any floating
/// dtype, usually 0-dimensional), <module>.dora_scale (DoRA, kept with the module).
/// Scaling: s = α / r; a missing or zero α means α = r (s = 1). α must be finite (NaN or ±inf is
/// an error naming the file, the key and the module); a negative α is accepted, as sd-scripts
/// computes with it (s < 0 negates ΔW).
/// LyCORIS modules that are not B·A — a Tucker core (lora_mid), LoHa (hada_*), LoKr (lokr_*), a
/// full difference (diff) — are kept whole as passthrough tensors, with a warning.

#include <cmath>
#include <cstdio>
#include <utility>
#include <string>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/dialect.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

namespace detail {

inline const std::vector<key_rule>& kohya_rules() {
  static const std::vector<key_rule> rules = {
      {".lora_down.weight", key_role::A, module_kind::linear},
      {".lora_up.weight", key_role::B, module_kind::linear},
      {".alpha", key_role::alpha, module_kind::linear},
      {".dora_scale", key_role::extra, module_kind::linear},
      {".lora_mid.weight", key_role::foreign, module_kind::linear},
      {".hada_w1_a", key_role::foreign, module_kind::linear},
      {".hada_w1_b", key_role::foreign, module_kind::linear},
      {".hada_w2_a", key_role::foreign, module_kind::linear},
      {".hada_w2_b", key_role::foreign, module_kind::linear},
      {".hada_t1", key_role::foreign, module_kind::linear},
      {".hada_t2", key_role::foreign, module_kind::linear},
      {".lokr_w1", key_role::foreign, module_kind::linear},
      {".lokr_w1_a", key_role::foreign, module_kind::linear},
      {".lokr_w1_b", key_role::foreign, module_kind::linear},
      {".lokr_w2", key_role::foreign, module_kind::linear},
      {".lokr_w2_a", key_role::foreign, module_kind::linear},
      {".lokr_w2_b", key_role::foreign, module_kind::linear},
      {".lokr_t2", key_role::foreign, module_kind::linear},
      {".diff", key_role::foreign, module_kind::linear},
      {".diff_b", key_role::foreign, module_kind::linear},
  };
  return rules;
}

/// kohya's scale s = α/r, with a missing or zero α meaning α = r.
inline double kohya_scale(double alpha, double rank) { return alpha == 0 ? 1.0 : alpha / rank; }

/// α written back: s·r, snapped (snap_alpha), so that kohya_scale gives back s.
inline double kohya_alpha(double scale, double rank) { return snap_alpha(scale * rank); }

}  // namespace detail

/// Reads a kohya adapter from a validated safetensors image.
/// Errors: a module missing lora_down or lora_up, ranks or shapes that disagree, an alpha that is
/// not a finite one-element floating tensor — each naming the module.
/// Into `out`: an adapter<S> (factors decoded) or an adapter_view (factors as stored).
template <class Adapter>
void read_kohya_into(Adapter& out, const safetensors_view& file) {
  out.format = adapter_format::kohya;
  out.metadata = file.metadata();
  std::vector<const tensor_info*> unmatched;
  std::vector<tensor> lycoris;
  const auto groups = detail::group_modules(file, detail::kohya_rules(), unmatched);
  for (const auto& keys : groups) {
    if (!keys.foreign.empty() || (!keys.A && !keys.B)) {
      for (const auto* t : {keys.A, keys.B, keys.alpha})
        if (t) lycoris.push_back(tensor::copy_of(file, *t));
      for (const auto* t : keys.extras) lycoris.push_back(tensor::copy_of(file, *t));
      for (const auto* t : keys.foreign) lycoris.push_back(tensor::copy_of(file, *t));
      continue;
    }
    auto m = read_module_as(detail::module_tag_of(out), file, keys, "lora_down", "lora_up");
    const double r = static_cast<double>(m.rank());
    double alpha = 0;
    if (keys.alpha) {
      alpha = file.scalar(*keys.alpha);
      if (!std::isfinite(alpha))
        throw error(error_code::invalid_file,
                    file.source() + ": module \"" + m.name + "\": alpha tensor \"" + keys.alpha->name +
                        "\" is not finite: " + (std::isnan(alpha) ? "NaN" : alpha > 0 ? "inf" : "-inf"));
    }
    m.scale = detail::kohya_scale(alpha, r);
    out.modules.push_back(std::move(m));
  }
  if (out.modules.empty())
    throw error(lycoris.empty() ? error_code::invalid_file : error_code::unsupported,
                file.source() + ": no kohya LoRA modules (keys ending in .lora_down.weight / "
                                ".lora_up.weight)" +
                    (lycoris.empty() ? "" : "; LyCORIS LoHa / LoKr / Tucker modules are not supported"));
  if (!lycoris.empty())
    out.warnings.push_back(file.source() + ": " +
                           detail::passthrough_warning(lycoris, "LyCORIS (not plain B*A)"));
  for (const auto* t : unmatched) out.passthrough.push_back(tensor::copy_of(file, *t));
  if (!out.passthrough.empty())
    out.warnings.push_back(file.source() + ": " +
                           detail::passthrough_warning(out.passthrough, "not LoRA factors"));
  out.passthrough.insert(out.passthrough.end(), lycoris.begin(), lycoris.end());
}

/// read_kohya_into into an adapter whose factors are decoded to S.
template <class S = float>
adapter<S> read_kohya(const safetensors_view& file) {
  adapter<S> out;
  read_kohya_into(out, file);
  return out;
}

/// The tensors of a kohya file for the adapter: lora_down, lora_up, and alpha = s·r as a
/// 0-dimensional tensor in the first of (B's dtype, F32, F64) that holds it exactly; module extras
/// and passthrough tensors as they were. Errors (numerical, naming the module): an α = s·r that is
/// not finite; a factor value its dtype cannot hold (see tensor::from_matrix). The list refers to
/// the adapter's tensors.
template <class Module>
tensor_list kohya_tensor_list(const basic_adapter<Module>& a) {
  tensor_list out;
  for (const auto& m : a.modules) {
    add_factor_tensors(out, m, A_factor_key(adapter_format::kohya, m), B_factor_key(adapter_format::kohya, m));
    const dtype up_dtype = out.items.back()->dtype;  // B's, added last
    const double alpha = detail::kohya_alpha(m.scale, static_cast<double>(m.rank()));
    if (!std::isfinite(alpha)) {
      char scale[32];
      std::snprintf(scale, sizeof scale, "%.9g", m.scale);
      throw error(error_code::numerical, "module \"" + m.name + "\": alpha = s*r is not finite (s = " + scale +
                                             ", r = " + std::to_string(m.rank()) + ")");
    }
    Eigen::Matrix<double, 1, 1> value;
    value(0, 0) = alpha;
    // The factors' dtype when it holds α exactly, else F32 when that does, else F64.
    for (const dtype t : {up_dtype, dtype::F32, dtype::F64}) {
      if (!(std::abs(alpha) <= dtype_max(t))) continue;
      auto candidate = tensor::from_matrix(m.name + ".alpha", t, {}, value);
      double back = 0;
      decode_elements(candidate.data.data(), candidate.dtype, 1, &back);
      if (back == alpha || t == dtype::F64) {
        out.own(std::move(candidate));
        break;
      }
    }
    for (const auto& t : m.extras) out.refer(t);
  }
  for (const auto& t : a.passthrough) out.refer(t);
  return out;
}

/// kohya_tensor_list's tensors, copied.
template <class Module>
std::vector<tensor> kohya_tensors(const basic_adapter<Module>& a) {
  return kohya_tensor_list(a).copies();
}

}  // namespace lola::io
