#pragma once
/// @file
/// The in-memory adapter: ordered LoRA modules ΔW = s·B·A, the tensors that are not LoRA factors
/// (kept untouched), the file's metadata and the dialect it came from.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/json.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

/// The file dialect: PEFT (lora_A / lora_B, scaling from adapter_config.json) or kohya / A1111
/// (lora_down / lora_up, scaling from a per-module alpha tensor).
enum class adapter_format { peft, kohya };

inline const char* to_string(adapter_format f) noexcept {
  return f == adapter_format::peft ? "peft" : "kohya";
}

/// What layer a module adapts. Conv factors are flattened: A is r × (in·kh·kw), B is out × r.
/// Embedding modules (PEFT lora_embedding_A/B) store A as r × num_embeddings and B as
/// dim × r, and their ΔW in the embedding table's layout is (s·B·A)ᵀ.
enum class module_kind { linear, conv, embedding };

inline const char* to_string(module_kind k) noexcept {
  switch (k) {
    case module_kind::linear: return "linear";
    case module_kind::conv: return "conv";
    case module_kind::embedding: return "embedding";
  }
  return "unknown";
}

/// One LoRA module: ΔW = scale · B · A with B d × r and A r × k (DESIGN.md §1).
template <class S = float>
struct adapter_module {
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// The key prefix in the file, without the factor suffix: "base_model.model.model.layers.0.
  /// self_attn.q_proj" (PEFT) or "lora_unet_down_blocks_0_..._to_q" (kohya).
  std::string name;
  module_kind kind = module_kind::linear;
  matrix B;  ///< d × r (PEFT lora_B, kohya lora_up)
  matrix A;  ///< r × k (PEFT lora_A, kohya lora_down), conv kernels flattened
  double scale = 1;  ///< s, resolved from the dialect's alpha and rank rules
  /// ΔW is applied transposed to the base weight: embedding modules, and PEFT fan_in_fan_out
  /// (GPT-2 Conv1D stores weights in × out). The factors themselves keep the convention above.
  bool transposed = false;
  std::vector<std::uint64_t> B_shape;  ///< B's shape in the file (out × r × 1 × 1 for conv)
  std::vector<std::uint64_t> A_shape;  ///< A's shape in the file (r × in × kh × kw for conv)
  io::dtype B_dtype = io::dtype::F32;  ///< the file's dtype of B, used when writing back
  io::dtype A_dtype = io::dtype::F32;
  /// Tensors that belong to the module and are written back with it: the DoRA magnitude
  /// (PEFT lora_magnitude_vector, kohya dora_scale) and the lora_B bias. Keys are full names.
  std::vector<tensor> extras;

  index rows() const noexcept { return B.rows(); }
  index cols() const noexcept { return A.cols(); }
  index rank() const noexcept { return A.rows(); }

  /// ΔW as a lola expression over the factors (no copy).
  auto delta() const { return factor(B, A, static_cast<S>(scale)); }

  /// f(B, A): the factors, as module_view::visit (io/adapter_view.hpp) gives a view's.
  template <class F>
  decltype(auto) visit(F&& f) const {
    return f(B, A);
  }

  /// The shapes to write A and B with: the file's (conv kernels stay 4-D) when they still hold
  /// the factors, else the plain matrix shapes.
  std::vector<std::uint64_t> A_file_shape() const { return file_shape(A_shape, A, 0); }
  std::vector<std::uint64_t> B_file_shape() const { return file_shape(B_shape, B, 1); }

  /// Replaces the factors and the scale; the file shapes follow the new rank (dimension 0 of A,
  /// dimension 1 of B). Then fit_to_dtypes(), so that the module can be written in its dtypes.
  void set_factors(matrix new_B, matrix new_A, double new_scale) {
    B = std::move(new_B);
    A = std::move(new_A);
    scale = new_scale;
    if (!A_shape.empty()) A_shape[0] = static_cast<std::uint64_t>(A.rows());
    if (B_shape.size() >= 2) B_shape[1] = static_cast<std::uint64_t>(B.cols());
    fit_to_dtypes();
  }

  /// Makes every factor entry fit its file dtype (B_dtype, A_dtype) without changing ΔW: s·B·A is
  /// invariant under (B·2⁻ᵉ, A·2ᵉ, s) and under (B·2⁻ᵉ, A, s·2ᵉ), and scaling by a power of two is
  /// exact. With m_B = max|B|, m_A = max|A| and the dtypes' largest finite values L_B, L_A, the
  /// exponents e with m_B·2⁻ᵉ ≤ L_B and m_A·2ᵉ ≤ L_A form an interval [lo, hi]:
  ///   0 ∈ [lo, hi]   nothing changes (the common case: one max|·| pass over each factor);
  ///   lo ≤ hi        B·2⁻ᵉ, A·2ᵉ with e the interval's middle (both factors keep equal headroom
  ///                  above their dtype's subnormals);
  ///   lo > hi        B·2⁻ˡᵒ, A·2ʰⁱ and s·2^(lo−hi): the factors at the top of their dtypes, the
  ///                  rest in s, which must stay finite with s·r finite (the dialects write
  ///                  α = s·r or s·√r).
  /// Errors (numerical, naming the module): factors or scale that are not finite; a scale that
  /// cannot take the difference.
  void fit_to_dtypes() {
    const std::string where = "module \"" + name + "\"";
    if (!std::isfinite(scale))
      throw error(error_code::numerical, where + ": the scale is not finite");
    const double m_B = max_magnitude(B, where + ": B"), m_A = max_magnitude(A, where + ": A");
    const double L_B = max_value(B_dtype), L_A = max_value(A_dtype);
    if (m_B <= L_B && m_A <= L_A) return;
    constexpr int unbounded = 1 << 20;
    // lo: the least e with m_B·2⁻ᵉ ≤ L_B; hi: the greatest e with m_A·2ᵉ ≤ L_A.
    const int lo = m_B > 0 ? least_exponent(m_B, L_B) : -unbounded;
    const int hi = m_A > 0 ? -least_exponent(m_A, L_A) : unbounded;
    if (lo <= hi) {
      const int e = lo == -unbounded ? std::min(0, hi) : hi == unbounded ? std::max(0, lo) : lo + (hi - lo) / 2;
      scale_by_power_of_two(B, -e);
      scale_by_power_of_two(A, e);
      return;
    }
    const double new_scale = std::ldexp(scale, lo - hi);
    if (!std::isfinite(new_scale) || !std::isfinite(new_scale * static_cast<double>(rank()))) {
      char text[320];
      std::snprintf(text, sizeof text,
                    ": the factors do not fit %s and %s (max |B| = %.6g, max |A| = %.6g) and the scale "
                    "cannot take the difference (s = %.6g times 2^%d is not finite)",
                    std::string(dtype_name(B_dtype)).c_str(), std::string(dtype_name(A_dtype)).c_str(),
                    m_B, m_A, scale, lo - hi);
      throw error(error_code::numerical, where + text);
    }
    scale_by_power_of_two(B, -lo);
    scale_by_power_of_two(A, hi);
    scale = new_scale;
  }

 private:
  /// max |x| over the entries, as double; error naming `what` when an entry is not finite.
  static double max_magnitude(const matrix& x, const std::string& what) {
    if (x.size() == 0) return 0;
    const double m = static_cast<double>(x.cwiseAbs().maxCoeff());
    if (!std::isfinite(m) || !x.allFinite())
      throw error(error_code::numerical, what + " is not finite");
    return m;
  }

  /// The largest finite value of dtype t that S can reach (a float factor never exceeds FLT_MAX).
  static double max_value(io::dtype t) {
    return std::min(dtype_max(t), static_cast<double>(std::numeric_limits<S>::max()));
  }

  /// The least integer e with m·2⁻ᵉ ≤ limit, for m, limit > 0.
  static int least_exponent(double m, double limit) {
    int e_m = 0, e_l = 0;
    std::frexp(m, &e_m);
    std::frexp(limit, &e_l);
    // m ∈ [2^(e_m − 1), 2^e_m), limit ∈ [2^(e_l − 1), 2^e_l): the answer is e_m − e_l or one more.
    int e = e_m - e_l;
    while (std::ldexp(m, -e) > limit) ++e;
    while (std::ldexp(m, -(e - 1)) <= limit) --e;
    return e;
  }

  static void scale_by_power_of_two(matrix& x, int e) {
    if (e != 0) x = x.unaryExpr([e](S v) { return static_cast<S>(std::ldexp(v, e)); });
  }

  static std::vector<std::uint64_t> file_shape(const std::vector<std::uint64_t>& shape,
                                               const matrix& m, std::size_t rank_dim) {
    std::uint64_t n = 1;
    for (auto s : shape) n *= s;
    const auto rank = static_cast<std::uint64_t>(rank_dim == 0 ? m.rows() : m.cols());
    if (shape.size() >= 2 && n == static_cast<std::uint64_t>(m.size()) && shape[rank_dim] == rank)
      return shape;
    return {static_cast<std::uint64_t>(m.rows()), static_cast<std::uint64_t>(m.cols())};
  }
};

/// An adapter's modules in file order with what surrounds them: passthrough tensors, metadata and
/// dialect. Module is adapter_module<S> (owning factors, for editing: `adapter`) or module_view
/// (the factors as the file stores them: io/adapter_view.hpp).
template <class Module>
struct basic_adapter {
  using module_type = Module;

  adapter_format format = adapter_format::peft;
  std::vector<module_type> modules;  ///< in the order their first key appears in the header
  std::vector<tensor> passthrough;   ///< tensors that are not LoRA factors, kept untouched
  metadata_map metadata;             ///< the safetensors __metadata__
  json_value config;                 ///< PEFT adapter_config.json; null when there is none
  std::vector<std::string> warnings; ///< what the reader noticed but accepted (listed, never dropped)

  const module_type* find(std::string_view name) const noexcept {
    auto it = std::find_if(modules.begin(), modules.end(),
                           [&](const module_type& m) { return m.name == name; });
    return it == modules.end() ? nullptr : &*it;
  }
};

/// An adapter with owning factors of S, decoded from the file: what lola edits and writes.
template <class S = float>
struct adapter : basic_adapter<adapter_module<S>> {};

/// The key of a module's A factor in its dialect: <name>.lora_A.weight, <name>.lora_embedding_A
/// (PEFT) or <name>.lora_down.weight (kohya).
template <class Module>
std::string A_factor_key(adapter_format format, const Module& m) {
  if (format == adapter_format::kohya) return m.name + ".lora_down.weight";
  return m.name + (m.kind == module_kind::embedding ? ".lora_embedding_A" : ".lora_A.weight");
}

/// The module indices of `a` sorted by their A-factor keys: the order in which a reader that sorts
/// the file's keys meets the modules — safetensors.load_file(...) in Python, and so the LoL
/// reference code, which pairs the sorted tensors as (lora_A, lora_B) module by module. Models
/// trained with that code number their modules j in this order. Sorting whole keys (not names)
/// matters: "x-y.lora_A.weight" < "x.lora_A.weight" although the name "x" < "x-y".
template <class Module>
std::vector<std::size_t> lexicographic_module_order(const basic_adapter<Module>& a) {
  std::vector<std::string> keys;
  keys.reserve(a.modules.size());
  for (const auto& m : a.modules) keys.push_back(A_factor_key(a.format, m));
  std::vector<std::size_t> order(a.modules.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return keys[x] < keys[y]; });
  return order;
}

}  // namespace lola::io
