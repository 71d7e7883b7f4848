#pragma once
/// @file
/// What the PEFT and kohya readers share: pairing tensors into modules by key name (never by
/// order), and turning a module's factor tensors into B (d × r) and A (r × k) with the shape rules
/// of linear, conv and embedding LoRAs.
///
/// Finite input: every value a module computes with — B, A, the scale's inputs, and the tensors
/// kept with the module (DoRA magnitude, lora_B bias) — must be finite, always, in every reader:
/// NaN or ±inf in any of them (in F16, BF16, F32 or F64 storage), or an F64 value beyond the
/// compute type's range, is error_code::invalid_file naming the file, the tensor key, the module
/// and the element. The factors are checked while they are converted, block by block, so the
/// check adds no pass over memory. Passthrough tensors (not LoRA factors) are kept bit-exact and
/// not checked.

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io::detail {

/// An α written back (s·r, or s·√r): the nearest integer when within 1e-15 relative of it (the
/// rounding of the product is at most one ulp, 1.1e-16 relative), so the dialect's rule α/r gives
/// back s; otherwise α itself. Integers beyond 9e15 (above 2⁵³ spacing is 2 or more) stay as they are.
inline double snap_alpha(double alpha) {
  const double nearest = std::round(alpha);
  return std::abs(alpha - nearest) <= 1e-15 * std::abs(alpha) && std::abs(nearest) < 9e15 ? nearest : alpha;
}

/// What a key is to its module.
enum class key_role { A, B, alpha, extra, foreign };

/// A key suffix and what it marks. The module name is the key with the suffix removed.
struct key_rule {
  std::string_view suffix;
  key_role role;
  module_kind kind;
};

/// The keys of one module, as found in the header.
struct module_keys {
  std::string name;
  module_kind kind = module_kind::linear;
  const tensor_info* A = nullptr;
  const tensor_info* B = nullptr;
  const tensor_info* alpha = nullptr;
  std::vector<const tensor_info*> extras;
  std::vector<const tensor_info*> foreign;  ///< keys that make the module something other than B·A
};

/// Groups the header's tensors into modules by the rules (first matching suffix wins), in the
/// order each module's first key appears. Keys no rule matches go to `unmatched`, in header order.
inline std::vector<module_keys> group_modules(const safetensors_view& file,
                                              const std::vector<key_rule>& rules,
                                              std::vector<const tensor_info*>& unmatched) {
  std::vector<module_keys> modules;
  // Keyed by views into the header's names (which outlive the map): one allocation per module.
  std::unordered_map<std::string_view, std::size_t> index_of;
  index_of.reserve(file.tensors().size());
  for (const auto& t : file.tensors()) {
    const key_rule* rule = nullptr;
    for (const auto& r : rules)
      if (t.name.size() > r.suffix.size() &&
          std::string_view(t.name).substr(t.name.size() - r.suffix.size()) == r.suffix) {
        rule = &r;
        break;
      }
    if (!rule) {
      unmatched.push_back(&t);
      continue;
    }
    const std::string_view name = std::string_view(t.name).substr(0, t.name.size() - rule->suffix.size());
    auto [it, inserted] = index_of.emplace(name, modules.size());
    if (inserted) {
      modules.emplace_back();
      modules.back().name = std::string(name);
    }
    auto& m = modules[it->second];
    auto claim = [&](const tensor_info*& slot, const char* what) {
      if (slot)
        throw error(error_code::invalid_file, file.source() + ": module \"" + m.name + "\" has two " +
                                                  what + " tensors: \"" + slot->name + "\" and \"" +
                                                  t.name + "\"");
      slot = &t;
    };
    switch (rule->role) {
      case key_role::A:
        claim(m.A, "A (down)");
        m.kind = rule->kind;
        break;
      case key_role::B: claim(m.B, "B (up)"); break;
      case key_role::alpha: claim(m.alpha, "alpha"); break;
      case key_role::extra: m.extras.push_back(&t); break;
      case key_role::foreign: m.foreign.push_back(&t); break;
    }
  }
  return modules;
}

/// "[2, 5]": the position of flat (row-major) element i in a tensor of the given shape.
inline std::string element_position(const std::vector<std::uint64_t>& shape, std::uint64_t i) {
  std::vector<std::uint64_t> position(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    position[d] = shape[d] ? i % shape[d] : 0;
    i = shape[d] ? i / shape[d] : 0;
  }
  return shape_to_string(position);
}

/// The error for element i of tensor t, whose value converted to the compute type is not finite:
/// "<where>: tensor "<key>" is not finite: element [2, 5] of F16 [8, 4] is NaN" (or, for a finite
/// F64 value beyond float, "... is 1e+300, beyond the range of the compute type").
/// `bytes` holds t's elements (read from the file into a buffer of its own).
inline error non_finite_error(const tensor_info& t, const std::byte* bytes, std::uint64_t i, const std::string& where) {
  return error(error_code::invalid_file,
               where + ": tensor \"" + t.name + "\" is not finite: element " + element_position(t.shape, i) +
                   " of " + std::string(dtype_name(t.dtype)) + " " + shape_to_string(t.shape) + " is " +
                   describe_non_finite(bytes, t.dtype, static_cast<std::size_t>(i)));
}
inline error non_finite_error(const safetensors_view& file, const tensor_info& t, std::uint64_t i,
                              const std::string& where) {
  return non_finite_error(t, file.bytes(t), i, where);
}

/// Checks that every element of tensor t, stored at `bytes` (t.element_count() elements of
/// t.dtype), converts to a finite value of the compute type; throws non_finite_error otherwise.
inline void require_finite_stored(const tensor_info& t, const std::byte* bytes, const std::string& where) {
  const auto n = static_cast<std::size_t>(t.element_count());
  const std::size_t bad = first_non_finite_stored(bytes, t.dtype, n, where + ": tensor \"" + t.name + "\"");
  if (bad < n) throw non_finite_error(t, bytes, bad, where);
}

/// Tensor t as a rows × cols row-major matrix of S, converted and checked finite in one pass.
template <class S>
Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> finite_matrix(
    const safetensors_view& file, const tensor_info& t, index rows, index cols, const std::string& where) {
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(rows, cols);
  const auto n = static_cast<std::size_t>(t.element_count());
  const std::size_t bad = decode_finite_elements(file.bytes(t), t.dtype, n, m.data(),
                                                 where + ": tensor \"" + t.name + "\"");
  if (bad < n) throw non_finite_error(file, t, bad, where);
  return m;
}

/// Checks that every element of t is finite when t has a floating dtype lola converts; other
/// dtypes (integers, F8) are kept as they are. One pass through a small buffer of double.
inline void require_finite_tensor(const safetensors_view& file, const tensor_info& t,
                                  const std::string& where) {
  if (!is_math_dtype(t.dtype)) return;
  constexpr std::size_t block = 1024;
  double buffer[block];
  const auto n = static_cast<std::size_t>(t.element_count());
  const std::size_t width = dtype_bits(t.dtype) / 8;
  for (std::size_t begin = 0; begin < n; begin += block) {
    const std::size_t count = std::min(block, n - begin);
    const std::size_t bad = decode_finite_elements(file.bytes(t) + begin * width, t.dtype, count, buffer);
    if (bad < count) throw non_finite_error(file, t, begin + bad, where);
  }
}

/// What a module's keys say before any value is read: its factors' tensors, checked (see
/// module_layout_of), and the matrix shapes they are read as.
struct module_layout {
  std::string name;
  std::string where;  ///< "<file>: module \"<name>\"", the prefix of every message about it
  module_kind kind = module_kind::linear;
  const tensor_info* A = nullptr;
  const tensor_info* B = nullptr;
  index rank = 0, rows = 0, cols = 0;  ///< r, d, k: B is d × r, A is r × k (conv kernels flattened)
};

/// The layout of a module from its tensors, checked: both present, floating dtypes, rank ≥ 1 and
/// equal in both, and the layer's shape rule:
///   linear, embedding: A is r × k, B is d × r;
///   conv: A is r × in × kh (× kw …), B is out × r × 1 (× 1 …) with every trailing size 1.
/// a_name and b_name are the dialect's words for the factors in messages.
inline module_layout module_layout_of(const safetensors_view& file, const module_keys& keys,
                                      const char* a_name, const char* b_name) {
  const std::string where = file.source() + ": module \"" + keys.name + "\"";
  if (!keys.A || !keys.B)
    throw error(error_code::invalid_file, where + " has " + (keys.A ? a_name : b_name) +
                                              " but no " + (keys.A ? b_name : a_name));
  const tensor_info& a = *keys.A;
  const tensor_info& b = *keys.B;
  for (const tensor_info* t : {&a, &b})
    detail::require_math_dtype(t->dtype, where + ": tensor \"" + t->name + "\"");
  auto shapes = [&] {
    return std::string(a_name) + " is " + shape_to_string(a.shape) + " and " + b_name + " is " +
           shape_to_string(b.shape);
  };
  const bool conv = a.shape.size() >= 3;
  bool ok = a.shape.size() >= 2 && b.shape.size() == (conv ? a.shape.size() : 2);
  for (std::size_t i = 2; ok && i < b.shape.size(); ++i) ok = b.shape[i] == 1;
  if (!ok)
    throw error(error_code::shape_mismatch,
                where + ": " + shapes() +
                    " (expected r×k and d×r, or a conv kernel r×in×kh×kw and out×r×1×1)");
  if (a.shape[0] != b.shape[1])
    throw error(error_code::shape_mismatch, where + ": the ranks differ: " + shapes());
  if (a.shape[0] == 0)
    throw error(error_code::invalid_file, where + " has rank 0: " + shapes());
  if (b.shape[0] == 0 || a.element_count() == 0)
    throw error(error_code::invalid_file, where + " has an empty weight (d or k is 0): " + shapes());

  module_layout l;
  l.name = keys.name;
  l.where = where;
  l.kind = conv ? module_kind::conv : keys.kind;
  l.A = &a;
  l.B = &b;
  std::uint64_t a_cols = 1;
  for (std::size_t i = 1; i < a.shape.size(); ++i) a_cols *= a.shape[i];
  l.rank = static_cast<index>(a.shape[0]);
  l.rows = static_cast<index>(b.shape[0]);
  l.cols = static_cast<index>(a_cols);
  return l;
}

/// A module with its factors decoded to S: the layout of module_layout_of, and every value of A,
/// B and the module's extras finite (see the file comment).
template <class S>
adapter_module<S> read_module(const safetensors_view& file, const module_keys& keys,
                              const char* a_name, const char* b_name) {
  const module_layout l = module_layout_of(file, keys, a_name, b_name);
  adapter_module<S> m;
  m.name = l.name;
  m.kind = l.kind;
  m.transposed = m.kind == module_kind::embedding;
  m.A = finite_matrix<S>(file, *l.A, l.rank, l.cols, l.where);
  m.B = finite_matrix<S>(file, *l.B, l.rows, l.rank, l.where);
  m.A_shape = l.A->shape;
  m.B_shape = l.B->shape;
  m.A_dtype = l.A->dtype;
  m.B_dtype = l.B->dtype;
  for (const tensor_info* t : keys.extras) {
    require_finite_tensor(file, *t, l.where);
    m.extras.push_back(tensor::copy_of(file, *t));
  }
  return m;
}

/// Selects the module reader for a module type (adapter_module<S> here, module_view in
/// io/adapter_view.hpp) by overloading, so that one dialect reader serves both.
template <class Module>
struct module_tag {};

template <class Adapter, class = void>
struct has_reader_tag : std::false_type {};
template <class Adapter>
struct has_reader_tag<Adapter, std::void_t<decltype(std::declval<const Adapter&>().reader_tag())>> : std::true_type {};

/// The tag the dialect readers read `out`'s modules with: out.reader_tag() where the adapter type
/// has one (adapter_view: whether its factors are read now or on visit), else module_tag of its
/// module type.
template <class Adapter>
auto module_tag_of(const Adapter& out) {
  if constexpr (has_reader_tag<Adapter>::value)
    return out.reader_tag();
  else
    return module_tag<typename Adapter::module_type>{};
}

template <class S>
adapter_module<S> read_module_as(module_tag<adapter_module<S>>, const safetensors_view& file,
                                 const module_keys& keys, const char* a_name, const char* b_name) {
  return read_module<S>(file, keys, a_name, b_name);
}

/// One warning line listing the passthrough keys ("N tensors are not LoRA factors and are kept
/// as they are: a, b, … (and K more)").
inline std::string passthrough_warning(const std::vector<tensor>& kept, std::string_view why) {
  std::string w = std::to_string(kept.size()) + " tensor" + (kept.size() == 1 ? " is" : "s are") +
                  " " + std::string(why) + " and kept as passthrough: ";
  const std::size_t shown = std::min<std::size_t>(kept.size(), 8);
  for (std::size_t i = 0; i < shown; ++i) w += (i ? ", " : "") + kept[i].name;
  if (kept.size() > shown) w += ", ... (" + std::to_string(kept.size() - shown) + " more)";
  return w;
}

}  // namespace lola::io::detail
