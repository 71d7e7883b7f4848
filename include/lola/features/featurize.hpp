#pragma once
/// @file
/// Featurization for LoL datasets: N adapters with one module layout → an N×F matrix, one row per
/// adapter, for each input type of the LoL paper (research/papers.md §3).
///
/// Layout. Modules are matched across adapters by name and laid out in the order
/// io::lexicographic_module_order(adapters[0]) gives: the order in which the LoL reference code,
/// which sorts the file's keys, numbers them. Module j of that order is one block of every row:
///   raw, align, canonical  vec(U_j) then vec(V_j), both row-major, with U = B (d×r) and V = Aᵀ (k×r)
///                          (the LoL paper's ΔW = U·Vᵀ): (d + k)·r features, exactly
///                          torch.cat([u_1, v_1, u_2, v_2, …], dim=0).flatten() of the reference
///                          SimpleNet. raw: the stored factors; align: the O-Align representative
///                          (B·Q, Qᵀ·A) against the template's module of the same name
///                          (canon/o_align.hpp); canonical: (B*, A*) (canon/canonical_form.hpp);
///   svd                    σ₁ ≥ … ≥ σ_R of B·A, zero-padded or truncated to R
///                          (features/spectrum.hpp): R = options.rank, or the module's rank in
///                          adapters[0] when options.rank < 0;
///   dense                  vec(B·A), row-major: d·k features.
/// The scale s is ignored, as in the reference code, unless fold_scale: then U = s·B' for the kind's
/// left factor B', svd gives σ(s·B·A) and dense vec(s·B·A); V never carries s. Factors are taken as
/// stored: conv factors flattened, and the `transposed` flag (embedding, fan_in_fan_out) not applied.
///
/// Invariance under the per-module symmetry GL(r₁) × … × GL(r_L) (DESIGN.md §1):
///   raw        none: any G_j ≠ I moves the row;
///   svd, dense GL(r)-invariant: functions of ΔW alone;
///   align      O(r)-invariant only: (B·Q₀, Q₀ᵀ·A) gives the same row, a general G does not;
///   canonical  GL(r)-invariant up to rounding, except near a degenerate spectrum, where the
///              representative is ill-defined (sign ties, repeated σ; canonical_form.hpp).
///
/// Cost per module and adapter (d×k, rank r):
///   raw        O((d + k)·r): a copy (the transpose of A into V included);
///   svd        O((d + k)·r² + r³), no d×k matrix;
///   align      O((d + k)·r² + r³), plus a (d + k)·r copy of the aligned factors;
///   canonical  O((d + k)·r² + r³), likewise;
///   dense      O(d·k·r) time, the d·k values written straight into the row by one GEMM.
/// The (adapter, module) items run in parallel (core/parallel.hpp), each writing its own block.
/// featurize allocates the N·F values once and refuses, before allocating, when N·F exceeds
/// options.max_elements (dense mostly: one SD-1.4 UNet adapter has 46,755,840 dense features).
/// A table too large for one call is built in batches: table_layout once, require_table_fits for
/// the whole run, then featurize_into per batch of rows.
///
/// Rules, checked before any feature is computed: every adapter has the same module names (as a
/// set, each name once) and, per module, the same d and k; raw, align and canonical also need the
/// same rank per module (svd and dense accept any); align needs a template holding every module
/// with adapters[0]'s d, k and r (extra template modules are ignored). Violations are lola::error
/// naming the adapter (its index, options.indices[i] when given, and its label when options.labels
/// gives one), the module and both shapes. An empty list of adapters gives a 0×0 matrix: without a
/// first adapter there is no layout.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/canon/canonical_form.hpp"
#include "lola/canon/o_align.hpp"
#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/core/shape.hpp"
#include "lola/features/adapter_spectra.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/module_lookup.hpp"
#include "lola/linalg/batched_factor_svd.hpp"

namespace lola {

/// The LoL input types (research/papers.md §3.1–3.4, and the SVD canonical form of canon/).
enum class feature_kind { raw, svd, dense, align, canonical };

inline const char* to_string(feature_kind kind) noexcept {
  switch (kind) {
    case feature_kind::raw: return "raw";
    case feature_kind::svd: return "svd";
    case feature_kind::dense: return "dense";
    case feature_kind::align: return "align";
    case feature_kind::canonical: return "canonical";
  }
  return "unknown";
}

/// The kind spelled as to_string spells it; nullopt for anything else.
inline std::optional<feature_kind> parse_feature_kind(std::string_view name) noexcept {
  for (auto kind : {feature_kind::raw, feature_kind::svd, feature_kind::dense, feature_kind::align,
                    feature_kind::canonical})
    if (name == to_string(kind)) return kind;
  return std::nullopt;
}

template <class S>
struct featurize_options {
  feature_kind kind = feature_kind::svd;
  /// svd: σ per module, zero-padded or truncated to this length; < 0: each module's rank in the
  /// first adapter.
  index rank = -1;
  /// align: the template adapter (required); its modules are matched by name.
  const io::adapter<S>* templ = nullptr;
  /// canonical: which canonical form.
  canonical_form form = canonical_form::balanced;
  /// false: the LoL reference (s ignored); true: U = s·B (ΔW = s·B·A), σ and dense of s·B·A.
  bool fold_scale = false;
  /// featurize throws invalid_argument, before allocating, when N·F exceeds this.
  std::uint64_t max_elements = std::uint64_t(1) << 30;
  /// Optional names of the adapters (file paths, say) for error messages: empty, or one per adapter.
  std::vector<std::string> labels;
  /// Optional index of each adapter in the caller's whole run, for error messages ("adapter 130"):
  /// empty, adapters[i] is adapter i; else one per adapter. For a batch cut from a longer list,
  /// the adapter that fixes the layout put first and adapters left out: {7, 64, 65, 67, …}.
  std::vector<std::size_t> indices;
};

/// Where module `name` lies in a feature row: columns [offset, offset + size).
struct feature_block {
  std::string name;
  index offset = 0;
  index size = 0;
  index rows = 0;  ///< d
  index cols = 0;  ///< k
  index rank = 0;  ///< r in the first adapter; svd: R, the number of singular values
};

/// One row of features per adapter, row-major.
template <class S>
using feature_matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {

inline std::string featurize_context(feature_kind kind) {
  return std::string("featurize(") + to_string(kind) + ")";
}

/// "adapter <index> (<label>)": adapters[i] as messages name it (featurize_options::indices, labels).
template <class S>
std::string adapter_name(std::size_t i, const featurize_options<S>& options) {
  const auto& labels = options.labels;
  std::string out = "adapter " + std::to_string(i < options.indices.size() ? options.indices[i] : i);
  if (i < labels.size() && !labels[i].empty()) out += " (" + labels[i] + ")";
  return out;
}

/// "dxk rank r", the shape of a module in featurize's messages.
inline std::string module_shape(index d, index k, index r) {
  return shape_string(d, k) + " rank " + std::to_string(r);
}

/// The block of module m (of the first adapter) at `offset`.
template <class S, class Module>
feature_block make_block(const Module& m, const featurize_options<S>& options, index offset) {
  feature_block b{m.name, offset, 0, m.rows(), m.cols(), m.rank()};
  switch (options.kind) {
    case feature_kind::raw:
    case feature_kind::align:
    case feature_kind::canonical: b.size = (b.rows + b.cols) * b.rank; break;
    case feature_kind::svd:
      if (options.rank >= 0) b.rank = options.rank;
      b.size = b.rank;
      break;
    case feature_kind::dense:
      if (b.cols > 0 && b.rows > std::numeric_limits<index>::max() / b.cols)
        throw error(error_code::invalid_argument,
                    featurize_context(options.kind) + ": module '" + m.name + "' (" +
                        shape_string(b.rows, b.cols) + ") has more dense features than an index holds");
      b.size = b.rows * b.cols;
      break;
  }
  return b;
}

/// (U, V) = (s·B, Aᵀ) written row-major at dst: d·r values, then k·r (assign_scaled: a copy on
/// the host, a download from another backend).
template <class S, class MB, class MA>
void write_factor_block(S* dst, S s, const MB& B, const MA& A) {
  using detail::assign_scaled;
  using map = Eigen::Map<feature_matrix<S>>;
  const index d = B.rows(), r = B.cols(), k = A.cols();
  assign_scaled(map(dst, d, r), s, B);
  assign_scaled(map(dst + d * r, k, r), S(1), A.transpose());
}

}  // namespace detail

/// The blocks of a feature row, in layout order (see the file comment); `first` fixes the layout.
/// Throws invalid_argument when a module name occurs twice in `first`.
template <class S, class Adapter>
std::vector<feature_block> feature_layout(const Adapter& first, const featurize_options<S>& options) {
  const auto order = io::lexicographic_module_order(first);
  std::vector<feature_block> blocks;
  blocks.reserve(order.size());
  std::unordered_set<std::string_view> seen;
  seen.reserve(order.size());
  index offset = 0;
  for (std::size_t j = 0; j < order.size(); ++j) {
    const auto& m = first.modules[order[j]];
    if (!seen.insert(m.name).second)
      throw error(error_code::invalid_argument,
                  detail::featurize_context(options.kind) + ": " +
                      detail::adapter_name(0, options) + " has module '" + m.name +
                      "' twice; modules are matched across adapters by name");
    blocks.push_back(detail::make_block(m, options, offset));
    if (blocks.back().size > std::numeric_limits<index>::max() - offset)
      throw error(error_code::invalid_argument,
                  detail::featurize_context(options.kind) + ": a row of " + detail::adapter_name(0, options) +
                      " has more features than an index holds (at module '" + m.name + "', " +
                      std::to_string(blocks.back().size) + " features)");
    offset += blocks.back().size;
  }
  return blocks;
}

/// A feature table's layout, fixed by its first adapter: the blocks of a row (feature_layout) and
/// the adapter every other row is checked against (the same module names, d and k, and r where the
/// kind needs it), named in messages as first_name. Holds `first` by pointer: it must outlive the
/// layout. A table built in batches (featurize_into) keeps one layout for all of them, so the
/// first adapter is neither reloaded nor featurized again per batch. Adapter is io::adapter<S> or
/// io::adapter_view (factors as the file stores them, widened as the kernels read them).
template <class S, class Adapter = io::adapter<S>>
struct feature_table_layout {
  const Adapter* first = nullptr;
  std::string first_name;
  std::vector<feature_block> blocks;

  /// F, the number of features in a row.
  index features() const { return blocks.empty() ? 0 : blocks.back().offset + blocks.back().size; }
};

/// The layout `first` fixes; `first` is named as options.indices and options.labels name their
/// entry 0 (adapter 0 when they are empty).
template <class S, class Adapter>
feature_table_layout<S, Adapter> table_layout(const Adapter& first, const featurize_options<S>& options) {
  return {&first, detail::adapter_name(0, options), feature_layout(first, options)};
}

/// Throws invalid_argument, before anything is allocated, when N rows of `layout` exceed
/// options.max_elements values, naming the largest block (dense features mostly: one SD-1.4 UNet
/// adapter has 46,755,840).
template <class S, class Adapter>
void require_table_fits(std::uint64_t N, const feature_table_layout<S, Adapter>& layout,
                        const featurize_options<S>& options) {
  const auto F = static_cast<std::uint64_t>(layout.features());
  if (F == 0 || N <= options.max_elements / F) return;
  const feature_block* largest = &layout.blocks.front();
  for (const auto& b : layout.blocks)
    if (b.size > largest->size) largest = &b;
  throw error(error_code::invalid_argument,
              detail::featurize_context(options.kind) + ": " + std::to_string(N) + " adapters x " +
                  std::to_string(F) + " features exceed max_elements = " +
                  std::to_string(options.max_elements) + "; the largest block is module '" +
                  largest->name + "' (" +
                  detail::module_shape(largest->rows, largest->cols, largest->rank) + ", " +
                  std::to_string(largest->size) + " features)");
}

namespace detail {

/// The checks that need no layout: labels, indices, template, null pointers.
template <class S, class Adapter>
void check_featurize_inputs(const std::vector<const Adapter*>& adapters, const featurize_options<S>& options) {
  const std::string context = featurize_context(options.kind);
  if (!options.labels.empty() && options.labels.size() != adapters.size())
    throw error(error_code::invalid_argument,
                context + ": " + std::to_string(options.labels.size()) + " labels for " +
                    std::to_string(adapters.size()) + " adapters");
  if (!options.indices.empty() && options.indices.size() != adapters.size())
    throw error(error_code::invalid_argument,
                context + ": " + std::to_string(options.indices.size()) + " indices for " +
                    std::to_string(adapters.size()) + " adapters");
  if (options.kind == feature_kind::align && options.templ == nullptr)
    throw error(error_code::invalid_argument,
                context + ": O-Align needs a template adapter (featurize_options::templ)");
  for (std::size_t i = 0; i < adapters.size(); ++i)
    if (adapters[i] == nullptr)
      throw error(error_code::invalid_argument,
                  context + ": " + adapter_name(i, options) + " is a null pointer");
}

/// Matches every adapter's modules to the blocks of `layout`, checks them against layout.first,
/// and fills the N rows of F values at out, out + stride, ….
template <class S, class Adapter>
void featurize_rows(const feature_table_layout<S, Adapter>& layout, const std::vector<const Adapter*>& adapters,
                    const featurize_options<S>& options, S* out, index stride) {
  using module_type = typename Adapter::module_type;
  const std::string context = featurize_context(options.kind);
  const auto name_of = [&](std::size_t i) { return adapter_name(i, options); };
  const std::string& first_name = layout.first_name;
  const std::vector<feature_block>& blocks = layout.blocks;
  const Adapter& first = *layout.first;
  const index L = static_cast<index>(blocks.size());
  const index N = static_cast<index>(adapters.size());
  const bool same_rank = options.kind == feature_kind::raw || options.kind == feature_kind::align ||
                         options.kind == feature_kind::canonical;
  // Block j's rank in the first adapter (block.rank is R for svd), and the name → block map.
  const auto order = io::lexicographic_module_order(first);
  std::vector<index> first_rank(static_cast<std::size_t>(L));
  std::unordered_map<std::string_view, index> position;
  position.reserve(blocks.size());
  for (index j = 0; j < L; ++j) {
    position.emplace(blocks[std::size_t(j)].name, j);
    first_rank[std::size_t(j)] = first.modules[order[std::size_t(j)]].rank();
  }

  // The template's module of each block, checked against the first adapter.
  std::vector<const io::adapter_module<S>*> templ(options.kind == feature_kind::align ? blocks.size()
                                                                                       : 0);
  if (!templ.empty()) {
    const io::module_lookup templ_modules(*options.templ);
    for (std::size_t j = 0; j < templ.size(); ++j) templ[j] = templ_modules.find(blocks[j].name);
  }
  for (std::size_t j = 0; j < templ.size(); ++j) {
    const feature_block& b = blocks[j];
    if (templ[j] == nullptr)
      throw error(error_code::invalid_argument,
                  context + ": the template lacks module '" + b.name + "' of " + first_name);
    if (templ[j]->rows() != b.rows || templ[j]->cols() != b.cols || templ[j]->rank() != b.rank)
      throw error(error_code::shape_mismatch,
                  context + ": module '" + b.name + "' is " + module_shape(b.rows, b.cols, b.rank) +
                      " in " + first_name + " but " +
                      module_shape(templ[j]->rows(), templ[j]->cols(), templ[j]->rank()) +
                      " in the template");
  }

  // The template's factors where the adapters' factors live: borrowed on the host, else uploaded
  // once per block (detail::in_storage).
  using storage = io::module_storage_t<module_type>;
  std::vector<std::pair<factor_matrix_t<storage, S>, factor_matrix_t<storage, S>>> uploaded;
  if constexpr (!std::is_same_v<storage, host_storage>)
    for (const auto* t : templ)
      uploaded.emplace_back(detail::in_storage<storage>(t->B), detail::in_storage<storage>(t->A));
  const auto template_factors = [&](std::size_t j) {
    if constexpr (std::is_same_v<storage, host_storage>)
      return factor(templ[j]->B, templ[j]->A);
    else
      return factor(uploaded[j].first, uploaded[j].second);
  };

  // modules[i·L + j]: adapter i's module of block j.
  std::vector<const module_type*> modules(static_cast<std::size_t>(N * L), nullptr);
  parallel_for(N, [&](index i) {
    const Adapter& a = *adapters[std::size_t(i)];
    const module_type** row = modules.data() + i * L;
    for (const auto& m : a.modules) {
      const auto it = position.find(m.name);
      if (it == position.end())
        throw error(error_code::invalid_argument,
                    context + ": " + name_of(std::size_t(i)) + " has module '" + m.name +
                        "', which " + first_name + " lacks");
      const index j = it->second;
      if (row[j] != nullptr)
        throw error(error_code::invalid_argument, context + ": " + name_of(std::size_t(i)) +
                                                      " has module '" + m.name + "' twice");
      const feature_block& b = blocks[std::size_t(j)];
      const index r0 = first_rank[std::size_t(j)];
      if (m.rows() != b.rows || m.cols() != b.cols || (same_rank && m.rank() != r0))
        throw error(error_code::shape_mismatch,
                    context + ": module '" + m.name + "' is " + module_shape(b.rows, b.cols, r0) +
                        " in " + first_name + " but " +
                        module_shape(m.rows(), m.cols(), m.rank()) + " in " +
                        name_of(std::size_t(i)) +
                        (same_rank ? "; raw, align and canonical features need one d, k and r per "
                                     "module (svd and dense accept any r)"
                                   : ""));
      row[j] = &m;
    }
    for (index j = 0; j < L; ++j)
      if (row[j] == nullptr)
        throw error(error_code::invalid_argument,
                    context + ": " + name_of(std::size_t(i)) + " lacks module '" +
                        blocks[std::size_t(j)].name + "' of " + first_name);
  });

  // An error from item i·L + j, naming the module, its shape and the adapter.
  const auto module_error = [&](std::size_t item, const error& e) {
    const module_type& m = *modules[item];
    return error(e.code(), context + ": module '" + m.name + "' (" + module_shape(m.rows(), m.cols(), m.rank()) +
                               ") of " + name_of(item / std::size_t(L)) + ": " + e.message());
  };
  const executor ex{};
  // svd: σ of every item at once, batched by rank across the table (features/adapter_spectra.hpp).
  std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> spectra;
  if (options.kind == feature_kind::svd)
    spectra = detail::batched_singular_values<S>(
        modules, [&](const module_type& m) { return options.fold_scale ? static_cast<S>(m.scale) : S(1); },
        module_error, ex);
  // canonical: the factor-space SVDs of every item (of B·A, the scale apart) batched by rank
  // likewise, with the singular vectors (linalg/batched_factor_svd.hpp); each item's factors are
  // canonicalize's for it alone, bit for bit.
  std::optional<gram_route_batches<S>> canonical_svds;
  if (options.kind == feature_kind::canonical)
    canonical_svds.emplace(modules, [](const module_type&) { return S(1); }, ex, true);

  // svd items only copy σ: taken in runs; the rest one by one.
  const index grain = options.kind == feature_kind::svd ? fine_grain(ex, N * L) : 1;
  parallel_for(ex, N * L, [&](index item) {
    const index i = item / L, j = item % L;
    const feature_block& b = blocks[std::size_t(j)];
    const module_type& m = *modules[std::size_t(item)];
    S* dst = out + i * stride + b.offset;
    if (options.kind == feature_kind::svd) {  // σ is computed: the factors need not be read again
      Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, 1>> row(dst, b.size);
      detail::pad_or_truncate_into(spectra[std::size_t(item)], row);
      return;
    }
    const S s = options.fold_scale ? static_cast<S>(m.scale) : S(1);
    try {
      m.visit([&](const auto& B_stored, const auto& A_stored) {
        using detail::as_compute, detail::assign_scaled, detail::product_into;
        const auto& B = as_compute<S>(B_stored);
        const auto& A = as_compute<S>(A_stored);
        const auto delta = factor(B, A, s);
        switch (options.kind) {
          case feature_kind::raw: write_factor_block(dst, s, B, A); break;
          case feature_kind::svd: break;  // written above
          case feature_kind::dense: {
            Eigen::Map<feature_matrix<S>> W(dst, b.rows, b.cols);
            if (m.rank() == 0) {
              W.setZero();
            } else {
              // The GEMM over plain copies in S, s folded into B's, so that its rounding does not
              // depend on how the factors are stored (decoded, or as the file holds them).
              factor_matrix_t<storage, S> scaled_B(b.rows, m.rank()), plain_A(m.rank(), b.cols);
              assign_scaled(scaled_B, s, B);
              assign_scaled(plain_A, S(1), A);
              product_into<S>(scaled_B, plain_A, W);
            }
            break;
          }
          case feature_kind::align: {
            const auto aligned = o_align(delta, template_factors(std::size_t(j))).aligned;
            write_factor_block(dst, aligned.scale(), aligned.B(), aligned.A());
            break;
          }
          case feature_kind::canonical: {
            factor_space_svd<S, storage> svd;
            canonical_svds->finite_svd_of(std::size_t(item), B, A, S(1), svd, "canonicalize");
            const auto canonical = canonical_from_svd(svd, B, A, s, options.form, canonical_options<S>{}).factors;
            write_factor_block(dst, canonical.scale(), canonical.B(), canonical.A());
            break;
          }
        }
      });
    } catch (const error& e) {
      throw module_error(std::size_t(item), e);
    }
  }, grain);
}

/// S where it must not be deduced.
template <class S>
struct non_deduced {
  using type = S;
};

}  // namespace detail

/// Writes the features of adapters[i] into row i of `out`, which must be N×F (F from the layout):
/// one buffer reused across batches, or rows of a larger one. `layout` fixes the blocks and the
/// adapter the batch is checked against (table_layout of the run's first adapter, which need not
/// be in the batch). Allocates only the per-module work and an N·L table of module pointers;
/// max_elements is not consulted (require_table_fits).
template <class S, class Adapter>
void featurize_into(const feature_table_layout<S, Adapter>& layout, const std::vector<const Adapter*>& adapters,
                    const featurize_options<S>& options,
                    Eigen::Ref<feature_matrix<typename detail::non_deduced<S>::type>> out) {
  detail::check_featurize_inputs(adapters, options);
  if (layout.first == nullptr)
    throw error(error_code::invalid_argument,
                detail::featurize_context(options.kind) + ": the layout has no first adapter");
  const index N = static_cast<index>(adapters.size()), F = layout.features();
  detail::require_shapes(out.rows() == N && out.cols() == F,
                         "featurize_into (the output must be N x F, one row per adapter)",
                         "the output", out.rows(), out.cols(), "N x F", N, F);
  if (!adapters.empty())
    detail::featurize_rows(layout, adapters, options, out.data(), static_cast<index>(out.outerStride()));
}

/// featurize_into with the layout of adapters[0]. Adapter is io::adapter<T> or io::adapter_view.
template <class S, class Adapter>
void featurize_into(const std::vector<const Adapter*>& adapters, const featurize_options<S>& options,
                    Eigen::Ref<feature_matrix<typename detail::non_deduced<S>::type>> out) {
  detail::check_featurize_inputs(adapters, options);
  if (adapters.empty()) {
    detail::require_shapes(out.rows() == 0 && out.cols() == 0,
                           "featurize_into (the output must be N x F, one row per adapter)",
                           "the output", out.rows(), out.cols(), "N x F", 0, 0);
    return;
  }
  featurize_into(table_layout(*adapters.front(), options), adapters, options, out);
}

/// (owning adapters of S, listed in braces)
template <class S>
void featurize_into(const std::vector<const io::adapter<S>*>& adapters, const featurize_options<S>& options,
                    Eigen::Ref<feature_matrix<typename detail::non_deduced<S>::type>> out) {
  featurize_into<S, io::adapter<S>>(adapters, options, out);
}

/// The N×F feature matrix of `adapters`, row i for adapters[i] (see the file comment); 0×0 for
/// an empty list. Adapter is io::adapter<T> or io::adapter_view (its factors read as the file
/// stores them, widened as the kernels read them).
template <class S, class Adapter>
feature_matrix<S> featurize(const std::vector<const Adapter*>& adapters, const featurize_options<S>& options) {
  detail::check_featurize_inputs(adapters, options);
  if (adapters.empty()) return feature_matrix<S>(0, 0);
  const feature_table_layout<S, Adapter> layout = table_layout(*adapters.front(), options);
  require_table_fits(adapters.size(), layout, options);
  feature_matrix<S> out(static_cast<index>(adapters.size()), layout.features());
  detail::featurize_rows(layout, adapters, options, out.data(), layout.features());
  return out;
}

/// (owning adapters of S, computed in S by default)
template <class S>
feature_matrix<S> featurize(const std::vector<const io::adapter<S>*>& adapters,
                            const featurize_options<S>& options = {}) {
  return featurize<S, io::adapter<S>>(adapters, options);
}

}  // namespace lola
