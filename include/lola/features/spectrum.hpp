#pragma once
/// @file
/// GL(r)-invariant features of ΔW = s·B·A from its singular values, computed from the factors
/// (linalg/low_rank_svd.hpp, O((d + k)·r² + r³), singular vectors not formed):
///   singular_values(e, n)  σ₁ ≥ … padded with zeros or truncated to length n — the LoL rule for
///                          inputs whose rank differs from the rank a model was trained at;
///   spectral_summary(e)    Frobenius ‖ΔW‖_F = √Σσ², spectral σ₁, nuclear Σσ,
///                          stable rank ‖ΔW‖²_F/σ₁² ∈ [1, p],
///                          effective rank exp(−Σ pᵢ·log pᵢ) with pᵢ = σᵢ/Σσ (Roy & Vetterli 2007).
/// Every number here includes the scale s. A zero ΔW has all of them 0 (stable and effective rank
/// included: there is no direction to count).

#include <cmath>
#include <string>

#include "lola/linalg/low_rank_svd.hpp"

namespace lola {

template <class S>
struct spectral_summary_result {
  S frobenius = 0, spectral = 0, nuclear = 0, stable_rank = 0, effective_rank = 0;
};

namespace detail {
template <class E>
Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> checked_singular_values(const E& e,
                                                                         const char* function) {
  const low_rank_svd<scalar_of_t<E>> svd(e, singular_values_only);
  if (svd.info() != Eigen::Success)
    throw error(error_code::numerical, std::string(function) + ": the factors of the " +
                                           shape_string(e.rows(), e.cols()) +
                                           " module are not finite");
  return svd.singularValues();
}
}  // namespace detail

/// The singular values of ΔW, descending; with length ≥ 0, zero-padded or truncated to it.
template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> singular_values(const E& e, index length = -1) {
  auto sigma = detail::checked_singular_values(e, "singular_values");
  if (length < 0) return sigma;
  Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> out =
      Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1>::Zero(length);
  const index n = std::min<index>(length, sigma.size());
  out.head(n) = sigma.head(n);
  return out;
}

/// Norms and effective ranks of ΔW from one factor-space SVD.
template <class S>
spectral_summary_result<S> spectral_summary_from(const Eigen::Matrix<S, Eigen::Dynamic, 1>& sigma) {
  spectral_summary_result<S> out;
  if (sigma.size() == 0 || !(sigma(0) > 0)) return out;
  out.spectral = sigma(0);
  out.nuclear = sigma.sum();
  out.frobenius = sigma.norm();
  out.stable_rank = sigma.squaredNorm() / (sigma(0) * sigma(0));
  S entropy = 0;
  for (index i = 0; i < sigma.size(); ++i) {
    const S p = sigma(i) / out.nuclear;
    if (p > 0) entropy -= p * std::log(p);
  }
  out.effective_rank = std::exp(entropy);
  return out;
}

template <class E, class = std::enable_if_t<is_host_expr_v<E>>>
spectral_summary_result<scalar_of_t<E>> spectral_summary(const E& e) {
  return spectral_summary_from(detail::checked_singular_values(e, "spectral_summary"));
}

}  // namespace lola
