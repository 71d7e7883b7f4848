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
/// Range: the summaries are computed from tᵢ = σᵢ/σ₁ ∈ [0, 1] (‖ΔW‖_F = σ₁·‖t‖, Σσ = σ₁·Σt,
/// stable rank ‖t‖²), so none overflows or underflows where the result itself is representable
/// (the plain ‖σ‖ overflows from σ₁ ≈ 1.3e154 in double, 1.8e19 in float). A σ beyond the compute
/// type's range (finite factors whose product is too large) is error_code::numerical.

#include <algorithm>
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
  const low_rank_svd<scalar_of_t<E>, storage_of_t<E>> svd(e, singular_values_only);
  require_finite_factors(svd.info() == Eigen::Success, function, e.rows(), e.cols());
  require_finite_singular_values(svd.singularValues(), function, e.rows(), e.cols());
  return svd.singularValues();
}

/// out (any length) = σ zero-padded or truncated to out.size(): the LoL rule for a rank that
/// differs from the length a model expects.
template <class Sigma, class Out>
void pad_or_truncate_into(const Eigen::MatrixBase<Sigma>& sigma, Eigen::MatrixBase<Out>& out) {
  const index kept = std::min<index>(out.size(), sigma.size());
  out.head(kept) = sigma.head(kept);
  out.tail(out.size() - kept).setZero();
}
}  // namespace detail

/// The singular values of ΔW, descending; with length ≥ 0, zero-padded or truncated to it.
template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> singular_values(const E& e, index length = -1) {
  auto sigma = detail::checked_singular_values(e, "singular_values");
  if (length < 0) return sigma;
  Eigen::Matrix<scalar_of_t<E>, Eigen::Dynamic, 1> out(length);
  detail::pad_or_truncate_into(sigma, out);
  return out;
}

/// Norms and effective ranks of ΔW from one factor-space SVD.
template <class S>
spectral_summary_result<S> spectral_summary_from(const Eigen::Matrix<S, Eigen::Dynamic, 1>& sigma) {
  spectral_summary_result<S> out;
  if (sigma.size() == 0 || !(sigma(0) > 0)) return out;
  const Eigen::Matrix<S, Eigen::Dynamic, 1> t = sigma / sigma(0);  // σ descending: tᵢ ∈ [0, 1]
  const S t_sum = t.sum();
  out.spectral = sigma(0);
  out.nuclear = sigma(0) * t_sum;
  out.frobenius = sigma(0) * t.norm();
  out.stable_rank = t.squaredNorm();
  S entropy = 0;
  for (index i = 0; i < t.size(); ++i) {
    const S p = t(i) / t_sum;
    if (p > 0) entropy -= p * std::log(p);
  }
  out.effective_rank = std::exp(entropy);
  return out;
}

template <class E, class = std::enable_if_t<is_low_rank_expr_v<E>>>
spectral_summary_result<scalar_of_t<E>> spectral_summary(const E& e) {
  return spectral_summary_from(detail::checked_singular_values(e, "spectral_summary"));
}

}  // namespace lola
