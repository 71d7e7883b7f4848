#pragma once
/// @file
/// The in-memory adapter: ordered LoRA modules ΔW = s·B·A, the tensors that are not LoRA factors
/// (kept untouched), the file's metadata and the dialect it came from.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
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

namespace detail {

/// The shape to write a rows × cols factor with: `shape` (the file's, conv kernels 4-D) while it
/// still holds the factor with its rank at dimension rank_dim (0 for A, 1 for B), else rows × cols.
inline std::vector<std::uint64_t> factor_file_shape(const std::vector<std::uint64_t>& shape, index rows,
                                                    index cols, std::size_t rank_dim) {
  std::uint64_t n = 1;
  for (auto s : shape) n *= s;
  const auto rank = static_cast<std::uint64_t>(rank_dim == 0 ? rows : cols);
  if (shape.size() >= 2 && n == static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) &&
      shape[rank_dim] == rank)
    return shape;
  return {static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols)};
}

/// The least integer e with m·2⁻ᵉ ≤ limit, for m, limit > 0.
inline int least_exponent(double m, double limit) {
  int e_m = 0, e_l = 0;
  std::frexp(m, &e_m);
  std::frexp(limit, &e_l);
  // m ∈ [2^(e_m − 1), 2^e_m), limit ∈ [2^(e_l − 1), 2^e_l): the answer is e_m − e_l or one more.
  int e = e_m - e_l;
  while (std::ldexp(m, -e) > limit) ++e;
  while (std::ldexp(m, -(e - 1)) <= limit) --e;
  return e;
}

/// max |x| over the entries of a factor, as double; error naming `what` when one is not finite.
template <class X>
double finite_max_magnitude(const X& x, const std::string& what) {
  if (x.size() == 0) return 0;
  // One pass: the maximum propagates NaN, and is inf for an inf entry.
  const double m = static_cast<double>(x.cwiseAbs().template maxCoeff<Eigen::PropagateNaN>());
  if (!std::isfinite(m)) throw error(error_code::numerical, what + " is not finite");
  return m;
}

/// The powers of two that make every entry of the factors B (d×r) and A (r×k) fit their file
/// dtypes without changing ΔW = s·B·A: B·2^B_exponent, A·2^A_exponent and `scale`.
struct dtype_fit {
  int B_exponent = 0, A_exponent = 0;
  double scale = 1;
};

/// x·2ᵉ entry by entry (ldexp: exact wherever the result is normal), lazily.
template <class X>
auto times_power_of_two(const Eigen::MatrixBase<X>& x, int e) {
  using T = typename X::Scalar;
  return x.unaryExpr([e](T v) { return static_cast<T>(std::ldexp(v, e)); });
}

/// The fit of B and A (see dtype_fit). ΔW is invariant under (B·2⁻ᵉ, A·2ᵉ, s) and under
/// (B·2⁻ᵉ, A, s·2ᵉ). With m_B = max|B|, m_A = max|A| and the largest finite values L_B, L_A of
/// the dtypes (capped at the factors' scalar's), the exponents e with m_B·2⁻ᵉ ≤ L_B and
/// m_A·2ᵉ ≤ L_A form an interval [lo, hi]:
///   0 ∈ [lo, hi]   nothing changes (the common case: one max|·| pass over each factor);
///   lo ≤ hi        B·2⁻ᵉ, A·2ᵉ with e the interval's middle (both factors keep equal headroom
///                  above their dtype's subnormals);
///   lo > hi        B·2⁻ˡᵒ, A·2ʰⁱ and s·2^(lo−hi): the factors at the top of their dtypes, the
///                  rest in s, which must stay finite with s·r finite (the dialects write
///                  α = s·r or s·√r).
/// Errors (numerical, naming `where`): factors or scale that are not finite; a scale that cannot
/// take the difference.
template <class MB, class MA>
dtype_fit fit_to_dtypes(const Eigen::MatrixBase<MB>& B, const Eigen::MatrixBase<MA>& A, double scale,
                        io::dtype B_dtype, io::dtype A_dtype, const std::string& where) {
  using SB = typename MB::Scalar;
  using SA = typename MA::Scalar;
  if (!std::isfinite(scale)) throw error(error_code::numerical, where + ": the scale is not finite");
  const double m_B = finite_max_magnitude(B, where + ": B"), m_A = finite_max_magnitude(A, where + ": A");
  const double L_B = std::min(dtype_max(B_dtype), static_cast<double>(std::numeric_limits<SB>::max()));
  const double L_A = std::min(dtype_max(A_dtype), static_cast<double>(std::numeric_limits<SA>::max()));
  if (m_B <= L_B && m_A <= L_A) return {0, 0, scale};
  constexpr int unbounded = 1 << 20;
  // lo: the least e with m_B·2⁻ᵉ ≤ L_B; hi: the greatest e with m_A·2ᵉ ≤ L_A.
  const int lo = m_B > 0 ? least_exponent(m_B, L_B) : -unbounded;
  const int hi = m_A > 0 ? -least_exponent(m_A, L_A) : unbounded;
  if (lo <= hi) {
    const int e = lo == -unbounded ? std::min(0, hi) : hi == unbounded ? std::max(0, lo) : lo + (hi - lo) / 2;
    return {-e, e, scale};
  }
  const double new_scale = std::ldexp(scale, lo - hi);
  if (!std::isfinite(new_scale) || !std::isfinite(new_scale * static_cast<double>(A.rows()))) {
    char text[320];
    std::snprintf(text, sizeof text,
                  ": the factors do not fit %s and %s (max |B| = %.6g, max |A| = %.6g) and the scale "
                  "cannot take the difference (s = %.6g times 2^%d is not finite)",
                  std::string(dtype_name(B_dtype)).c_str(), std::string(dtype_name(A_dtype)).c_str(), m_B, m_A,
                  scale, lo - hi);
    throw error(error_code::numerical, where + text);
  }
  return {-lo, hi, new_scale};
}

}  // namespace detail

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
  std::vector<std::uint64_t> A_file_shape() const { return detail::factor_file_shape(A_shape, A.rows(), A.cols(), 0); }
  std::vector<std::uint64_t> B_file_shape() const { return detail::factor_file_shape(B_shape, B.rows(), B.cols(), 1); }

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

  /// Makes every factor entry fit its file dtype (B_dtype, A_dtype) without changing ΔW
  /// (detail::fit_to_dtypes).
  void fit_to_dtypes() {
    const detail::dtype_fit fit = detail::fit_to_dtypes(B, A, scale, B_dtype, A_dtype, "module \"" + name + "\"");
    if (fit.B_exponent != 0) B = detail::times_power_of_two(B, fit.B_exponent);
    if (fit.A_exponent != 0) A = detail::times_power_of_two(A, fit.A_exponent);
    scale = fit.scale;
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

namespace detail {
struct factor_storage {
  template <class MB, class MA>
  storage_of_t<MB> operator()(const MB&, const MA&) const {
    return {};
  }
};
}  // namespace detail

/// Where a module type's factors live (the storage tag of what its visit() hands over):
/// host_storage for adapter_module and module_view.
template <class Module>
using module_storage_t = decltype(std::declval<const Module&>().visit(detail::factor_storage{}));

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

/// The key of a module's B factor: <name>.lora_B.weight, <name>.lora_embedding_B (PEFT) or
/// <name>.lora_up.weight (kohya).
template <class Module>
std::string B_factor_key(adapter_format format, const Module& m) {
  if (format == adapter_format::kohya) return m.name + ".lora_up.weight";
  return m.name + (m.kind == module_kind::embedding ? ".lora_embedding_B" : ".lora_B.weight");
}

/// The tensors of a file about to be written: some held elsewhere (an adapter's passthrough and
/// extras, an encoded module's factors), referenced; some made for the write, owned. Laid out by
/// detail::lay_out_tensors and written from where they are, with no copy into a file image.
struct tensor_list {
  std::deque<tensor> owned;  ///< a deque: the items' pointers stay valid as it grows
  std::vector<const tensor*> items;

  void own(tensor t) {
    owned.push_back(std::move(t));
    items.push_back(&owned.back());
  }
  /// t must outlive the list.
  void refer(const tensor& t) { items.push_back(&t); }
  std::vector<tensor> copies() const {
    std::vector<tensor> out;
    out.reserve(items.size());
    for (const tensor* t : items) out.push_back(*t);
    return out;
  }
};

/// Adds m's A and B, encoded in their file dtypes and shapes, to `out` under the keys given.
template <class S>
void add_factor_tensors(tensor_list& out, const adapter_module<S>& m, std::string A_key, std::string B_key) {
  out.own(tensor::from_matrix(std::move(A_key), m.A_dtype, m.A_file_shape(), m.A));
  out.own(tensor::from_matrix(std::move(B_key), m.B_dtype, m.B_file_shape(), m.B));
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
