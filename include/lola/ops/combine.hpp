#pragma once
/// @file
/// Combining modules of the same shape d×k with weights wᵢ (cᵢ = wᵢ·sᵢ below; every result has
/// scale 1, the sources' scales folded into the factors, as PEFT does):
///
///   weighted_sum  Σ cᵢ·BᵢAᵢ exactly: B = [c₁B₁ … c_nB_n], A = [A₁; …; A_n], rank Σ rᵢ. With a
///                 target rank k it is re-compressed to the best rank-k approximation of that sum
///                 through the factor-space SVD of the stacked factors (O((d + k)·R² + R³) with
///                 R = Σ rᵢ), never a dense SVD.
///   PEFT add_weighted_adapter, with PEFT's semantics (peft/tuners/lora/model.py):
///   cat           A = [c₁A₁; …; c_nA_n], B = [B₁ … B_n]: exact, rank Σ rᵢ (the weights sit on A).
///   linear        equal ranks only; A = Σ sign(cᵢ)·√|cᵢ|·Aᵢ, B = Σ √|cᵢ|·Bᵢ. B·A then contains the
///                 cross terms √|cᵢcⱼ|·sign(cⱼ)·BᵢAⱼ (i ≠ j): it is NOT the weighted sum of the ΔWᵢ.
///   svd           the weighted sum truncated to rank k (default max rᵢ), all singular-value mass in
///                 B: B = U_k·Σ_k, A = V_kᵀ. PEFT forms the dense ΔW and runs a full SVD; the result
///                 here is the same matrix (up to the signs of singular pairs, fixed by the sign
///                 rule of canon/canonical_form.hpp). PEFT's optional svd_clamp is not applied.

#include <cmath>
#include <string>
#include <vector>

#include "lola/backend/eigen/reductions.hpp"
#include "lola/canon/canonical_form.hpp"
#include "lola/core/shape.hpp"
#include "lola/ops/resize.hpp"

namespace lola {

enum class combination { weighted_sum, cat, linear, svd };

namespace detail {

template <class Modules, class S>
void check_combination(const Modules& modules, const std::vector<S>& weights, const char* what) {
  if (modules.empty())
    throw error(error_code::invalid_argument, std::string(what) + ": no modules to combine");
  if (weights.size() != modules.size())
    throw error(error_code::invalid_argument,
                std::string(what) + ": " + std::to_string(modules.size()) + " modules but " +
                    std::to_string(weights.size()) + " weights");
  for (std::size_t i = 1; i < modules.size(); ++i)
    require_shapes(modules[i].rows() == modules[0].rows() && modules[i].cols() == modules[0].cols(),
                   what, "module 0", modules[0].rows(), modules[0].cols(),
                   ("module " + std::to_string(i)).c_str(), modules[i].rows(), modules[i].cols());
}

/// [c₁B₁ … c_nB_n] and [A₁; …; A_n] with cᵢ = wᵢ·sᵢ applied to B or to A.
template <class S, class Modules, class Storage = storage_of_t<typename Modules::value_type>>
owning_low_rank<Storage, S> stack_modules(const Modules& modules, const std::vector<S>& weights,
                                          bool weights_on_b) {
  index total = 0;
  for (const auto& m : modules) total += m.rank();
  factor_matrix_t<Storage, S> B(modules[0].rows(), total), A(total, modules[0].cols());
  index offset = 0;
  for (std::size_t i = 0; i < modules.size(); ++i) {
    decltype(auto) f = evaluator::factors(modules[i]);
    const S c = weights[i] * f.scale();
    stack_block(f, weights_on_b ? c : S(1), weights_on_b ? S(1) : c, offset, B, A);
    offset += f.rank();
  }
  return owning_low_rank<Storage, S>(std::move(B), std::move(A), S(1));
}

}  // namespace detail

/// Combines `modules` (a random-access container of low-rank expressions of one type) with
/// `weights`. `rank` is the target rank of weighted_sum (−1: keep Σ rᵢ, exact) and of svd (−1:
/// max rᵢ).
template <class Modules, class S = scalar_of_t<typename Modules::value_type>,
          class Storage = storage_of_t<typename Modules::value_type>>
owning_low_rank<Storage, S> combine(const Modules& modules, const std::vector<S>& weights,
                                    combination type = combination::weighted_sum, index rank = -1) {
  using detail::add_scaled, detail::assign_scaled, detail::set_zero;
  using factor = factor_matrix_t<Storage, S>;
  detail::check_combination(modules, weights, "combine");
  switch (type) {
    case combination::cat: return detail::stack_modules<S>(modules, weights, false);
    case combination::weighted_sum:
    case combination::svd: {
      owning_low_rank<Storage, S> sum = detail::stack_modules<S>(modules, weights, true);
      if (type == combination::weighted_sum && rank < 0) return sum;
      index k = rank;
      if (k < 0)
        for (const auto& m : modules) k = std::max(k, m.rank());
      // The best rank-k approximation in the canonical left form, U_k·Σ_k and V_kᵀ (Eckart–Young),
      // with zero components up to rank k where the sum has fewer.
      factor B(sum.rows(), k), A(k, sum.cols());
      set_zero(B);
      set_zero(A);
      if (k == 0) return owning_low_rank<Storage, S>(std::move(B), std::move(A), S(1));
      resize_result<S, Storage> cut = resize(sum, rank_rule::fixed(k), canonical_form::left);
      if (cut.rank == k) return std::move(cut.factors);
      assign_scaled(B.leftCols(cut.rank), S(1), cut.factors.B());
      assign_scaled(A.topRows(cut.rank), S(1), cut.factors.A());
      return owning_low_rank<Storage, S>(std::move(B), std::move(A), S(1));
    }
    case combination::linear: {
      const index r = modules[0].rank();
      for (std::size_t i = 1; i < modules.size(); ++i)
        if (modules[i].rank() != r)
          throw error(error_code::shape_mismatch,
                      "combine (linear needs equal ranks): module 0 has rank " + std::to_string(r) +
                          " but module " + std::to_string(i) + " has rank " +
                          std::to_string(modules[i].rank()));
      factor B(modules[0].rows(), r), A(r, modules[0].cols());
      set_zero(B);
      set_zero(A);
      for (std::size_t i = 0; i < modules.size(); ++i) {
        decltype(auto) f = detail::evaluator::factors(modules[i]);
        const S c = weights[i] * f.scale();
        const S root = std::sqrt(std::abs(c));
        add_scaled(B, root, f.B());
        add_scaled(A, c < 0 ? -root : root, f.A());
      }
      return owning_low_rank<Storage, S>(std::move(B), std::move(A), S(1));
    }
  }
  throw error(error_code::invalid_argument, "combine: unknown combination type");
}

/// The weighted sum Σ cᵢ·BᵢAᵢ (cᵢ = wᵢ·sᵢ, scale 1) within a rank budget k ≥ 0: exact, of rank Σ rᵢ,
/// when Σ rᵢ ≤ k; otherwise its best rank-k approximation (Eckart–Young, canonical left form, from
/// the factor-space SVD of the stacked factors). The result says the rank kept and the fraction
/// ‖ΔW_k‖_F/‖ΣΔW‖_F (1 when exact, and then singular_values is empty): what merging adapters into
/// a rank budget reports per module.
template <class Modules, class S = scalar_of_t<typename Modules::value_type>,
          class Storage = storage_of_t<typename Modules::value_type>>
resize_result<S, Storage> weighted_sum_within_rank(const Modules& modules, const std::vector<S>& weights,
                                                   index k) {
  detail::check_combination(modules, weights, "weighted_sum_within_rank");
  if (k < 0)
    throw error(error_code::invalid_argument,
                "weighted_sum_within_rank: the rank budget must be >= 0, got " + std::to_string(k));
  owning_low_rank<Storage, S> sum = detail::stack_modules<S>(modules, weights, true);
  if (sum.rank() > k && k > 0) return resize(sum, rank_rule::fixed(k), canonical_form::left);
  resize_result<S, Storage> out;
  if (sum.rank() > k) {  // k = 0: the empty approximation keeps nothing of a nonzero sum
    factor_matrix_t<Storage, S> B(sum.rows(), 0), A(0, sum.cols());
    out.retained_fro_fraction = norm(sum) > 0 ? S(0) : S(1);
    sum = owning_low_rank<Storage, S>(std::move(B), std::move(A), S(1));
  }
  out.rank = sum.rank();
  out.factors = std::move(sum);
  return out;
}

}  // namespace lola
