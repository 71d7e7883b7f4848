#pragma once
/// @file
/// The GL-equivariant linear layer of LoL (eq. 4, Proposition 1: every GL-equivariant linear map
/// has this form): one pair of weights per module j,
///   (U_j, V_j) ↦ (Φ_j·U_j, Ψ_j·V_j),   Φ_j h×n_j,  Ψ_j h×m_j,
/// acting on the rows while GL(r) acts on the columns, so (Φ·U·G, Ψ·V·G⁻ᵀ) is the image of
/// (U·G, V·G⁻ᵀ): the layer commutes with every independent G_j ∈ GL(r_j). No bias, no mixing of
/// U with V or of one module with another (a bias or a mix would break the commutation).
/// In PEFT terms the input is (B_j, A_jᵀ); apply_factors() reads B and A as they are stored.
/// Cost per module O(h·(n + m)·r).
///
/// The reference code (LoL, models_metanet.EquivariantLinear2 and diffusion EquivariantLinear)
/// names the weights w_1 = Φ and w_2 = Ψ and draws them from N(0, 1/n) and N(0, 1/m).

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

template <class S>
class equivariant_linear {
 public:
  equivariant_linear() = default;
  /// phi[j] is h_u×n_j and psi[j] is h_v×m_j.
  equivariant_linear(std::vector<matrix<S>> phi, std::vector<matrix<S>> psi)
      : phi_(std::move(phi)), psi_(std::move(psi)) {
    if (phi_.size() != psi_.size())
      throw error(error_code::invalid_argument,
                  "equivariant_linear: " + std::to_string(phi_.size()) + " Φ weights but " +
                      std::to_string(psi_.size()) + " Ψ weights (one of each per module)");
  }

  /// The reference initialisation: Φ_j ~ N(0, 1/n_j), Ψ_j ~ N(0, 1/m_j) entry-wise.
  template <class Rng>
  static equivariant_linear random(const std::vector<index>& n, const std::vector<index>& m, index h,
                                   Rng& rng) {
    if (n.size() != m.size() || h < 1)
      throw error(error_code::invalid_argument,
                  "equivariant_linear::random: n and m need one entry per module and h >= 1");
    std::vector<matrix<S>> phi, psi;
    for (std::size_t j = 0; j < n.size(); ++j) {
      phi.push_back(gaussian(h, n[j], rng));
      psi.push_back(gaussian(h, m[j], rng));
    }
    return equivariant_linear(std::move(phi), std::move(psi));
  }

  index modules() const noexcept { return static_cast<index>(phi_.size()); }
  const matrix<S>& phi(index j) const { return phi_.at(static_cast<std::size_t>(j)); }
  const matrix<S>& psi(index j) const { return psi_.at(static_cast<std::size_t>(j)); }
  matrix<S>& phi(index j) { return phi_.at(static_cast<std::size_t>(j)); }
  matrix<S>& psi(index j) { return psi_.at(static_cast<std::size_t>(j)); }
  /// n_j and m_j, the row counts of U_j and V_j the layer accepts.
  index in_rows_u(index j) const { return phi(j).cols(); }
  index in_rows_v(index j) const { return psi(j).cols(); }

  /// (Φ_j·U, Ψ_j·V) for module j.
  uv_pair<S> apply(index j, const uv_pair<S>& x) const {
    check(j, x.U.rows(), x.V.rows(), x.U.cols(), x.V.cols());
    return {phi(j) * x.U, psi(j) * x.V};
  }

  /// (Φ_j·(s·B), Ψ_j·Aᵀ) for module j, from the factors as stored (B n×r, A r×m, any layout,
  /// any backend's storage: two product_into GEMMs, the weights moved there by in_storage).
  template <class BX, class AX>
  uv_pair<S> apply_factors(index j, const BX& B, const AX& A, S s = S(1)) const {
    using lola::detail::product_into;
    using storage = storage_of_t<BX>;
    check(j, B.rows(), A.cols(), B.cols(), A.rows());
    uv_pair<S> out;
    product_into<S>(lola::detail::in_storage<storage>(phi(j)), B, out.U);
    if (s != S(1)) out.U *= s;
    product_into<S>(lola::detail::in_storage<storage>(psi(j)), A.transpose(), out.V);
    return out;
  }

  /// Every module: out[j] = apply(j, in[j]).
  uv_list<S> operator()(const uv_list<S>& in) const {
    if (static_cast<index>(in.size()) != modules())
      throw error(error_code::shape_mismatch,
                  "equivariant_linear: the layer has " + std::to_string(modules()) +
                      " modules but the input has " + std::to_string(in.size()));
    uv_list<S> out;
    out.reserve(in.size());
    for (index j = 0; j < modules(); ++j) out.push_back(apply(j, in[static_cast<std::size_t>(j)]));
    return out;
  }

 private:
  template <class Rng>
  static matrix<S> gaussian(index rows, index cols, Rng& rng) {
    std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(static_cast<double>(cols)));
    matrix<S> w(rows, cols);
    for (index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<S>(normal(rng));
    return w;
  }

  void check(index j, index n, index m, index r_u, index r_v) const {
    if (j < 0 || j >= modules())
      throw error(error_code::invalid_argument, "equivariant_linear: module " + std::to_string(j) +
                                                    " of " + std::to_string(modules()));
    if (r_u != r_v)
      throw error(error_code::shape_mismatch,
                  "equivariant_linear, module " + std::to_string(j) + ": U has " +
                      std::to_string(r_u) + " columns but V has " + std::to_string(r_v));
    if (n != in_rows_u(j) || m != in_rows_v(j))
      throw error(error_code::shape_mismatch,
                  "equivariant_linear, module " + std::to_string(j) + ": the layer takes U with " +
                      std::to_string(in_rows_u(j)) + " rows and V with " +
                      std::to_string(in_rows_v(j)) + ", got " + std::to_string(n) + " and " +
                      std::to_string(m));
  }

  std::vector<matrix<S>> phi_, psi_;
};

}  // namespace lola::nn
