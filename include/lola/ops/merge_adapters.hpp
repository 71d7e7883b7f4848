#pragma once
/// @file
/// Merging whole adapters: modules are matched by name, and each merged module is the weighted sum
/// Σ wᵢ·sᵢ·BᵢAᵢ of the adapters that hold it, within a rank budget (weighted_sum_within_rank:
/// exact when the ranks add up to at most the budget, otherwise the best approximation of that
/// rank). An adapter that lacks a module contributes zero to it, so a module held by only some
/// adapters is the weighted sum of those. Every merged module has scale 1, the sources' scales
/// folded into the factors, as PEFT's add_weighted_adapter does.
///
/// The result lists every module name of the first adapter in its order, then the names new in
/// each later adapter in that adapter's order; it takes the first adapter's dialect, metadata,
/// config and passthrough tensors, and each module's file dtypes and shapes from its first holder.
/// Cost per module: that of weighted_sum_within_rank, O((d + k)·R² + R³) with R = Σ rᵢ.
///
/// Refused with a lola::error naming the module and the adapters, before anything is merged:
/// adapters of different dialects (their module names do not correspond), a module whose shape or
/// kind differs between adapters, and a module that carries extra tensors (a DoRA magnitude or a
/// LoRA bias: a weighted sum of ΔW does not define them).

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/io/adapter.hpp"
#include "lola/ops/combine.hpp"

namespace lola {

/// The pass (threads, progress) and the rank budget of a merge.
struct merge_adapters_options : module_pass {
  /// The rank budget of every merged module, >= 1; < 0: the largest rank among its sources.
  index rank = -1;
  /// Optional names of the adapters (file paths, say) for messages: empty, or one per adapter.
  std::vector<std::string> labels;
};

/// What became of one module.
struct merged_module_report {
  std::string name;
  std::size_t sources = 0;           ///< how many adapters hold it
  index rank = 0;                    ///< its rank after the merge
  double retained_fro_fraction = 1;  ///< ‖merged‖_F / ‖exact weighted sum‖_F (1 when exact)
};

template <class S>
struct adapter_merge {
  io::adapter<S> adapter;
  std::vector<merged_module_report> modules;  ///< in adapter.modules' order
  /// What was accepted but not carried: later adapters' passthrough tensors.
  std::vector<std::string> warnings;
};

template <class S>
adapter_merge<S> merge_adapters(const std::vector<const io::adapter<S>*>& adapters, const std::vector<S>& weights,
                                const merge_adapters_options& options = {}) {
  const std::size_t n = adapters.size();
  if (n == 0) throw error(error_code::invalid_argument, "merge_adapters: no adapters");
  if (weights.size() != n)
    throw error(error_code::invalid_argument, "merge_adapters: " + std::to_string(n) + " adapters but " +
                                                  std::to_string(weights.size()) + " weights");
  if (!options.labels.empty() && options.labels.size() != n)
    throw error(error_code::invalid_argument, "merge_adapters: " + std::to_string(n) + " adapters but " +
                                                  std::to_string(options.labels.size()) + " labels");
  if (options.rank == 0)
    throw error(error_code::invalid_argument,
                "merge_adapters: the rank budget must be >= 1 (or < 0: the largest source rank), got 0");
  for (std::size_t i = 0; i < n; ++i)
    if (adapters[i] == nullptr)
      throw error(error_code::invalid_argument, "merge_adapters: adapter " + std::to_string(i) + " is null");
  auto label = [&](std::size_t i) {
    return options.labels.empty() ? "adapter " + std::to_string(i) : options.labels[i];
  };
  const io::adapter<S>& first = *adapters[0];
  for (std::size_t i = 1; i < n; ++i)
    if (adapters[i]->format != first.format)
      throw error(error_code::unsupported, label(i) + " is a " + io::to_string(adapters[i]->format) + " adapter but " +
                                               label(0) + " is " + io::to_string(first.format) +
                                               "; module names of different dialects do not match");

  // sources[j]: the (adapter, module) pairs that hold the j-th name, in adapter order.
  using module = io::adapter_module<S>;
  struct source {
    std::size_t adapter;
    const module* m;
  };
  std::vector<std::vector<source>> sources;
  std::unordered_map<std::string_view, std::size_t> position;
  for (std::size_t i = 0; i < n; ++i)
    for (const module& m : adapters[i]->modules) {
      const auto [it, added] = position.emplace(m.name, sources.size());
      if (added) sources.emplace_back();
      sources[it->second].push_back({i, &m});
    }

  const auto describe = [](const module& m) {
    return std::to_string(m.rows()) + "x" + std::to_string(m.cols()) + " " + io::to_string(m.kind);
  };
  for (const auto& list : sources) {
    const source& s0 = list.front();
    const std::string where = "merge_adapters: module \"" + s0.m->name + "\"";
    for (const source& s : list) {
      if (s.m->rows() != s0.m->rows() || s.m->cols() != s0.m->cols() || s.m->kind != s0.m->kind)
        throw error(error_code::shape_mismatch, where + " is " + describe(*s0.m) + " in " + label(s0.adapter) +
                                                    " but " + describe(*s.m) + " in " + label(s.adapter));
      if (!s.m->extras.empty())
        throw error(error_code::unsupported,
                    where + " carries " + s.m->extras.front().name + " in " + label(s.adapter) +
                        " (DoRA magnitude or LoRA bias), which a weighted sum of dW does not define");
    }
  }

  adapter_merge<S> out;
  out.adapter.format = first.format;
  out.adapter.metadata = first.metadata;
  out.adapter.config = first.config;
  out.adapter.passthrough = first.passthrough;
  for (std::size_t i = 1; i < n; ++i)
    if (!adapters[i]->passthrough.empty())
      out.warnings.push_back(std::to_string(adapters[i]->passthrough.size()) + " passthrough tensors of " +
                             label(i) + " are not carried into the merge (" + label(0) + "'s are)");
  out.adapter.modules.resize(sources.size());
  out.modules.resize(sources.size());
  parallel_for(options.ex, static_cast<index>(sources.size()), [&](index jj) {
    const auto j = static_cast<std::size_t>(jj);
    const auto& list = sources[j];
    const module& m0 = *list.front().m;
    std::vector<decltype(m0.delta())> deltas;
    std::vector<S> w;
    index max_rank = 0;
    for (const source& s : list) {
      deltas.push_back(s.m->delta());
      w.push_back(weights[s.adapter]);
      max_rank = std::max(max_rank, s.m->rank());
    }
    try {
      const auto sum = weighted_sum_within_rank(deltas, w, options.rank >= 0 ? options.rank : max_rank);
      module merged = m0;
      merged.set_factors(sum.factors.B(), sum.factors.A(), 1.0);
      out.adapter.modules[j] = std::move(merged);
      out.modules[j] = {m0.name, list.size(), sum.rank, static_cast<double>(sum.retained_fro_fraction)};
    } catch (const error& e) {
      throw error(e.code(), "merge_adapters: module \"" + m0.name + "\": " + e.message());
    }
    if (options.module_done) options.module_done(sources.size());
  });
  return out;
}

}  // namespace lola
