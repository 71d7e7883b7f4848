#pragma once
/// @file
/// Resizing a module: the best rank-k approximation ΔW_k = s·U_k·Σ_k·V_kᵀ (Eckart–Young), from the
/// factor-space SVD, never from the d×k matrix. O((d + k)·r² + r³).
///
/// The rank is fixed or chosen per module by kohya's rules (resize_lora.py), defined exactly as:
///   rank_rule::fixed(k)          k
///   rank_rule::sv_fro(F)         the smallest k with ‖ΔW_k‖_F ≥ F·‖ΔW‖_F, i.e. Σᵢ≤ₖ σᵢ² ≥ F²·Σ σᵢ²
///   rank_rule::sv_cumulative(F)  the smallest k with σ₁ + … + σ_k ≥ F·Σ σᵢ
///   rank_rule::sv_ratio(X)       the number of σᵢ > σ₁/X
/// then clamped to [1, min(r, d, k)]: never more than the module has, at least 1 (a zero module
/// keeps one zero component, as kohya does). The effective scale s is kept, so the result drops
/// into the same adapter; the factors are in the chosen canonical form (left = kohya's up = U·Σ,
/// down = Vᵀ), with canon/canonical_form.hpp's sign rule.

#include <algorithm>
#include <cmath>
#include <string>

#include "lola/canon/canonical_form.hpp"
#include "lola/core/error.hpp"

namespace lola {

/// How the new rank is chosen (see the file comment). The fixed rank is an exact integer: every k
/// from 1 to the largest index means itself, so any k at least the module's rank keeps it whole.
struct rank_rule {
  enum class kind { fixed, sv_fro, sv_cumulative, sv_ratio };
  kind rule = kind::fixed;
  index rank = 1;    ///< fixed: k (>= 1); unused by the other kinds
  double value = 1;  ///< sv_fro, sv_cumulative: F; sv_ratio: X; unused by fixed

  static rank_rule fixed(index k) {
    if (k < 1)
      throw error(error_code::invalid_argument,
                  "rank_rule::fixed: the rank must be >= 1, got " + std::to_string(k));
    return {kind::fixed, k, 1};
  }
  static rank_rule sv_fro(double fraction) {
    return {kind::sv_fro, 1, check_fraction(fraction, "sv_fro")};
  }
  static rank_rule sv_cumulative(double fraction) {
    return {kind::sv_cumulative, 1, check_fraction(fraction, "sv_cumulative")};
  }
  static rank_rule sv_ratio(double ratio) {
    if (!(ratio >= 1) || !std::isfinite(ratio))
      throw error(error_code::invalid_argument,
                  "rank_rule::sv_ratio: the ratio must be finite and >= 1, got " + std::to_string(ratio));
    return {kind::sv_ratio, 1, ratio};
  }

 private:
  static double check_fraction(double f, const char* name) {
    if (!(f > 0 && f <= 1))
      throw error(error_code::invalid_argument, std::string("rank_rule::") + name +
                                                    ": the fraction must be in (0, 1], got " +
                                                    std::to_string(f));
    return f;
  }
};

/// The rank `rule` selects for singular values σ (descending), clamped to [1, max_rank]; 0 only
/// when max_rank is 0.
template <class S>
index select_rank(const Eigen::Matrix<S, Eigen::Dynamic, 1>& sigma, const rank_rule& rule,
                  index max_rank) {
  if (max_rank <= 0) return 0;
  const index p = sigma.size();
  index k = 1;
  switch (rule.rule) {
    case rank_rule::kind::fixed:
      if (rule.rank < 1)  // a rank_rule built field by field rather than by fixed()
        throw error(error_code::invalid_argument,
                    "rank_rule: the fixed rank must be >= 1, got " + std::to_string(rule.rank));
      k = rule.rank;
      break;
    case rank_rule::kind::sv_fro:
    case rank_rule::kind::sv_cumulative: {
      const bool squares = rule.rule == rank_rule::kind::sv_fro;
      // On tᵢ = σᵢ/σ₁ ∈ [0, 1], so that no sum of squares overflows where σ itself is finite.
      const double largest = p > 0 && sigma(0) > 0 ? static_cast<double>(sigma(0)) : 1.0;
      Eigen::Matrix<double, Eigen::Dynamic, 1> cumulative(p);
      double running = 0;
      for (index i = 0; i < p; ++i) {
        const double s = static_cast<double>(sigma(i)) / largest;
        running += squares ? s * s : s;
        cumulative(i) = running;
      }
      const double target = (squares ? rule.value * rule.value : rule.value) * running;
      k = p;
      for (index i = 0; i < p; ++i)
        if (cumulative(i) >= target) {
          k = i + 1;
          break;
        }
      break;
    }
    case rank_rule::kind::sv_ratio: {
      const double cut = p > 0 ? static_cast<double>(sigma(0)) / rule.value : 0.0;
      k = 0;
      for (index i = 0; i < p; ++i) k += static_cast<double>(sigma(i)) > cut;
      break;
    }
  }
  return std::max<index>(1, std::min(k, max_rank));
}

template <class S, class Storage = host_storage>
struct resize_result {
  owning_low_rank<Storage, S> factors;  ///< B_k (d×k), A_k (k×k_in), the input's scale
  index rank = 0;                       ///< the k chosen
  S retained_fro_fraction = 1;          ///< ‖ΔW_k‖_F / ‖ΔW‖_F (1 for a zero module)
  Eigen::Matrix<S, Eigen::Dynamic, 1> singular_values;  ///< all σ of B·A (scale excluded)
};

namespace detail {

/// The resize of s·B·A (B d×r, A r×k, read in S) from its factor-space SVD (of B·A): the first k
/// components of its canonical form, k chosen by `rule` from σ before any factor is formed, so
/// only those k components are (canonical_from_svd's `components`).
template <class S, class Storage, class BX, class AX>
resize_result<S, Storage> resize_from_svd(const factor_space_svd<S, Storage>& svd, const BX& B, const AX& A, S scale,
                                          const rank_rule& rule, canonical_form form) {
  require_finite_singular_values(svd.sigma, "resize", B.rows(), A.cols());  // before a rank is chosen from σ
  const index max_rank = std::min(B.cols(), static_cast<index>(svd.sigma.size()));
  resize_result<S, Storage> out;
  out.rank = select_rank(svd.sigma, rule, max_rank);
  canonical_result<S, Storage> c = canonical_from_svd(svd, B, A, scale, form, canonical_options<S>{}, out.rank);
  out.singular_values = std::move(c.singular_values);
  // ‖ΔW_k‖_F/‖ΔW‖_F on tᵢ = σᵢ/σ₁, which cannot overflow (σ descending).
  const auto& sigma = out.singular_values;
  const S largest = sigma.size() > 0 ? sigma(0) : S(0);
  out.retained_fro_fraction =
      largest > 0 ? (sigma.head(out.rank) / largest).norm() / (sigma / largest).norm() : S(1);
  out.factors = std::move(c.factors);
  return out;
}

}  // namespace detail

/// ΔW's best approximation of the rank `rule` selects.
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
resize_result<scalar_of_t<E>, storage_of_t<E>> resize(const E& e, const rank_rule& rule,
                                                      canonical_form form = canonical_form::left) {
  return detail::with_module_svd(e, [&](const auto& svd, const auto& B, const auto& A, auto scale) {
    return detail::resize_from_svd(svd, B, A, scale, rule, form);
  });
}

/// Truncation to a fixed rank k (clamped to the module's rank).
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
resize_result<scalar_of_t<E>, storage_of_t<E>> truncate(const E& e, index k,
                                                        canonical_form form = canonical_form::left) {
  return resize(e, rank_rule::fixed(k), form);
}

}  // namespace lola
