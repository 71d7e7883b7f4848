#pragma once
// Shared helpers for lola's tests: random data, ε, and the error bounds tolerances derive from.

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include <Eigen/Core>

namespace lola_test {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
using matrix_d = matrix<double>;

template <class T>
constexpr double eps() {
  return static_cast<double>(std::numeric_limits<T>::epsilon());
}

/// An m×n matrix of independent standard normal entries.
template <class T>
matrix<T> gaussian(Eigen::Index m, Eigen::Index n, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  matrix<T> x(m, n);
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = 0; i < m; ++i) x(i, j) = static_cast<T>(normal(rng));
  return x;
}

/// The same matrix in double, so a reference computed from it carries no rounding of T.
template <class X>
matrix_d in_double(const X& x) {
  return x.template cast<double>();
}

/// Standard bound for a computed product of n-term inner products (Higham, Accuracy and Stability,
/// §3.5): ‖fl(X·Y) − X·Y‖_F ≤ γₙ·‖X‖_F·‖Y‖_F with γₙ = n·u/(1 − n·u), u = ε/2 for round to nearest.
/// Tests compare a value computed in T against a double reference and allow one such bound per
/// product in the chain, plus the scale multiplications: `terms` counts the accumulated length
/// across the chain. The factor 2 covers u = ε/2 being replaced by ε and the reference's own error.
template <class T>
double product_tolerance(double terms, double norm_product) {
  return 2.0 * (terms + 2.0) * eps<T>() * norm_product;
}

/// |σ̂ᵢ − σᵢ| for σ of s·B·A from the Grams (linalg/spectrum_from_grams.hpp): the Grams (γ_d, γ_k
/// relative to ‖B‖_F², ‖A‖_F²), the Cholesky of G_A and the Jacobi decomposition of M (64·r·ε each,
/// test_small_kernels.cpp), the two r×r products (γ_r each) put an absolute error
/// δμ ≤ 2·(d + k + 2r + 128·r)·ε·‖B‖_F²·‖A‖_F² on μ = σ²/s², and |√μ̂ − √μ| ≤ min(√δμ, δμ/√μ).
template <class T>
double sigma_tolerance(int d, int k, int r, double s, double norm_b, double norm_a, double sigma) {
  const double delta_mu = 2.0 * (d + k + 2 * r + 128 * r) * eps<T>() * norm_b * norm_b * norm_a * norm_a;
  const double mu = sigma * sigma / (s * s);
  return std::abs(s) * std::min(std::sqrt(delta_mu), mu > 0 ? delta_mu / std::sqrt(mu) : 1e300);
}

template <class T>
using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// max over entries of |computed − reference| ÷ bound, for an entry-wise error bound; an exact zero
/// of the bound demands an exact zero of the error. A kernel is within its bound iff this is ≤ 1.
template <class C>
double worst_entry_ratio(const C& computed, const matrix_d& reference, const matrix_d& bound) {
  double worst = 0;
  for (Eigen::Index j = 0; j < computed.cols(); ++j)
    for (Eigen::Index i = 0; i < computed.rows(); ++i) {
      const double error = std::abs(double(computed(i, j)) - reference(i, j));
      worst = std::max(worst, bound(i, j) > 0 ? error / bound(i, j) : (error > 0 ? 1e300 : 0.0));
    }
  return worst;
}

}  // namespace lola_test
