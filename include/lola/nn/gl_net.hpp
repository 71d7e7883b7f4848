#pragma once
/// @file
/// GL-net (LoL §3.5, in the order of the reference code, §3.6 of research/papers.md): for an
/// adapter of L modules in lexicographic key order (io::lexicographic_module_order, the order the
/// reference loader pairs the sorted tensors in), U_j = B_j and V_j = A_jᵀ,
///   1. first layer, per module:    (U_j, V_j) ← (Φ_j·U_j, Ψ_j·V_j)          Φ_j h×n_j, Ψ_j h×m_j
///   2. K − 1 times, per module:    gate; dropout (inference form, p); (U_j, V_j) ← (Φ⁽ᵏ⁾_j·U_j, Ψ⁽ᵏ⁾_j·V_j)
///   3. the invariant head on P_j = U_j·V_jᵀ (nn/invariant_head.hpp).
/// The gate comes before each later linear layer and none follows the last; with K = 1 (every
/// diffusion run of the paper) GL-net is one equivariant linear layer and the head. Every step
/// commutes with an independent G_j ∈ GL(r_j) per module and the head sees only P_j, so the output
/// is GL(r₁)×…×GL(r_L)-invariant; ranks may differ between adapters and modules.
///
/// Scaling: the reference trains on the raw factors, ignoring s = α/r; so does forward() by
/// default. gl_net_options::fold_scale uses U_j = s_j·B_j instead (ΔW_j = U_j·V_jᵀ).
///
/// Cost per adapter: O(h·Σ(n_j + m_j)·r) for the first layer, O(K·L·h²·r) for the rest,
/// O(L·h²·r + H·L·h²) for the head. A batch runs in blocks of adapters, module by module (modules
/// in parallel): each layer is one GEMM per module over the whole block, so each weight is read
/// once per block, and the head's linear1 is applied module by module without an N×L·h² matrix.
/// Memory is bounded by the block, not by the batch.

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/parallel.hpp"
#include "lola/io/adapter.hpp"
#include "lola/nn/dropout.hpp"
#include "lola/nn/equivariant_linear.hpp"
#include "lola/nn/gate.hpp"
#include "lola/nn/invariant_head.hpp"
#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

struct gl_net_options {
  bool fold_scale = false;  ///< U_j = s_j·B_j (true) or B_j (false, the reference)
  /// The EquivDropout p the model was trained with (LoL's LLM code; its default .5, main.py
  /// --dropout): at inference U and V are multiplied by 1 − p before each later linear layer.
  /// 0 for the diffusion models, which have no dropout. No effect when K = 1.
  double dropout = 0;
  index block = 64;  ///< adapters per block of a batch (bounds the memory a forward pass holds)
};

template <class S>
class gl_net {
 public:
  equivariant_linear<S> first;                 ///< L modules, h×n_j and h×m_j
  std::vector<equivariant_linear<S>> hidden;   ///< K − 1 layers of L modules, h×h each
  invariant_head<S> head;

  index modules() const noexcept { return first.modules(); }
  index hidden_size() const { return first.modules() > 0 ? first.phi(0).rows() : 0; }
  index depth() const noexcept { return 1 + static_cast<index>(hidden.size()); }
  index outputs() const noexcept { return head.outputs(); }
  /// (n_j, m_j): the d×k of the adapter module the network's module j takes.
  std::pair<index, index> module_shape(index j) const { return {first.in_rows_u(j), first.in_rows_v(j)}; }

  /// A network with the reference initialisation (Φ, Ψ ~ N(0, 1/fan_in); the head as torch's).
  /// n[j], m[j]: module j's d and k; h: the equivariant width; K ≥ 1 layers; H: the head's width.
  template <class Rng>
  static gl_net random(const std::vector<index>& n, const std::vector<index>& m, index h, index K,
                       index H, index outputs, pooling p, Rng& rng) {
    if (n.empty() || K < 1 || H < 1 || outputs < 1)
      throw error(error_code::invalid_argument,
                  "gl_net::random: needs at least one module, K >= 1, H >= 1 and outputs >= 1");
    gl_net net;
    net.first = equivariant_linear<S>::random(n, m, h, rng);
    const std::vector<index> hs(n.size(), h);
    for (index k = 1; k < K; ++k) net.hidden.push_back(equivariant_linear<S>::random(hs, hs, h, rng));
    const index L = static_cast<index>(n.size());
    net.head = invariant_head<S>::random(p == pooling::mean ? L : L * h * h, H, outputs, p, rng);
    net.validate();
    return net;
  }

  /// Checks that the parts fit together; invalid_argument naming the part otherwise.
  void validate() const {
    const index L = modules(), h = hidden_size();
    auto fail = [](const std::string& what) { throw error(error_code::invalid_argument, "gl_net: " + what); };
    if (L < 1) fail("the first layer has no modules");
    for (index j = 0; j < L; ++j)
      if (first.phi(j).rows() != h || first.psi(j).rows() != h)
        fail("first layer, module " + std::to_string(j) + ": Φ is " + shape_string(first.phi(j)) +
             " and Ψ is " + shape_string(first.psi(j)) + ", both need " + std::to_string(h) + " rows");
    for (std::size_t k = 0; k < hidden.size(); ++k) {
      if (hidden[k].modules() != L)
        fail("layer " + std::to_string(k + 2) + " has " + std::to_string(hidden[k].modules()) +
             " modules, the first has " + std::to_string(L));
      for (index j = 0; j < L; ++j)
        if (hidden[k].phi(j).rows() != h || hidden[k].phi(j).cols() != h || hidden[k].psi(j).rows() != h ||
            hidden[k].psi(j).cols() != h)
          fail("layer " + std::to_string(k + 2) + ", module " + std::to_string(j) + ": weights must be " +
               shape_string(h, h));
    }
    const index F = head.pool == pooling::mean ? L : L * h * h, H = head.hidden_size();
    if (head.input_size() != F)
      fail("the head's linear1 takes " + std::to_string(head.input_size()) + " features, " +
           to_string(head.pool) + " pooling of " + std::to_string(L) + " modules of width " +
           std::to_string(h) + " gives " + std::to_string(F));
    if (H < 1 || head.linear1_bias.size() != H || head.norm_weight.size() != H || head.norm_bias.size() != H ||
        head.linear2_weight.cols() != H || head.linear2_bias.size() != head.outputs() || head.outputs() < 1)
      fail("the head's linear1 (" + shape_string(head.linear1_weight) + "), ln1 (" +
           std::to_string(head.norm_weight.size()) + ", " + std::to_string(head.norm_bias.size()) +
           ") and linear2 (" + shape_string(head.linear2_weight) + ", bias " +
           std::to_string(head.linear2_bias.size()) + ") do not fit together");
  }

  /// One output vector per adapter: N×outputs(). Adapter i's modules are matched to the network's
  /// in lexicographic key order and must have its shapes; shape_mismatch names the adapter (by
  /// index, or by names[i] when given), the module and both shapes. Adapter is io::adapter<T> for
  /// any T, or io::adapter_view (factors as the file stores them, converted to S as they are
  /// gathered).
  template <class Adapter>
  matrix<S> forward(const std::vector<const Adapter*>& batch, const gl_net_options& options = {},
                    const std::vector<std::string>& names = {}) const {
    std::vector<std::vector<std::size_t>> orders(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      orders[i] = io::lexicographic_module_order(*batch[i]);
      check_adapter(*batch[i], orders[i], i < names.size() ? names[i] : "adapter " + std::to_string(i));
    }
    auto module = [&](index i, index j) -> const typename Adapter::module_type& {
      return batch[static_cast<std::size_t>(i)]->modules[orders[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)]];
    };
    matrix<S> y = run<io::module_storage_t<typename Adapter::module_type>>(
        static_cast<index>(batch.size()), options, [&](index i, index j) { return module(i, j).rank(); },
        [&](index i, index j, auto&& U, auto&& V) {
          const auto& m = module(i, j);
          m.visit([&](const auto& B, const auto& A) {
            using lola::detail::assign_scaled;
            assign_scaled(U, options.fold_scale ? static_cast<S>(m.scale) : S(1), B);
            assign_scaled(V, S(1), A.transpose());
          });
        });
    // Finite factors can still overflow the activations (entries near the type's limit): an
    // error, never a non-finite prediction.
    for (index i = 0; i < y.rows(); ++i)
      if (!y.row(i).allFinite()) {
        const auto k = static_cast<std::size_t>(i);
        throw error(error_code::numerical, (k < names.size() ? names[k] : "adapter " + std::to_string(k)) +
                                               ": the GL-net output is not finite (the factors' magnitudes "
                                               "overflow the network's activations)");
      }
    return y;
  }

  /// One adapter's output vector.
  template <class Adapter,
            class = std::enable_if_t<std::is_base_of_v<io::basic_adapter<typename Adapter::module_type>, Adapter>>>
  vector<S> forward(const Adapter& a, const gl_net_options& options = {}) const {
    return forward(std::vector<const Adapter*>{&a}, options).row(0).transpose();
  }

  /// The same on inputs already in (U, V) form, modules in the network's order (U_j n_j×r, V_j m_j×r).
  matrix<S> forward(const std::vector<uv_list<S>>& batch, const gl_net_options& options = {}) const {
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (static_cast<index>(batch[i].size()) != modules())
        throw error(error_code::shape_mismatch, "gl_net: input " + std::to_string(i) + " has " +
                                                    std::to_string(batch[i].size()) + " modules, the network " +
                                                    std::to_string(modules()));
    for (std::size_t i = 0; i < batch.size(); ++i)
      for (index j = 0; j < modules(); ++j) {
        const auto& x = batch[i][static_cast<std::size_t>(j)];
        const auto [n, m] = module_shape(j);
        if (x.U.rows() != n || x.V.rows() != m || x.U.cols() != x.V.cols())
          throw error(error_code::shape_mismatch,
                      "gl_net: input " + std::to_string(i) + ", module " + std::to_string(j) + ": U is " +
                          shape_string(x.U) + " and V is " + shape_string(x.V) + " but the network takes " +
                          std::to_string(n) + " and " + std::to_string(m) + " rows of one rank");
      }
    return run<host_storage>(
        static_cast<index>(batch.size()), options,
        [&](index i, index j) { return batch[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)].rank(); },
        [&](index i, index j, auto&& U, auto&& V) {
          const auto& x = batch[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
          U = x.U;
          V = x.V;
        });
  }

  /// The equivariant part alone: the h×r_j pairs (Ũ_j, Ṽ_j) the head pools, for one input.
  uv_list<S> equivariant_features(const uv_list<S>& input, const gl_net_options& options = {}) const {
    uv_list<S> x = first(input);
    apply_hidden(x, options);
    return x;
  }

 private:
  void apply_hidden(uv_list<S>& x, const gl_net_options& options) const {
    validate();
    const S keep = static_cast<S>(dropout_inference_scale(options.dropout));
    for (const auto& layer : hidden)
      for (index j = 0; j < modules(); ++j) {
        auto& m = x[static_cast<std::size_t>(j)];
        hidden_step(layer, j, {0, m.rank()}, keep, m.U, m.V);
      }
  }

  /// One hidden layer on module j's activations U (h×Σr) and V (h×Σr), whose columns hold one
  /// adapter each in the blocks [offset[i], offset[i + 1]): the gate per block (its row sums are
  /// over one adapter's columns), the inference dropout factor `keep`, then (Φ_j·U, Ψ_j·V).
  static void hidden_step(const equivariant_linear<S>& layer, index j, const std::vector<index>& offset, S keep,
                          matrix<S>& U, matrix<S>& V) {
    step sigma;
    for (std::size_t i = 0; i + 1 < offset.size(); ++i) {
      const index begin = offset[i], width = offset[i + 1] - offset[i];
      detail::gate_rows<S>(U.middleCols(begin, width), V.middleCols(begin, width), sigma);
    }
    if (keep != S(1)) {
      U *= keep;
      V *= keep;
    }
    U = layer.phi(j) * U;  // not noalias: Eigen evaluates into a temporary first
    V = layer.psi(j) * V;
  }

  template <class Adapter>
  void check_adapter(const Adapter& a, const std::vector<std::size_t>& order, const std::string& name) const {
    if (static_cast<index>(a.modules.size()) != modules())
      throw error(error_code::shape_mismatch, "gl_net: " + name + " has " + std::to_string(a.modules.size()) +
                                                  " LoRA modules but the network takes " +
                                                  std::to_string(modules()));
    for (index j = 0; j < modules(); ++j) {
      const auto& m = a.modules[order[static_cast<std::size_t>(j)]];
      const auto [n, k] = module_shape(j);
      const index b_cols = m.visit([](const auto& B, const auto&) { return index(B.cols()); });
      if (b_cols != m.rank())
        throw error(error_code::shape_mismatch, "gl_net: " + name + ", module \"" + m.name + "\": B is " +
                                                    shape_string(m.rows(), b_cols) + " but A is " +
                                                    shape_string(m.rank(), m.cols()) +
                                                    " (B's columns must equal A's rows)");
      if (m.rows() != n || m.cols() != k)
        throw error(error_code::shape_mismatch,
                    "gl_net: " + name + ", module \"" + m.name + "\" (number " + std::to_string(j) +
                        " in key order) is " + shape_string(m.rows(), m.cols()) +
                        " but the network's module " + std::to_string(j) + " takes " + shape_string(n, k));
    }
  }

  /// The pipeline over N inputs whose factors live in Storage: rank(i, j) is r of input i's module
  /// j, and gather(i, j, U, V) writes its U (n_j×r) and V (m_j×r) into the column blocks given.
  /// Per block of adapters and per module j (modules in parallel): the block's U's side by side as
  /// one n_j×Σr factor matrix of Storage, so the first layer is one GEMM per module for the whole
  /// block (product_into, Φ_j and Ψ_j moved into Storage by in_storage; each weight read once per
  /// block), after which everything is h×Σr and on the host; the gate and the pooling per adapter
  /// on its column block; then module j's share of linear1, P_j·W₁[:, cols of j]ᵀ. The shares are
  /// summed in module order, so results do not depend on the thread count.
  template <class Storage, class Rank, class Gather>
  matrix<S> run(index N, const gl_net_options& options, Rank&& rank, Gather&& gather) const {
    validate();
    const S keep = static_cast<S>(dropout_inference_scale(options.dropout));
    const index L = modules(), block = std::max<index>(1, options.block);
    const index per_module = head.pool == pooling::mean ? 1 : hidden_size() * hidden_size();
    matrix<S> out(N, outputs());
    std::vector<matrix<S>> share(static_cast<std::size_t>(L));
    for (index start = 0; start < N; start += block) {
      const index count = std::min(block, N - start);
      parallel_for(L, [&](index j) {
        std::vector<index> offset(static_cast<std::size_t>(count) + 1, 0);
        for (index i = 0; i < count; ++i)
          offset[static_cast<std::size_t>(i) + 1] = offset[static_cast<std::size_t>(i)] + rank(start + i, j);
        auto columns = [&](auto& M, index i) {
          return M.middleCols(offset[static_cast<std::size_t>(i)],
                              offset[static_cast<std::size_t>(i) + 1] - offset[static_cast<std::size_t>(i)]);
        };
        matrix<S> U, V;
        {
          using lola::detail::product_into;
          const auto [n, m] = module_shape(j);
          factor_matrix_t<Storage, S> U_in(n, offset.back()), V_in(m, offset.back());
          for (index i = 0; i < count; ++i) gather(start + i, j, columns(U_in, i), columns(V_in, i));
          product_into<S>(lola::detail::in_storage<Storage>(first.phi(j)), U_in, U);
          product_into<S>(lola::detail::in_storage<Storage>(first.psi(j)), V_in, V);
        }
        for (const auto& layer : hidden) hidden_step(layer, j, offset, keep, U, V);
        row_matrix<S> pooled(count, per_module);
        for (index i = 0; i < count; ++i)
          invariant_head<S>::pool_module_into(columns(U, i), columns(V, i), head.pool, pooled.row(i).data());
        share[static_cast<std::size_t>(j)].noalias() =
            pooled * head.linear1_weight.middleCols(j * per_module, per_module).transpose();
      });
      matrix<S> z = share[0];
      for (index j = 1; j < L; ++j) z += share[static_cast<std::size_t>(j)];
      out.middleRows(start, count) = head.after_linear1(std::move(z));
    }
    return out;
  }
};

}  // namespace lola::nn
