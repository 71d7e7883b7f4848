#pragma once
/// @file
/// The invariant head of GL-net (LoL reference code, InvariantHead with InvariantOutput):
///   per module j, P_j = U_j·V_jᵀ (h×h), GL(r)-invariant since (U·G)(V·G⁻ᵀ)ᵀ = U·Vᵀ;
///   x = [vec(P_1), …, vec(P_L)] with vec row-major (torch's flatten), length L·h²    (flatten)
///    or [mean(P_1), …, mean(P_L)], mean(P) = (1ᵀU)(Vᵀ1)/h², length L               (mean pooling)
///   y = W₂·relu(LayerNorm(W₁·x + b₁)) + b₂,  LayerNorm(z) = γ ⊙ (z − μ)/√(var + ε) + β,
///   var the biased variance over the H entries, ε = 1e-5 (torch's default).
/// Cost per adapter O(L·h²·r) for x, O(H·F) for W₁; a batch runs W₁ as one GEMM over its rows.
/// The reference's dropout layers are the identity at inference.

#include <cmath>
#include <random>
#include <string>

#include "lola/nn/uv_pair.hpp"

namespace lola::nn {

enum class pooling { flatten, mean };

inline const char* to_string(pooling p) noexcept { return p == pooling::flatten ? "flatten" : "mean"; }

template <class S>
using row_matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class S>
struct invariant_head {
  pooling pool = pooling::flatten;
  matrix<S> linear1_weight;  ///< H×F
  vector<S> linear1_bias;    ///< H
  vector<S> norm_weight;     ///< γ, H
  vector<S> norm_bias;       ///< β, H
  matrix<S> linear2_weight;  ///< out×H
  vector<S> linear2_bias;    ///< out
  S norm_epsilon = S(1e-5);

  index input_size() const noexcept { return linear1_weight.cols(); }
  index hidden_size() const noexcept { return linear1_weight.rows(); }
  index outputs() const noexcept { return linear2_weight.rows(); }

  /// torch's defaults: Linear weights and biases U(−1/√fan_in, 1/√fan_in), LayerNorm γ = 1, β = 0.
  template <class Rng>
  static invariant_head random(index inputs, index hidden, index outputs, pooling p, Rng& rng) {
    invariant_head head;
    head.pool = p;
    head.linear1_weight = uniform(hidden, inputs, inputs, rng);
    head.linear1_bias = uniform(hidden, 1, inputs, rng);
    head.norm_weight = vector<S>::Ones(hidden);
    head.norm_bias = vector<S>::Zero(hidden);
    head.linear2_weight = uniform(outputs, hidden, hidden, rng);
    head.linear2_bias = uniform(outputs, 1, hidden, rng);
    return head;
  }

  /// The feature count the pooling gives for these modules: Σ h_u·h_v, or one per module.
  static index pooled_size(const uv_list<S>& modules, pooling p) {
    index n = 0;
    for (const auto& x : modules) n += p == pooling::mean ? 1 : x.U.rows() * x.V.rows();
    return n;
  }

  /// Writes module (U, V)'s pooled features to out: vec row-major of U·Vᵀ (h_u·h_v values), or its
  /// mean entry (1ᵀU)(Vᵀ1)/(h_u·h_v) (one value).
  template <class MU, class MV>
  static void pool_module_into(const Eigen::MatrixBase<MU>& U, const Eigen::MatrixBase<MV>& V, pooling p,
                               S* out) {
    const index hu = U.rows(), hv = V.rows();
    if (p == pooling::mean) {
      out[0] = hu == 0 || hv == 0 ? S(0)
                                  : U.colwise().sum().dot(V.colwise().sum()) / static_cast<S>(hu * hv);
    } else {
      // Entry (a, b) of U·Vᵀ at a·h_v + b: the column-major layout of V·Uᵀ.
      Eigen::Map<matrix<S>>(out, hv, hu).noalias() = V * U.transpose();
    }
  }

  /// Writes x for one adapter's modules to out[0, pooled_size()) (e.g. a row of a row-major matrix).
  static void pool_into(const uv_list<S>& modules, pooling p, S* out) {
    for (const auto& x : modules) {
      detail::require_same_rank(x, "invariant_head");
      pool_module_into(x.U, x.V, p, out);
      out += p == pooling::mean ? 1 : x.U.rows() * x.V.rows();
    }
  }

  /// y for each row of X (N×F): N×out.
  matrix<S> forward(const row_matrix<S>& X) const {
    if (X.cols() != input_size())
      throw error(error_code::shape_mismatch,
                  "invariant_head: linear1 takes " + std::to_string(input_size()) +
                      " features, got " + std::to_string(X.cols()));
    return after_linear1(X * linear1_weight.transpose());
  }

  /// The head from z = W₁·x (N×H, bias not yet added) on: + b₁, LayerNorm, ReLU, linear2.
  matrix<S> after_linear1(matrix<S> z) const {
    z.rowwise() += linear1_bias.transpose();
    const index H = hidden_size();
    for (index i = 0; i < z.rows(); ++i) {
      auto row = z.row(i);
      const S mean = row.mean();
      const S var = (row.array() - mean).square().sum() / static_cast<S>(H);
      const S inv = S(1) / std::sqrt(var + norm_epsilon);
      row = (((row.array() - mean) * inv) * norm_weight.transpose().array() +
             norm_bias.transpose().array())
                .max(S(0))
                .matrix();
    }
    matrix<S> y = z * linear2_weight.transpose();
    y.rowwise() += linear2_bias.transpose();
    return y;
  }

 private:
  template <class Rng>
  static matrix<S> uniform(index rows, index cols, index fan_in, Rng& rng) {
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    std::uniform_real_distribution<double> u(-bound, bound);
    matrix<S> w(rows, cols);
    for (index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<S>(u(rng));
    return w;
  }
};

}  // namespace lola::nn
