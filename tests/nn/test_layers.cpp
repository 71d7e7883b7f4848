// GL-net's layers (nn/): each commutes with an independent GL(r_j) element per module, the O(r)-only
// layer does not, and the gate, norm, dropout and head agree with the formulas written out here.
// The action in LoL notation (U = B, V = Aᵀ): g·(U, V) = (U·G, V·G⁻ᵀ); O(r): (U·Q, V·Q).
//
// Rounding bounds (Higham, Accuracy and Stability, §3.1 and §3.5): a computed n-term inner product
// is off by at most γₙ·Σ|x_i||y_i|, a computed product by γₙ·|X|·|Y| entrywise and γₙ·‖X‖‖Y‖ in the
// Frobenius norm, γₙ = n·u/(1 − n·u), u = ε/2. gamma<T>(n) = product_tolerance<T>(n, 1) =
// 2(n + 2)·ε is γₙ with the factor 2 and the two extra terms of test_support.hpp, which also cover
// the one rounding of a result to T and the double reference's own rounding.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/LU>

#include "lola/core/error.hpp"
#include "lola/core/random.hpp"
#include "lola/nn/dropout.hpp"
#include "lola/nn/equivariant_linear.hpp"
#include "lola/nn/gate.hpp"
#include "lola/nn/gl_norm.hpp"
#include "lola/nn/invariant_head.hpp"
#include "lola/nn/mixing_linear.hpp"
#include "lola/nn/uv_pair.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

namespace nn = lola::nn;
using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;
using vector_d = Eigen::VectorXd;

namespace {

// The condition numbers every GL property is checked at (random_gl: σ geometric, |det G| = 1).
const double conds[] = {1.0, 10.0, 100.0, 1000.0};

template <class T>
double gamma(double n) {
  return product_tolerance<T>(n, 1.0);
}

// G⁻ᵀ for the V side, computed in double from the stored G and rounded once to T, so it is G⁻ᵀ to
// within ε_T/2 entrywise (plus ε_double·cond(G), negligible). A layer that acts on rows commutes
// with right multiplication by any matrix, so the tests need no more than this.
template <class T>
matrix<T> inverse_transpose(const matrix<T>& G) {
  return matrix_d(in_double(G).inverse().transpose()).template cast<T>();
}

template <class T>
nn::uv_pair<T> act(const nn::uv_pair<T>& x, const matrix<T>& G, const matrix<T>& Git) {
  return {x.U * G, x.V * Git};
}

template <class T>
double dist(const matrix<T>& a, const matrix<T>& b) {
  return (in_double(a) - in_double(b)).norm();
}

template <class T>
matrix_d abs_d(const matrix<T>& a) {
  return in_double(a).cwiseAbs();
}

template <class T>
nn::uv_pair<T> random_pair(Eigen::Index n, Eigen::Index m, Eigen::Index r, std::mt19937_64& rng) {
  return {gaussian<T>(n, r, rng), gaussian<T>(m, r, rng)};
}

using lola_test::contains;
using lola_test::thrown_by;

// How far the computed i-th row sum s'_i of P' = (U·G)(V·G⁻ᵀ)ᵀ, from inputs rounded to T, and the
// computed s_i of P = U·Vᵀ can be apart; both equal the exact s_i in exact arithmetic. Inputs:
// fl(U·G) is off by γ_r·|U||G|, fl(V·G⁻ᵀ) by γ_r·|V||G⁻ᵀ| plus the rounding of G⁻ᵀ (ε|G⁻ᵀ|); the sum
// itself (fast U·(Vᵀ1) or slow P·1: r-term products and m-term sums) by γ_{m+r} of the product
// of the absolute values. Every term is bounded by a_i·b with a = |U|·|G| and b = |G⁻¹|·|V|ᵀ·1, so
// |s'_i − s_i| ≤ γ_{m+3r+1}·a_i·b + γ_{m+r}·(|U|·|V|ᵀ·1)_i. With cond(G) = 1 the first term reduces to
// the second; it grows like ‖G‖‖G⁻¹‖ ≈ cond(G).
template <class T>
vector_d sum_deviation(const matrix<T>& U, const matrix<T>& V, const matrix<T>& G) {
  const matrix_d Gd = in_double(G);
  const Eigen::Index m = V.rows(), r = U.cols();
  const vector_d a_b = abs_d(U) * Gd.cwiseAbs() * (Gd.inverse().cwiseAbs() * (abs_d(V).transpose() * vector_d::Ones(m)));
  const vector_d plain = abs_d(U) * (abs_d(V).transpose() * vector_d::Ones(m));
  return gamma<T>(double(m + 3 * r + 1)) * a_b + gamma<T>(double(m + r)) * plain;
}

// min over rows and columns of |s_i| / (its deviation bound): ≥ 1 means no row or column sum can
// change sign between the computations compared, so the step gate decides alike in both.
template <class T>
double step_margin(const nn::uv_pair<T>& x, const matrix<T>& G) {
  const matrix_d P = in_double(x.U) * in_double(x.V).transpose();
  const vector_d rows = P.rowwise().sum(), cols = P.colwise().sum().transpose();
  const vector_d dr = sum_deviation(x.U, x.V, G);
  const matrix<T> Git = inverse_transpose(G);
  // Columns: the same bound with the roles of U and V (and of G and G⁻ᵀ) swapped.
  const vector_d dc = sum_deviation(x.V, x.U, Git);
  return std::min((rows.cwiseAbs().array() / dr.array()).minCoeff(),
                  (cols.cwiseAbs().array() / dc.array()).minCoeff());
}

// The slow gate of the reference (GLNonlinSlow / GLNorm2): P = U·Vᵀ materialised, its row sums gate
// the rows of U and its column sums the rows of V.
template <class T, class Sigma>
nn::uv_pair<T> slow_gate(const nn::uv_pair<T>& x, Sigma sigma) {
  const matrix<T> P = x.U * x.V.transpose();
  nn::uv_pair<T> out = x;
  for (Eigen::Index i = 0; i < P.rows(); ++i) {
    T s = 0;
    for (Eigen::Index j = 0; j < P.cols(); ++j) s += P(i, j);
    out.U.row(i) *= static_cast<T>(sigma(s));
  }
  for (Eigen::Index j = 0; j < P.cols(); ++j) {
    T s = 0;
    for (Eigen::Index i = 0; i < P.rows(); ++i) s += P(i, j);
    out.V.row(j) *= static_cast<T>(sigma(s));
  }
  return out;
}

struct tanh_sigma {
  template <class S>
  S operator()(S x) const {
    return std::tanh(x);
  }
};

struct relu_sigma {
  template <class S>
  S operator()(S x) const {
    return x > S(0) ? x : S(0);
  }
};

// For a 1-Lipschitz σ the gated row σ(s)·U_i moves by at most |Δs|·‖U_i‖ when s does, plus the
// rounding of the scalar product (γ_1·|σ(s)|·‖U_i‖). Summed over rows (‖·‖_F ≤ Σ row norms).
template <class T, class Sigma>
double lipschitz_gate_tolerance(const vector_d& sums, const vector_d& deviation, const vector_d& rows_norm_scaled,
                                Sigma sigma) {
  double tol = 0;
  for (Eigen::Index i = 0; i < sums.size(); ++i)
    tol += (deviation(i) + gamma<T>(1) * std::abs(sigma(sums(i)))) * rows_norm_scaled(i);
  return tol;
}

}  // namespace

TEST_SUITE("nn.layers") {
  TEST_CASE_TEMPLATE("equivariant_linear commutes with an independent GL(r_j) element per module", T, float,
                     double) {
    std::mt19937_64 rng(1001);
    // Three modules of different n_j × m_j and ranks; the layer maps to h_u = 5 and h_v = 4 rows.
    const std::vector<std::array<int, 3>> shapes = {{{7, 5, 3}}, {{4, 9, 2}}, {{6, 6, 4}}};
    std::vector<matrix<T>> phi, psi;
    nn::uv_list<T> x;
    for (const auto& s : shapes) {
      phi.push_back(gaussian<T>(5, s[0], rng));
      psi.push_back(gaussian<T>(4, s[1], rng));
      x.push_back(random_pair<T>(s[0], s[1], s[2], rng));
    }
    const nn::equivariant_linear<T> layer(phi, psi);
    REQUIRE(layer.modules() == 3);
    const nn::uv_list<T> y = layer(x);
    for (double cond : conds) {
      std::vector<matrix<T>> G, Git;
      nn::uv_list<T> moved;
      for (std::size_t j = 0; j < x.size(); ++j) {
        G.push_back(lola::random_gl<T>(x[j].rank(), cond, rng));
        Git.push_back(inverse_transpose(G[j]));
        moved.push_back(act(x[j], G[j], Git[j]));
      }
      const nn::uv_list<T> y_moved = layer(moved);
      for (std::size_t j = 0; j < x.size(); ++j) {
        const auto n = double(x[j].U.rows()), m = double(x[j].V.rows()), r = double(x[j].rank());
        // Φ·fl(U·G) and fl(Φ·U)·G are each within γ_{n+r}·‖Φ‖‖U‖‖G‖ of Φ·U·G (two chained products);
        // on the V side ‖G⁻ᵀ‖ replaces ‖G‖. ‖G‖·‖G⁻¹‖ ≥ cond(G): the two sides together grow with cond.
        const double tol_u = 2 * product_tolerance<T>(n + r, in_double(phi[j]).norm() * in_double(x[j].U).norm() *
                                                                 in_double(G[j]).norm());
        const double tol_v = 2 * product_tolerance<T>(m + r, in_double(psi[j]).norm() * in_double(x[j].V).norm() *
                                                                 in_double(Git[j]).norm());
        CHECK(dist<T>(y_moved[j].U, y[j].U * G[j]) <= tol_u);
        CHECK(dist<T>(y_moved[j].V, y[j].V * Git[j]) <= tol_v);
        // The same check catches a layer that is not equivariant: a bias b·1ᵀ added to Φ·U (the
        // bias does not move with G, so the error is ‖b 1ᵀ(G − I)‖, far above the rounding).
        if (cond > 1) {
          const matrix<T> bias = matrix<T>::Ones(5, x[j].rank());
          CHECK(dist<T>(matrix<T>(y_moved[j].U + bias), matrix<T>((y[j].U + bias) * G[j])) > 100 * tol_u);
        }
      }
    }
  }

  TEST_CASE_TEMPLATE("equivariant_linear: apply_factors reads B and A as stored, with the scale", T, float,
                     double) {
    std::mt19937_64 rng(1002);
    using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto layer = nn::equivariant_linear<T>::random({8, 3}, {6, 5}, 4, rng);
    REQUIRE(layer.phi(0).rows() == 4);
    REQUIRE(layer.phi(1).cols() == 3);
    REQUIRE(layer.psi(1).cols() == 5);
    const row_major B = gaussian<T>(3, 2, rng), A = gaussian<T>(2, 5, rng);
    const T s = T(0.75);
    const nn::uv_pair<T> y = layer.apply_factors(1, B, A, s);
    // Φ·B (3 terms) then one multiplication by s; Ψ·Aᵀ (5 terms), against double.
    CHECK((in_double(y.U) - in_double(layer.phi(1)) * (double(s) * in_double(B))).norm() <=
          product_tolerance<T>(3 + 1, double(s) * in_double(layer.phi(1)).norm() * in_double(B).norm()));
    CHECK((in_double(y.V) - in_double(layer.psi(1)) * in_double(A).transpose()).norm() <=
          product_tolerance<T>(5, in_double(layer.psi(1)).norm() * in_double(A).norm()));
    // Without a scale it is apply() on (B, Aᵀ), to the last bit.
    const nn::uv_pair<T> plain = layer.apply_factors(1, B, A);
    const nn::uv_pair<T> same = layer.apply(1, {matrix<T>(B), matrix<T>(A.transpose())});
    CHECK(plain.U == same.U);
    CHECK(plain.V == same.V);
  }

  TEST_CASE_TEMPLATE("mixing_linear is O(r)-equivariant and fails under a general GL element", T, float, double) {
    std::mt19937_64 rng(1003);
    const int n = 7, m = 5, r = 3, hu = 4, hv = 6;
    const matrix<T> W = gaussian<T>(hu + hv, n + m, rng);
    const nn::mixing_linear<T> layer(W, n, hu);
    const nn::uv_pair<T> x = random_pair<T>(n, m, r, rng);
    const nn::uv_pair<T> y = layer(x);
    const double norm_w = in_double(W).norm(), norm_x = in_double(x.U).norm() + in_double(x.V).norm();
    for (int trial = 0; trial < 4; ++trial) {
      // (U·Q, V·Q): both halves of each output row carry the same Q. Each side is within
      // γ_{n+m+r}·‖W‖(‖U‖ + ‖V‖)‖Q‖ of W·[U; V]·Q.
      const matrix<T> Q = lola::random_orthogonal<T>(r, rng);
      const nn::uv_pair<T> yq = layer(act(x, Q, Q));
      const double tol = 2 * product_tolerance<T>(n + m + r, norm_w * norm_x * in_double(Q).norm());
      CHECK(dist<T>(yq.U, y.U * Q) <= tol);
      CHECK(dist<T>(yq.V, y.V * Q) <= tol);
    }
    for (double cond : {10.0, 100.0, 1000.0}) {  // cond 1 draws an orthogonal G, which would pass
      const matrix<T> G = lola::random_gl<T>(r, cond, rng), Git = inverse_transpose(G);
      const nn::uv_pair<T> yg = layer(act(x, G, Git));
      const double norm_g = in_double(G).norm() + in_double(Git).norm();
      const double tol = 2 * product_tolerance<T>(n + m + r, norm_w * norm_x * norm_g);
      // The defect is exactly the mixed term: U' picks up W_uv·V·(G⁻ᵀ − G), V' picks up
      // W_vu·U·(G − G⁻ᵀ). The computed defect matches it to within the rounding bound…
      const matrix_d Gd = in_double(G), Gitd = in_double(Git);
      const matrix_d defect_u = in_double(W).topRightCorner(hu, m) * in_double(x.V) * (Gitd - Gd);
      const matrix_d defect_v = in_double(W).bottomLeftCorner(hv, n) * in_double(x.U) * (Gd - Gitd);
      CHECK((in_double(yg.U) - in_double(y.U) * Gd - defect_u).norm() <= tol);
      CHECK((in_double(yg.V) - in_double(y.V) * Gitd - defect_v).norm() <= tol);
      // …and is of the size of the data, not of the rounding: far above the tolerance.
      CHECK(dist<T>(yg.U, y.U * G) > 100 * tol);
      CHECK(dist<T>(yg.V, y.V * Git) > 100 * tol);
    }
  }

  TEST_CASE_TEMPLATE("gl_gate is GL-equivariant for the step, tanh and relu σ", T, float, double) {
    std::mt19937_64 rng(1004);
    const int n = 7, m = 5, r = 3;
    const nn::uv_pair<T> x = random_pair<T>(n, m, r, rng);
    for (double cond : conds) {
      const matrix<T> G = lola::random_gl<T>(r, cond, rng), Git = inverse_transpose(G);
      const nn::uv_pair<T> moved = act(x, G, Git);
      // Step σ: if no row or column sum is within its deviation bound of 0 (the data is drawn so),
      // both sides close the same rows and differ only by the rounding of U·G (γ_r‖U‖‖G‖, twice).
      REQUIRE(step_margin(x, G) > 1.0);
      nn::uv_pair<T> a = moved, b = x;
      nn::gl_gate(a);
      nn::gl_gate(b);
      CHECK(dist<T>(a.U, b.U * G) <= 2 * product_tolerance<T>(r, in_double(x.U).norm() * in_double(G).norm()));
      CHECK(dist<T>(a.V, b.V * Git) <= 2 * product_tolerance<T>(r, in_double(x.V).norm() * in_double(Git).norm()));

      // 1-Lipschitz σ: the gate factor moves by at most the deviation of the sum.
      const matrix_d P = in_double(x.U) * in_double(x.V).transpose();
      const vector_d rows = P.rowwise().sum(), cols = P.colwise().sum().transpose();
      const vector_d dev_r = sum_deviation(x.U, x.V, G), dev_c = sum_deviation(x.V, x.U, Git);
      const vector_d u_norms = (in_double(x.U) * in_double(G)).rowwise().norm();
      const vector_d v_norms = (in_double(x.V) * in_double(Git)).rowwise().norm();
      const double round_u = 2 * product_tolerance<T>(r, in_double(x.U).norm() * in_double(G).norm());
      const double round_v = 2 * product_tolerance<T>(r, in_double(x.V).norm() * in_double(Git).norm());
      auto check_sigma = [&](auto sigma) {
        nn::uv_pair<T> c = moved, d = x;
        nn::gl_gate(c, sigma);
        nn::gl_gate(d, sigma);
        // The rounding of U·G is scaled by |σ| ≤ max |σ(s)| (1 for tanh, |s| for relu).
        double smax = 1;
        for (Eigen::Index i = 0; i < rows.size(); ++i) smax = std::max(smax, std::abs(double(sigma(rows(i)))));
        for (Eigen::Index i = 0; i < cols.size(); ++i) smax = std::max(smax, std::abs(double(sigma(cols(i)))));
        CHECK(dist<T>(c.U, d.U * G) <= lipschitz_gate_tolerance<T>(rows, dev_r, u_norms, sigma) + smax * round_u);
        CHECK(dist<T>(c.V, d.V * Git) <= lipschitz_gate_tolerance<T>(cols, dev_c, v_norms, sigma) + smax * round_v);
      };
      check_sigma(tanh_sigma{});
      check_sigma(relu_sigma{});
    }
  }

  TEST_CASE_TEMPLATE("a non-equivariant gate fails the same check", T, float, double) {
    std::mt19937_64 rng(1005);
    const int n = 7, m = 5, r = 3;
    const nn::uv_pair<T> x = random_pair<T>(n, m, r, rng);
    // Two gates that do not go through P: the entrywise ReLU of an ordinary network, and the step
    // of U's own row sums U·1 (not invariant: (U·G)·1 ≠ U·1).
    auto entrywise_relu = [](nn::uv_pair<T> y) {
      y.U = y.U.cwiseMax(T(0));
      y.V = y.V.cwiseMax(T(0));
      return y;
    };
    auto own_row_sums = [](nn::uv_pair<T> y) {
      const matrix<T> su = y.U.rowwise().sum(), sv = y.V.rowwise().sum();
      for (Eigen::Index i = 0; i < y.U.rows(); ++i) y.U.row(i) *= su(i) > 0 ? T(1) : T(0);
      for (Eigen::Index i = 0; i < y.V.rows(); ++i) y.V.row(i) *= sv(i) > 0 ? T(1) : T(0);
      return y;
    };
    for (double cond : {10.0, 100.0, 1000.0}) {
      const matrix<T> G = lola::random_gl<T>(r, cond, rng), Git = inverse_transpose(G);
      const nn::uv_pair<T> moved = act(x, G, Git);
      // The tolerance the correct gate meets above.
      const double tol = 2 * product_tolerance<T>(r, in_double(x.U).norm() * in_double(G).norm());
      for (auto wrong : {0, 1}) {
        const nn::uv_pair<T> a = wrong == 0 ? entrywise_relu(moved) : own_row_sums(moved);
        const nn::uv_pair<T> b = wrong == 0 ? entrywise_relu(x) : own_row_sums(x);
        CHECK(dist<T>(a.U, b.U * G) > 100 * tol);
      }
    }
  }

  TEST_CASE_TEMPLATE("the fast gate equals the slow gate with P formed densely", T, float, double) {
    std::mt19937_64 rng(1006);
    const int n = 6, m = 6, r = 4;
    const nn::uv_pair<T> x = random_pair<T>(n, m, r, rng);
    // Fast U·(Vᵀ1) and slow P·1 differ only in summation order: by at most γ_{m+r}·(|U||V|ᵀ1)_i
    // each. With G = I the deviation bound of sum_deviation covers both.
    const matrix<T> I = matrix<T>::Identity(r, r);
    REQUIRE(step_margin(x, I) > 1.0);
    nn::uv_pair<T> fast = x;
    nn::gl_gate(fast);
    const nn::uv_pair<T> slow = slow_gate(x, nn::step{});
    // Step σ: each row is multiplied by exactly 1 or exactly 0, the same ones: identical bits.
    CHECK(fast.U == slow.U);
    CHECK(fast.V == slow.V);
    CHECK(fast.U.rowwise().norm().minCoeff() == T(0));  // the data closes at least one row…
    CHECK(fast.U.rowwise().norm().maxCoeff() > T(0));   // …and keeps at least one

    // Custom 1-Lipschitz σ: the factors differ by at most the sum deviation times the row norm.
    const matrix_d P = in_double(x.U) * in_double(x.V).transpose();
    const vector_d rows = P.rowwise().sum(), cols = P.colwise().sum().transpose();
    const vector_d dev_r = sum_deviation(x.U, x.V, I), dev_c = sum_deviation(x.V, x.U, I);
    const vector_d u_norms = in_double(x.U).rowwise().norm(), v_norms = in_double(x.V).rowwise().norm();
    auto compare = [&](auto sigma) {
      nn::uv_pair<T> f = x;
      nn::gl_gate(f, sigma);
      const nn::uv_pair<T> s = slow_gate(x, sigma);
      CHECK(dist<T>(f.U, s.U) <= lipschitz_gate_tolerance<T>(rows, dev_r, u_norms, sigma));
      CHECK(dist<T>(f.V, s.V) <= lipschitz_gate_tolerance<T>(cols, dev_c, v_norms, sigma));
    };
    compare(tanh_sigma{});
    compare(relu_sigma{});

    // A gate that swaps the sums (U's rows by P's column sums, V's by the row sums; n = m here) is
    // still GL-equivariant — any invariant scalar per row is — so the equivariance check passes it;
    // the comparison with the slow gate is what catches it.
    auto swapped = [](nn::uv_pair<T> y) {
      const matrix<T> Pt = y.U * y.V.transpose();
      const matrix<T> rs = Pt.rowwise().sum(), cs = Pt.colwise().sum().transpose();
      for (Eigen::Index i = 0; i < y.U.rows(); ++i) y.U.row(i) *= cs(i) > 0 ? T(1) : T(0);
      for (Eigen::Index j = 0; j < y.V.rows(); ++j) y.V.row(j) *= rs(j) > 0 ? T(1) : T(0);
      return y;
    };
    const nn::uv_pair<T> w = swapped(x);
    CHECK((w.U != slow.U || w.V != slow.V));
    // It differs by whole rows of U or V, not by rounding.
    CHECK(dist<T>(w.U, slow.U) + dist<T>(w.V, slow.V) >=
          std::min(in_double(x.U).rowwise().norm().minCoeff(), in_double(x.V).rowwise().norm().minCoeff()));
    const matrix<T> G = lola::random_gl<T>(r, 100.0, rng), Git = inverse_transpose(G);
    REQUIRE(step_margin(x, G) > 1.0);
    const nn::uv_pair<T> ws = swapped(act(x, G, Git));
    CHECK(dist<T>(ws.U, w.U * G) <= 2 * product_tolerance<T>(r, in_double(x.U).norm() * in_double(G).norm()));
    CHECK(dist<T>(ws.V, w.V * Git) <= 2 * product_tolerance<T>(r, in_double(x.V).norm() * in_double(Git).norm()));
  }

  TEST_CASE_TEMPLATE("the step gate closes rows whose sum is exactly 0 or negative", T, float, double) {
    // V = I₂, so Vᵀ1 = (1, 1) and the row sums of P = U·Vᵀ are U's row sums; all exact in binary.
    matrix<T> U(4, 2), V(2, 2);
    U << 1, -1,   // row sum 0: closed
        2, -3,    // −1: closed
        1, 0.5,   // 1.5: open
        -0.0, 0;  // −0 + 0 = 0: closed
    V << 1, 0, 0, 1;
    // Column sums V·(Uᵀ1): Uᵀ1 = (4, −3.5), so V's row 0 is open and row 1 closed.
    nn::uv_pair<T> x{U, V};
    nn::gl_gate(x);
    matrix<T> U_expected(4, 2), V_expected(2, 2);
    U_expected << 0, 0, 0, 0, 1, 0.5, 0, 0;
    V_expected << 1, 0, 0, 0;
    CHECK(x.U == U_expected);
    CHECK(x.V == V_expected);
    CHECK(slow_gate(nn::uv_pair<T>{U, V}, nn::step{}).U == U_expected);
    // A NaN sum closes its row too (step: NaN > 0 is false).
    nn::uv_pair<T> y{U, V};
    y.U(2, 0) = std::numeric_limits<T>::quiet_NaN();
    nn::gl_gate(y);
    // The row is closed (multiplied by 0), as the reference's gL ⊙ U does: NaN·0 stays NaN.
    CHECK(std::isnan(y.U(2, 0)));
    CHECK(y.U(2, 1) == T(0));
    CHECK(y.U.row(0).isZero());
  }

  TEST_CASE_TEMPLATE("gl_norm: unit-norm product, per-row scales, GL-equivariant", T, float, double) {
    std::mt19937_64 rng(1007);
    const int n = 6, m = 5, r = 3;
    const nn::uv_pair<T> x = random_pair<T>(n, m, r, rng);
    const matrix_d P = in_double(x.U) * in_double(x.V).transpose();
    const double norm_p = P.norm();
    // N² = Σ (UᵀU)∘(VᵀV): the Grams are off by γ_n|U|ᵀ|U| and γ_m|V|ᵀ|V|, the r²-term sum by γ_{r²},
    // so |δN²| ≤ γ_{n+m+r²}·‖|U||V|ᵀ‖²_F and |δN|/N ≤ γ_{n+m+r²}·κ²/2 with κ = ‖|U||V|ᵀ‖/‖U·Vᵀ‖, the
    // componentwise condition number of the product. 1/√N then adds δN/2N; sqrt, division and the
    // two multiplications per entry add 4 roundings (gamma<T>(4) covers them).
    auto relative = [&](const nn::uv_pair<T>& y) {
      const double kappa = (abs_d(y.U) * abs_d(y.V).transpose()).norm() /
                           (in_double(y.U) * in_double(y.V).transpose()).norm();
      return gamma<T>(double(y.U.rows() + y.V.rows() + r * r)) * kappa * kappa / 2 + gamma<T>(4);
    };
    {
      nn::uv_pair<T> y = x;
      const auto norm = nn::gl_norm<T>::identity(n, m);
      REQUIRE(norm.epsilon == T(1e-6));
      norm(y);
      const double expected = norm_p / (norm_p + 1e-6);
      // Each factor carries the relative error above; the product twice that.
      CHECK(std::abs((in_double(y.U) * in_double(y.V).transpose()).norm() - expected) <= 2 * relative(x) * expected);
    }
    nn::gl_norm<T> norm{gaussian<T>(n, 1, rng), gaussian<T>(m, 1, rng), T(0.25)};
    {
      nn::uv_pair<T> y = x;
      norm(y);
      const double root = std::sqrt(norm_p + 0.25);
      const matrix_d U_expected = in_double(norm.scale_u).asDiagonal() * in_double(x.U) / root;
      const matrix_d V_expected = in_double(norm.scale_v).asDiagonal() * in_double(x.V) / root;
      CHECK((in_double(y.U) - U_expected).norm() <= relative(x) * U_expected.norm());
      CHECK((in_double(y.V) - V_expected).norm() <= relative(x) * V_expected.norm());
    }
    for (double cond : conds) {
      const matrix<T> G = lola::random_gl<T>(r, cond, rng), Git = inverse_transpose(G);
      nn::uv_pair<T> a = act(x, G, Git), b = x;
      // The moved inputs are off by γ_{r+1} entrywise relative to |U||G|, |V||G⁻ᵀ|, which moves
      // ‖P‖ by at most 2·γ_{r+1}·κ' (κ' the condition number of the moved pair): half of that for N.
      const double rel = relative(a) + relative(b) + gamma<T>(double(r + 1)) * (abs_d(a.U) * abs_d(a.V).transpose()).norm() / norm_p;
      norm(a);
      norm(b);
      // Both sides are the same scaled rows of U·G up to the relative error of their N and the
      // rounding of b.U·G.
      const double su = in_double(norm.scale_u).cwiseAbs().maxCoeff(), sv = in_double(norm.scale_v).cwiseAbs().maxCoeff();
      const double root = std::sqrt(norm_p + 0.25);
      const double tol_u = (rel + gamma<T>(double(r))) * su * (abs_d(x.U) * abs_d(G)).norm() / root;
      const double tol_v = (rel + gamma<T>(double(r))) * sv * (abs_d(x.V) * abs_d(Git)).norm() / root;
      CHECK(dist<T>(a.U, b.U * G) <= tol_u);
      CHECK(dist<T>(a.V, b.V * Git) <= tol_v);
      // A norm that is not invariant — dividing by √(‖U‖_F·‖V‖_F) instead — fails the same check.
      // Not at cond 1e3: there κ' is a few hundred and the bound above, ∝ ε·κ'², is no longer small
      // next to the data in float (the Gram formula loses ε·cond² where the moved inputs themselves
      // only carry ε·cond).
      if (cond > 1 && cond < 1000) {
        const nn::uv_pair<T> c = act(x, G, Git);
        const T wrong_a = std::sqrt(c.U.norm() * c.V.norm()), wrong_b = std::sqrt(x.U.norm() * x.V.norm());
        CHECK(dist<T>(matrix<T>(c.U / wrong_a), matrix<T>(x.U * G / wrong_b)) > 100 * tol_u);
      }
    }
  }

  TEST_CASE_TEMPLATE("equivariant_dropout_inference scales by 1 − p and rejects p outside [0, 1)", T, float,
                     double) {
    std::mt19937_64 rng(1008);
    const nn::uv_pair<T> x = random_pair<T>(5, 4, 3, rng);
    nn::uv_pair<T> y = x;
    nn::equivariant_dropout_inference(y, 0.25);
    CHECK(y.U == matrix<T>(x.U * T(0.75)));  // 0.75 is exact in binary: one rounding per entry
    CHECK(y.V == matrix<T>(x.V * T(0.75)));
    nn::uv_pair<T> z = x;
    nn::equivariant_dropout_inference(z, 0.0);
    CHECK(z.U == x.U);
    CHECK(z.V == x.V);
    // Scaling commutes with any G exactly up to the rounding of U·G (twice).
    const matrix<T> G = lola::random_gl<T>(3, 1000.0, rng);
    nn::uv_pair<T> a{x.U * G, x.V};
    nn::equivariant_dropout_inference(a, 0.25);
    CHECK(dist<T>(a.U, y.U * G) <= 2 * product_tolerance<T>(3 + 1, in_double(x.U).norm() * in_double(G).norm()));
    for (double p : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
      nn::uv_pair<T> w = x;
      const lola::error e = thrown_by([&] { nn::equivariant_dropout_inference(w, p); });
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(contains(e.what(), "[0, 1)"));
      CHECK(w.U == x.U);  // left untouched
    }
  }

  TEST_CASE_TEMPLATE("invariant_head pooling: row-major vec of P_j, mean of P_j, GL-invariant", T, float, double) {
    std::mt19937_64 rng(1009);
    const int h = 3;
    nn::uv_list<T> x;
    for (int r : {2, 3, 4}) x.push_back(random_pair<T>(h, h, r, rng));
    REQUIRE(nn::invariant_head<T>::pooled_size(x, nn::pooling::flatten) == 3 * h * h);
    REQUIRE(nn::invariant_head<T>::pooled_size(x, nn::pooling::mean) == 3);
    std::vector<T> flat(3 * h * h, T(-7)), mean(3, T(-7));
    nn::invariant_head<T>::pool_into(x, nn::pooling::flatten, flat.data());
    nn::invariant_head<T>::pool_into(x, nn::pooling::mean, mean.data());
    for (int j = 0; j < 3; ++j) {
      const auto& xj = x[std::size_t(j)];
      const int r = int(xj.rank());
      const matrix_d P = in_double(xj.U) * in_double(xj.V).transpose();
      for (int a = 0; a < h; ++a)
        for (int b = 0; b < h; ++b) {
          // One r-term inner product: γ_r·|U_a|·|V_b|.
          const double tol = product_tolerance<T>(r, abs_d(xj.U).row(a).dot(abs_d(xj.V).row(b)));
          CHECK(std::abs(double(flat[std::size_t(j * h * h + a * h + b)]) - P(a, b)) <= tol);
        }
      // (1ᵀU)(Vᵀ1)/h²: h-term column sums, an r-term dot, one division: γ_{2h+r+1} of the same sum
      // taken in absolute values.
      const double abs_mean = (abs_d(xj.U) * abs_d(xj.V).transpose()).mean();
      CHECK(std::abs(double(mean[std::size_t(j)]) - P.mean()) <= product_tolerance<T>(2 * h + r + 1, abs_mean));
    }
    // Non-square modules (h_u = 2, h_v = 5): entry (a, b) at a·h_v + b.
    const nn::uv_list<T> rect{random_pair<T>(2, 5, 3, rng)};
    std::vector<T> flat_rect(10);
    nn::invariant_head<T>::pool_into(rect, nn::pooling::flatten, flat_rect.data());
    const matrix_d Pr = in_double(rect[0].U) * in_double(rect[0].V).transpose();
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 5; ++b)
        CHECK(std::abs(double(flat_rect[std::size_t(a * 5 + b)]) - Pr(a, b)) <=
              product_tolerance<T>(3, abs_d(rect[0].U).row(a).dot(abs_d(rect[0].V).row(b))));

    // Invariance: the features of (U_j·G_j, V_j·G_j⁻ᵀ) are those of (U_j, V_j). Entry (a, b) of the
    // moved P is off by γ_{3r+1}·(|U||G||G⁻¹||V|ᵀ)_ab (the deviation argument of the gate, per entry),
    // the original by γ_r·(|U||V|ᵀ)_ab.
    for (double cond : conds) {
      nn::uv_list<T> moved, wrong;
      double tol = 0;
      for (const auto& xj : x) {
        const matrix<T> G = lola::random_gl<T>(xj.rank(), cond, rng), Git = inverse_transpose(G);
        moved.push_back(act(xj, G, Git));
        wrong.push_back(act(xj, G, G));  // V·G instead of V·G⁻ᵀ: not the group action
        const double r = double(xj.rank());
        tol += product_tolerance<T>(3 * r + 1, (abs_d(xj.U) * abs_d(G) * in_double(G).inverse().cwiseAbs() *
                                                abs_d(xj.V).transpose()).norm()) +
               product_tolerance<T>(r, (abs_d(xj.U) * abs_d(xj.V).transpose()).norm());
      }
      std::vector<T> flat_moved(flat.size()), flat_wrong(flat.size());
      nn::invariant_head<T>::pool_into(moved, nn::pooling::flatten, flat_moved.data());
      nn::invariant_head<T>::pool_into(wrong, nn::pooling::flatten, flat_wrong.data());
      double d = 0, d_wrong = 0;
      for (std::size_t i = 0; i < flat.size(); ++i) {
        d += std::pow(double(flat_moved[i]) - double(flat[i]), 2);
        d_wrong += std::pow(double(flat_wrong[i]) - double(flat[i]), 2);
      }
      CHECK(std::sqrt(d) <= tol);
      if (cond > 1) CHECK(std::sqrt(d_wrong) > 100 * tol);
    }
  }

  TEST_CASE_TEMPLATE("invariant_head.forward is Linear → LayerNorm → ReLU → Linear", T, float, double) {
    std::mt19937_64 rng(1010);
    const int F = 12, H = 7, out = 3, N = 4;
    auto head = nn::invariant_head<T>::random(F, H, out, nn::pooling::flatten, rng);
    REQUIRE(head.input_size() == F);
    REQUIRE(head.hidden_size() == H);
    REQUIRE(head.outputs() == out);
    CHECK(head.norm_epsilon == T(1e-5));
    // torch's initialisation: |W₁|, |b₁| ≤ 1/√F, |W₂|, |b₂| ≤ 1/√H, γ = 1, β = 0.
    CHECK(in_double(head.linear1_weight).cwiseAbs().maxCoeff() <= 1 / std::sqrt(double(F)));
    CHECK(in_double(head.linear2_bias).cwiseAbs().maxCoeff() <= 1 / std::sqrt(double(H)));
    CHECK(head.norm_weight == nn::vector<T>::Ones(H));
    CHECK(head.norm_bias == nn::vector<T>::Zero(H));
    // Non-trivial γ and β so that they are exercised.
    head.norm_weight = gaussian<T>(H, 1, rng);
    head.norm_bias = gaussian<T>(H, 1, rng);
    const nn::row_matrix<T> X = gaussian<T>(N, F, rng);
    const matrix<T> Y = head.forward(X);
    REQUIRE(Y.rows() == N);
    REQUIRE(Y.cols() == out);
    const matrix_d W1 = in_double(head.linear1_weight), W2 = in_double(head.linear2_weight);
    const vector_d b1 = in_double(head.linear1_bias), b2 = in_double(head.linear2_bias);
    const vector_d g = in_double(head.norm_weight), beta = in_double(head.norm_bias);
    for (int i = 0; i < N; ++i) {
      vector_d z(H), zhat(H), a(H), y(out);
      for (int k = 0; k < H; ++k) {
        z(k) = b1(k);
        for (int f = 0; f < F; ++f) z(k) += W1(k, f) * double(X(i, f));
      }
      double mu = 0, var = 0;
      for (int k = 0; k < H; ++k) mu += z(k) / H;
      for (int k = 0; k < H; ++k) var += (z(k) - mu) * (z(k) - mu) / H;  // biased, as torch
      const double sigma = std::sqrt(var + 1e-5);
      for (int k = 0; k < H; ++k) {
        zhat(k) = (z(k) - mu) / sigma;
        a(k) = std::max(0.0, g(k) * zhat(k) + beta(k));
      }
      for (int o = 0; o < out; ++o) {
        y(o) = b2(o);
        for (int k = 0; k < H; ++k) y(o) += W2(o, k) * a(k);
      }
      // Forward error, in 2-norms. z: γ_{F+1}·(|W₁||x| + |b₁|). LayerNorm's map z ↦ (z − μ)/σ has
      // Jacobian norm ≤ 1/σ; its own rounding moves μ by γ_H·mean|z| (all H entries: √H times that)
      // and the scale by γ_{H+4} relative. ReLU is 1-Lipschitz after γ, β (max|γ|, one rounding
      // each); the last layer multiplies by ‖W₂‖ and adds γ_{H+1}·(|W₂||a| + |b₂|).
      const vector_d x = in_double(matrix<T>(X.row(i))).transpose();
      const double e_z = gamma<T>(F + 1) * (W1.cwiseAbs() * x.cwiseAbs() + b1.cwiseAbs()).norm();
      const double e_ln = std::sqrt(double(H)) * gamma<T>(H) * z.cwiseAbs().mean() + gamma<T>(H + 4) * (z.array() - mu).matrix().norm();
      const double e_zhat = (e_z + e_ln) / sigma;
      const double e_a = g.cwiseAbs().maxCoeff() * e_zhat + gamma<T>(2) * (g.cwiseProduct(zhat).norm() + beta.norm());
      const double e_y = W2.norm() * e_a + gamma<T>(H + 1) * (W2.cwiseAbs() * a + b2.cwiseAbs()).norm();
      CHECK((in_double(matrix<T>(Y.row(i))).transpose() - y).norm() <= e_y);
    }
  }

  TEST_CASE("wrong shapes throw lola::error naming the shapes") {
    std::mt19937_64 rng(1011);
    using M = matrix<double>;
    // equivariant_linear
    {
      const lola::error e = thrown_by([&] { (void)nn::equivariant_linear<double>({M::Ones(2, 3)}, {}); });
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(contains(e.what(), "1 Φ weights but 0 Ψ weights"));
    }
    CHECK_THROWS_AS(nn::equivariant_linear<double>::random({3}, {3, 4}, 2, rng), lola::error);
    CHECK_THROWS_AS(nn::equivariant_linear<double>::random({3}, {4}, 0, rng), lola::error);
    const nn::equivariant_linear<double> layer({M::Ones(2, 3)}, {M::Ones(2, 4)});
    {
      const lola::error e = thrown_by([&] { layer.apply(0, {M::Ones(5, 2), M::Ones(4, 2)}); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "module 0"));
      CHECK(contains(e.what(), "U with 3 rows and V with 4, got 5 and 4"));
    }
    {
      const lola::error e = thrown_by([&] { layer.apply(0, {M::Ones(3, 2), M::Ones(4, 3)}); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "U has 2 columns but V has 3"));
    }
    {
      const lola::error e = thrown_by([&] { layer.apply(1, {M::Ones(3, 2), M::Ones(4, 2)}); });
      CHECK(contains(e.what(), "module 1 of 1"));
    }
    {
      const lola::error e = thrown_by([&] { (void)layer(nn::uv_list<double>{}); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "the layer has 1 modules but the input has 0"));
    }
    {
      const Eigen::Matrix<double, -1, -1, Eigen::RowMajor> B = M::Ones(3, 2), A = M::Ones(2, 5);
      const lola::error e = thrown_by([&] { (void)layer.apply_factors(0, B, A); });
      CHECK(contains(e.what(), "got 3 and 5"));
    }
    // mixing_linear
    {
      const lola::error e = thrown_by([&] { (void)nn::mixing_linear<double>(M::Ones(4, 5), 6, 2); });
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(contains(e.what(), "4x5"));
    }
    const nn::mixing_linear<double> mix(M::Ones(4, 5), 2, 2);
    {
      const lola::error e = thrown_by([&] { (void)mix({M::Ones(2, 1), M::Ones(4, 1)}); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "U with 2 rows and V with 3, got 2x1 and 4x1"));
    }
    {
      const lola::error e = thrown_by([&] { (void)mix({M::Ones(2, 1), M::Ones(3, 2)}); });
      CHECK(contains(e.what(), "2x1"));
      CHECK(contains(e.what(), "3x2"));
    }
    // gl_gate, gl_norm, invariant_head
    {
      nn::uv_pair<double> x{M::Ones(3, 2), M::Ones(3, 1)};
      const lola::error e = thrown_by([&] { nn::gl_gate(x); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "gl_gate: U is 3x2 but V is 3x1"));
    }
    {
      nn::uv_pair<double> x{M::Ones(3, 2), M::Ones(4, 2)};
      const auto norm = nn::gl_norm<double>::identity(3, 5);
      const lola::error e = thrown_by([&] { norm(x); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "scales for 3 and 5 rows, got U 3x2 and V 4x2"));
    }
    {
      const auto head = nn::invariant_head<double>::random(6, 3, 2, nn::pooling::flatten, rng);
      const lola::error e = thrown_by([&] { (void)head.forward(nn::row_matrix<double>::Ones(2, 5)); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "linear1 takes 6 features, got 5"));
      std::vector<double> out(9);
      const lola::error p = thrown_by([&] {
        nn::invariant_head<double>::pool_into({{M::Ones(3, 2), M::Ones(3, 3)}}, nn::pooling::flatten, out.data());
      });
      CHECK(contains(p.what(), "U is 3x2 but V is 3x3"));
    }
  }
}
