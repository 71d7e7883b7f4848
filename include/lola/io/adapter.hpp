#pragma once
/// @file
/// The in-memory adapter: ordered LoRA modules ΔW = s·B·A, the tensors that are not LoRA factors
/// (kept untouched), the file's metadata and the dialect it came from.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "lola/core/config.hpp"
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

  /// The shapes to write A and B with: the file's (conv kernels stay 4-D) when they still hold
  /// the factors, else the plain matrix shapes.
  std::vector<std::uint64_t> A_file_shape() const { return file_shape(A_shape, A, 0); }
  std::vector<std::uint64_t> B_file_shape() const { return file_shape(B_shape, B, 1); }

  /// Replaces the factors and the scale; the file shapes follow the new rank (dimension 0 of A,
  /// dimension 1 of B).
  void set_factors(matrix new_B, matrix new_A, double new_scale) {
    B = std::move(new_B);
    A = std::move(new_A);
    scale = new_scale;
    if (!A_shape.empty()) A_shape[0] = static_cast<std::uint64_t>(A.rows());
    if (B_shape.size() >= 2) B_shape[1] = static_cast<std::uint64_t>(B.cols());
  }

 private:
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

/// An adapter: its modules in file order, passthrough tensors, metadata and dialect.
template <class S = float>
struct adapter {
  using module_type = adapter_module<S>;

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

/// The key of a module's A factor in its dialect: <name>.lora_A.weight, <name>.lora_embedding_A
/// (PEFT) or <name>.lora_down.weight (kohya).
template <class S>
std::string A_factor_key(adapter_format format, const adapter_module<S>& m) {
  if (format == adapter_format::kohya) return m.name + ".lora_down.weight";
  return m.name + (m.kind == module_kind::embedding ? ".lora_embedding_A" : ".lora_A.weight");
}

/// The module indices of `a` sorted by their A-factor keys: the order in which a reader that sorts
/// the file's keys meets the modules — safetensors.load_file(...) in Python, and so the LoL
/// reference code, which pairs the sorted tensors as (lora_A, lora_B) module by module. Models
/// trained with that code number their modules j in this order. Sorting whole keys (not names)
/// matters: "x-y.lora_A.weight" < "x.lora_A.weight" although the name "x" < "x-y".
template <class S>
std::vector<std::size_t> lexicographic_module_order(const adapter<S>& a) {
  std::vector<std::string> keys;
  keys.reserve(a.modules.size());
  for (const auto& m : a.modules) keys.push_back(A_factor_key(a.format, m));
  std::vector<std::size_t> order(a.modules.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return keys[x] < keys[y]; });
  return order;
}

}  // namespace lola::io
