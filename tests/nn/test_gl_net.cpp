// GL-net end to end: the forward pass against a dense reference written out here, invariance under
// an independent GL(r_j) element per module (and a non-invariant variant that fails the same check),
// batches of mixed ranks, the weights file round trip, and every malformed weights file.
//
// Error analysis (Higham, Accuracy and Stability, §3.1–3.5). The reference runs in double and
// carries, next to every quantity X lola computes in T, a magnitude M_X ≥ 0 with
// |fl_T(X) − X| ≤ ε_T·M_X entrywise to first order (running error analysis):
//   product X·Y of inner length n:  M = M_X·|Y| + |X|·M_Y + n·|X|·|Y|   (n·u ≤ n·ε/2: a factor 2 spare)
//   row scaling by 0 or 1 (the step gate, same decision on both sides): M unchanged or zeroed
//   scaling by 1 − p (rounded to T, then one product): M ← (1 − p)·(M + 2·|X|)
// A gate sum computed by lola may flip the step only if it is within its own error bound of 0; the
// reference records min |sum| / bound (`margin`) and the tests REQUIRE it above 1. The head is
// bounded in 2-norms as in test_layers.cpp (Linear, LayerNorm with Jacobian norm ≤ 1/σ, ReLU,
// Linear). gamma<T>(n) = product_tolerance<T>(n, 1) = 2(n + 2)·ε.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/LU>

#include "lola/core/error.hpp"
#include "lola/core/random.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/safetensors.hpp"
#include "lola/nn/gl_net.hpp"
#include "lola/nn/gl_net_weights.hpp"
#include "support/temp_dir.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

namespace io = lola::io;
namespace nn = lola::nn;
using lola_test::eps;
using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;
using lola_test::product_tolerance;
using vector_d = Eigen::VectorXd;

namespace {

template <class T>
double gamma(double n) {
  return product_tolerance<T>(n, 1.0);
}

// The adapter's modules in insertion (file) order. The A-factor keys sort as
//   model.layers.0.q.lora_A.weight < model.layers.1.q.lora_A.weight < x-y.lora_A.weight < x.lora_A.weight
// ('-' is 0x2D, '.' 0x2E), so the network numbers them layers.0.q, layers.1.q, x-y, x — not the
// insertion order, and for "x" / "x-y" not the order of the names either. Modules 0/1 and 2/3 of
// the network share a shape, so a wrong order would give wrong numbers, not a shape error.
struct module_spec {
  const char* name;
  int d, k;
  double scale;
};
const module_spec specs[] = {
    {"model.layers.1.q", 6, 5, 2.0},
    {"x", 4, 7, 0.5},
    {"model.layers.0.q", 6, 5, 1.5},
    {"x-y", 4, 7, 0.25},
};
// Written by hand from the comment above: network module j is specs[network_order[j]].
const std::size_t network_order[] = {2, 0, 3, 1};
const std::vector<lola::index> net_n = {6, 6, 4, 4}, net_m = {5, 5, 7, 7};

const double conds[] = {1.0, 10.0, 100.0, 1000.0};

template <class T>
using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// An adapter of the four modules with ranks[i] for specs[i], Gaussian factors.
template <class T>
io::adapter<T> make_adapter(const std::vector<int>& ranks, std::mt19937_64& rng) {
  io::adapter<T> a;
  for (std::size_t i = 0; i < 4; ++i) {
    io::adapter_module<T> m;
    m.name = specs[i].name;
    m.B = gaussian<T>(specs[i].d, ranks[i], rng);
    m.A = gaussian<T>(ranks[i], specs[i].k, rng);
    m.scale = specs[i].scale;
    a.modules.push_back(m);
  }
  return a;
}

template <class T>
nn::gl_net<T> make_net(lola::index K, nn::pooling p, std::mt19937_64& rng, lola::index h = 3) {
  return nn::gl_net<T>::random(net_n, net_m, h, K, 5, 2, p, rng);
}

using lola_test::contains;
using lola_test::thrown_by;

struct reference_run {
  vector_d y;     // the output, in double
  double bound;   // ‖lola's output − y‖₂ ≤ bound
  double margin;  // min over gate sums of |sum| / (its error bound); > 1: no gate can flip
};

// GL-net written out: U_j = s_j·B_j (fold_scale) or B_j, V_j = A_jᵀ, modules in network_order;
// first layer; K − 1 × [gate with P = U·Vᵀ formed densely, (1 − p), Φ⁽ᵏ⁾ / Ψ⁽ᵏ⁾]; P_j flattened
// row-major or averaged; Linear, LayerNorm (biased variance, ε = 1e-5), ReLU, Linear.
// MU0_extra / MV0_extra: magnitudes of the inputs' own errors (U_j, V_j = A_jᵀ) in units of ε_T,
// in network order (empty: exact inputs).
template <class T>
reference_run reference(const nn::gl_net<T>& net, const io::adapter<T>& a, const nn::gl_net_options& options,
                        const std::vector<matrix_d>& MU0_extra = {}, const std::vector<matrix_d>& MV0_extra = {}) {
  const double e = eps<T>(), p = options.dropout;
  const int L = int(net.modules()), h = int(net.hidden_size());
  std::vector<double> x, Mx;  // features and their magnitudes
  double margin = std::numeric_limits<double>::infinity();
  for (int j = 0; j < L; ++j) {
    const auto& mod = a.modules[network_order[j]];
    const double s = options.fold_scale ? mod.scale : 1.0;
    const matrix_d U0 = s * in_double(mod.B), V0 = in_double(mod.A).transpose();
    // s·B in T (s rounded to T, then one product per entry): 2·|U0|.
    matrix_d MU0 = options.fold_scale ? matrix_d(2 * U0.cwiseAbs()) : matrix_d::Zero(U0.rows(), U0.cols());
    if (!MU0_extra.empty()) MU0 += std::abs(s) * MU0_extra[std::size_t(j)];
    const matrix_d MV0 = MV0_extra.empty() ? matrix_d::Zero(V0.rows(), V0.cols()) : MV0_extra[std::size_t(j)];
    const int r = int(U0.cols());
    const matrix_d Phi = in_double(net.first.phi(j)), Psi = in_double(net.first.psi(j));
    matrix_d U = Phi * U0, V = Psi * V0;
    matrix_d MU = Phi.cwiseAbs() * MU0 + double(U0.rows()) * Phi.cwiseAbs() * U0.cwiseAbs();
    matrix_d MV = Psi.cwiseAbs() * MV0 + double(V0.rows()) * Psi.cwiseAbs() * V0.cwiseAbs();
    for (const auto& layer : net.hidden) {
      matrix_d P(h, h);
      for (int i = 0; i < h; ++i)
        for (int k = 0; k < h; ++k) {
          P(i, k) = 0;
          for (int c = 0; c < r; ++c) P(i, k) += U(i, c) * V(k, c);
        }
      // lola sums U·(Vᵀ1) from its own U, V: an h-term sum and an r-term dot on top of their errors.
      const matrix_d absP = U.cwiseAbs() * V.cwiseAbs().transpose();
      const matrix_d MP = MU * V.cwiseAbs().transpose() + U.cwiseAbs() * MV.transpose() + double(h + r) * absP;
      std::vector<bool> keep_u(static_cast<std::size_t>(h)), keep_v(static_cast<std::size_t>(h));
      for (int i = 0; i < h; ++i) {
        double row = 0, col = 0;
        for (int k = 0; k < h; ++k) {
          row += P(i, k);
          col += P(k, i);
        }
        const double row_bound = 2 * e * MP.row(i).sum(), col_bound = 2 * e * MP.col(i).sum();
        // A bound of 0 means exact zeros on both sides (a row closed earlier): no flip possible.
        if (row_bound > 0) margin = std::min(margin, std::abs(row) / row_bound);
        if (col_bound > 0) margin = std::min(margin, std::abs(col) / col_bound);
        keep_u[std::size_t(i)] = row > 0;
        keep_v[std::size_t(i)] = col > 0;
      }
      for (int i = 0; i < h; ++i) {
        if (!keep_u[std::size_t(i)]) U.row(i).setZero(), MU.row(i).setZero();
        if (!keep_v[std::size_t(i)]) V.row(i).setZero(), MV.row(i).setZero();
      }
      if (p > 0) {
        MU = (1 - p) * (MU + 2 * U.cwiseAbs());
        MV = (1 - p) * (MV + 2 * V.cwiseAbs());
        U *= 1 - p;
        V *= 1 - p;
      }
      const matrix_d Pk = in_double(layer.phi(j)), Qk = in_double(layer.psi(j));
      MU = Pk.cwiseAbs() * MU + double(h) * Pk.cwiseAbs() * U.cwiseAbs();
      MV = Qk.cwiseAbs() * MV + double(h) * Qk.cwiseAbs() * V.cwiseAbs();
      U = Pk * U;
      V = Qk * V;
    }
    const matrix_d P = U * V.transpose(), absP = U.cwiseAbs() * V.cwiseAbs().transpose();
    const matrix_d MP = MU * V.cwiseAbs().transpose() + U.cwiseAbs() * MV.transpose();
    if (net.head.pool == nn::pooling::flatten) {
      for (int i = 0; i < h; ++i)
        for (int k = 0; k < h; ++k) {  // x[j·h² + i·h + k] = P_j(i, k): row-major vec
          x.push_back(P(i, k));
          Mx.push_back(MP(i, k) + double(r) * absP(i, k));
        }
    } else {
      // (1ᵀU)(Vᵀ1)/h²: two h-term sums, an r-term dot, a division.
      x.push_back(P.mean());
      Mx.push_back(MP.mean() + double(2 * h + r + 1) * absP.mean());
    }
  }
  const auto& head = net.head;
  const int F = int(x.size()), H = int(head.hidden_size()), out = int(head.outputs());
  REQUIRE(F == head.input_size());
  const matrix_d W1 = in_double(head.linear1_weight), W2 = in_double(head.linear2_weight);
  const vector_d b1 = in_double(head.linear1_bias), b2 = in_double(head.linear2_bias);
  const vector_d g = in_double(head.norm_weight), beta = in_double(head.norm_bias);
  const vector_d xv = Eigen::Map<const vector_d>(x.data(), F), Mxv = Eigen::Map<const vector_d>(Mx.data(), F);
  vector_d z(H), zhat(H), act(H), y(out);
  for (int k = 0; k < H; ++k) {
    z(k) = b1(k);
    for (int f = 0; f < F; ++f) z(k) += W1(k, f) * xv(f);
  }
  double mu = 0, var = 0;
  for (int k = 0; k < H; ++k) mu += z(k) / H;
  for (int k = 0; k < H; ++k) var += (z(k) - mu) * (z(k) - mu) / H;
  const double sigma = std::sqrt(var + 1e-5);
  for (int k = 0; k < H; ++k) {
    zhat(k) = (z(k) - mu) / sigma;
    act(k) = std::max(0.0, g(k) * zhat(k) + beta(k));
  }
  for (int o = 0; o < out; ++o) {
    y(o) = b2(o);
    for (int k = 0; k < H; ++k) y(o) += W2(o, k) * act(k);
  }
  // The head in 2-norms: features off by 2ε·M_x; z adds γ_{F+L+1}(|W₁||x| + |b₁|) (lola may sum
  // W₁·x in L per-module partial sums, then add b₁); LayerNorm divides
  // by σ and adds its own rounding (mean: √H·γ_H·mean|z|; scale: γ_{H+4} relative); ReLU after γ, β;
  // the last Linear multiplies by ‖W₂‖ and adds γ_{H+1}(|W₂||a| + |b₂|).
  const double e_z = 2 * e * (W1.cwiseAbs() * Mxv).norm() +
                     gamma<T>(F + L + 1) * (W1.cwiseAbs() * xv.cwiseAbs() + b1.cwiseAbs()).norm();
  const double e_ln = std::sqrt(double(H)) * gamma<T>(H) * z.cwiseAbs().mean() +
                      gamma<T>(H + 4) * (z.array() - mu).matrix().norm();
  const double e_zhat = (e_z + e_ln) / sigma;
  const double e_a = g.cwiseAbs().maxCoeff() * e_zhat + gamma<T>(2) * (g.cwiseProduct(zhat).norm() + beta.norm());
  const double e_y = W2.norm() * e_a + gamma<T>(H + 1) * (W2.cwiseAbs() * act + b2.cwiseAbs()).norm();
  return {y, e_y, margin};
}

template <class T>
double distance(const matrix<T>& y, const vector_d& ref) {
  return (in_double(y).transpose() - ref).norm();
}

template <class T>
double distance(const nn::vector<T>& y, const vector_d& ref) {
  return (in_double(y) - ref).norm();
}

// G acts on module i as (B·G, G⁻¹·A). G⁻¹ and both products are computed in long double and rounded
// once to T: the moved factors are within ε_T/2 of exact, entrywise (magnitudes |B'|, |A'|). The
// long double inverse is not exact: G·X = I + E, so (B·G, X·A) is exactly on the orbit of
// (B, (I + E)·A), and the original run allows for the perturbation |E|·|A| of A (in units of ε_T
// it is ~ε_ld·cond/ε_T: nothing for float, a few units for double).
template <class T>
struct moved_adapter {
  io::adapter<T> adapter;
  std::vector<matrix_d> MU0_moved, MV0_moved;  // network order, for the moved run: |B'|, |A'|ᵀ
  std::vector<matrix_d> MV0_residual;          // network order, for the original run: (|E||A|)ᵀ / ε_T
};

template <class T>
moved_adapter<T> act_on(const io::adapter<T>& a, double cond, std::mt19937_64& rng) {
  using ld = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;
  moved_adapter<T> out{a, {}, {}, {}};
  std::vector<matrix_d> moved_b(a.modules.size()), moved(a.modules.size()), residual(a.modules.size());
  for (std::size_t i = 0; i < a.modules.size(); ++i) {
    auto& m = out.adapter.modules[i];
    const ld G = lola::random_gl<double>(m.rank(), cond, rng).template cast<long double>();
    const ld X = G.inverse();
    const ld B = m.B.template cast<long double>(), A = m.A.template cast<long double>();
    m.B = (B * G).template cast<T>();
    m.A = (X * A).template cast<T>();
    const ld E = G * X - ld::Identity(G.rows(), G.cols());
    moved_b[i] = in_double(m.B).cwiseAbs();
    moved[i] = in_double(m.A).cwiseAbs().transpose();
    residual[i] = (E.cwiseAbs() * A.cwiseAbs()).template cast<double>().transpose() / eps<T>();
  }
  for (std::size_t j = 0; j < 4; ++j) {
    out.MU0_moved.push_back(moved_b[network_order[j]]);
    out.MV0_moved.push_back(moved[network_order[j]]);
    out.MV0_residual.push_back(residual[network_order[j]]);
  }
  return out;
}

std::vector<io::tensor> without(std::vector<io::tensor> t, const std::string& key) {
  const auto it = std::find_if(t.begin(), t.end(), [&](const io::tensor& x) { return x.name == key; });
  REQUIRE_MESSAGE(it != t.end(), key);
  t.erase(it);
  return t;
}

std::vector<io::tensor> with(std::vector<io::tensor> t, io::tensor replacement) {
  const auto it = std::find_if(t.begin(), t.end(), [&](const io::tensor& x) { return x.name == replacement.name; });
  if (it == t.end())
    t.push_back(std::move(replacement));
  else
    *it = std::move(replacement);
  return t;
}

const std::string weights_source = "weights.safetensors";

lola::error read_error(const std::vector<io::tensor>& tensors) {
  const auto file = io::safetensors_file::from_bytes(io::serialize_safetensors(tensors), weights_source);
  return thrown_by([&] { (void)nn::read_gl_net<double>(file.view()); });
}

// The file is rejected as invalid_file, and the message names the file, the key and `fragment`.
void expect_rejected(const std::vector<io::tensor>& tensors, const std::string& key, const std::string& fragment = "") {
  const lola::error e = read_error(tensors);
  CHECK(e.code() == lola::error_code::invalid_file);
  const std::string what = e.what();
  CHECK_MESSAGE(contains(what, weights_source), what);
  CHECK_MESSAGE(contains(what, "\"" + key + "\""), "expected the key ", key, " in: ", what);
  CHECK_MESSAGE(contains(what, fragment), "expected \"", fragment, "\" in: ", what);
}

}  // namespace

TEST_SUITE("nn.gl_net") {
  TEST_CASE("modules are matched in lexicographic A-key order, not insertion or name order") {
    std::mt19937_64 rng(2001);
    const auto a = make_adapter<double>({3, 2, 3, 2}, rng);
    const auto order = io::lexicographic_module_order(a);
    CHECK(order == std::vector<std::size_t>(std::begin(network_order), std::end(network_order)));
    // The same modules inserted in network order give the same output, to the bit.
    io::adapter<double> sorted = a;
    for (std::size_t j = 0; j < 4; ++j) sorted.modules[j] = a.modules[network_order[j]];
    const auto net = make_net<double>(2, nn::pooling::flatten, rng);
    CHECK(net.forward(a) == net.forward(sorted));
    // And insertion order is not what the network follows: a different output.
    io::adapter<double> swapped = sorted;
    std::swap(swapped.modules[0].name, swapped.modules[1].name);  // layers.0.q ↔ layers.1.q
    CHECK(net.forward(swapped) != net.forward(sorted));
  }

  TEST_CASE_TEMPLATE("forward matches the dense reference: K = 1, 2, 3, both poolings, dropout, fold_scale", T,
                     float, double) {
    std::mt19937_64 rng(2002);
    const auto a = make_adapter<T>({3, 2, 4, 2}, rng);
    for (lola::index K : {1, 2, 3})
      for (auto pool : {nn::pooling::flatten, nn::pooling::mean}) {
        const auto net = make_net<T>(K, pool, rng);
        REQUIRE(net.depth() == K);
        REQUIRE(net.hidden_size() == 3);
        for (double p : {0.0, 0.1})
          for (bool fold : {false, true}) {
            nn::gl_net_options options;
            options.dropout = p;
            options.fold_scale = fold;
            const auto ref = reference(net, a, options);
            REQUIRE(ref.margin > 1.0);
            const nn::vector<T> y = net.forward(a, options);
            REQUIRE(y.size() == 2);
            CAPTURE(K);
            CAPTURE(p);
            CAPTURE(fold);
            CHECK(distance<T>(y, ref.y) <= ref.bound);
          }
        // The (U, V) entry point with U_j = B_j, V_j = A_jᵀ in network order is the same network;
        // both are within the bound of the reference.
        std::vector<nn::uv_list<T>> uv(1);
        for (std::size_t j = 0; j < 4; ++j)
          uv[0].push_back({matrix<T>(a.modules[network_order[j]].B), matrix<T>(a.modules[network_order[j]].A.transpose())});
        const auto ref = reference(net, a, {});
        CHECK(distance<T>(matrix<T>(net.forward(uv)), ref.y) <= ref.bound);
        // equivariant_features is the part before the head: pooled and fed to the head, it gives
        // the same output (within the same bound).
        const auto features = net.equivariant_features(uv[0]);
        REQUIRE(features.size() == 4);
        CHECK(features[1].U.rows() == 3);
        CHECK(features[1].U.cols() == a.modules[network_order[1]].rank());
        nn::row_matrix<T> pooled(1, net.head.input_size());
        nn::invariant_head<T>::pool_into(features, net.head.pool, pooled.data());
        CHECK(distance<T>(net.head.forward(pooled), ref.y) <= ref.bound);
      }
  }

  TEST_CASE_TEMPLATE("the output is invariant under an independent GL(r_j) element per module", T, float, double) {
    std::mt19937_64 rng(2003);
    const auto a = make_adapter<T>({3, 2, 4, 2}, rng);
    for (lola::index K : {1, 2, 3})
      for (auto pool : {nn::pooling::flatten, nn::pooling::mean}) {
        const auto net = make_net<T>(K, pool, rng);
        nn::gl_net_options options;
        options.dropout = K > 1 ? 0.1 : 0.0;
        const nn::vector<T> y = net.forward(a, options);
        for (double cond : conds) {
          const auto moved = act_on(a, cond, rng);
          // Each output is within its bound of its own exact value; the two exact values agree
          // once the original allows for the long double inverse's residual (see act_on).
          const auto ref_moved = reference(net, moved.adapter, options, moved.MU0_moved, moved.MV0_moved);
          const auto ref_original = reference(net, a, options, {}, moved.MV0_residual);
          REQUIRE(ref_moved.margin > 1.0);
          REQUIRE(ref_original.margin > 1.0);
          const double tol = ref_moved.bound + ref_original.bound;
          const nn::vector<T> y_moved = net.forward(moved.adapter, options);
          CAPTURE(K);
          CAPTURE(cond);
          CHECK((in_double(y_moved) - in_double(y)).norm() <= tol);

          // Not invariant: moving B alone, (B·G, A), changes ΔW and the output, by far more than
          // the tolerance (also for cond 1, where G is orthogonal but A is not moved with it). The
          // tolerance is a worst case, about 10³ above the errors observed; the defect is still
          // ten times the tolerance in float at cond 1e3.
          io::adapter<T> wrong = moved.adapter;
          for (std::size_t i = 0; i < 4; ++i) wrong.modules[i].A = a.modules[i].A;
          CHECK((in_double(net.forward(wrong, options)) - in_double(y)).norm() > 10 * tol);
        }
      }
  }

  TEST_CASE_TEMPLATE("a batch of adapters of different ranks equals the adapters one by one, for any block", T,
                     float, double) {
    std::mt19937_64 rng(2004);
    const std::vector<io::adapter<T>> adapters = {make_adapter<T>({3, 2, 3, 2}, rng), make_adapter<T>({1, 4, 2, 5}, rng),
                                                  make_adapter<T>({2, 2, 1, 3}, rng), make_adapter<T>({4, 1, 3, 1}, rng),
                                                  make_adapter<T>({2, 3, 2, 2}, rng)};
    std::vector<const io::adapter<T>*> batch;
    for (const auto& a : adapters) batch.push_back(&a);
    for (auto pool : {nn::pooling::flatten, nn::pooling::mean}) {
      const auto net = make_net<T>(3, pool, rng);
      nn::gl_net_options options;
      options.dropout = 0.1;
      options.fold_scale = true;
      std::vector<reference_run> refs;
      std::vector<nn::vector<T>> singles;
      for (const auto& a : adapters) {
        refs.push_back(reference(net, a, options));
        REQUIRE(refs.back().margin > 1.0);
        singles.push_back(net.forward(a, options));
        CHECK(distance<T>(singles.back(), refs.back().y) <= refs.back().bound);
      }
      for (lola::index block : {1, 2, 64}) {
        options.block = block;
        const matrix<T> Y = net.forward(batch, options);
        REQUIRE(Y.rows() == 5);
        REQUIRE(Y.cols() == 2);
        for (std::size_t i = 0; i < adapters.size(); ++i) {
          CAPTURE(block);
          CAPTURE(i);
          // Batch and single runs are each within the bound of the same exact value.
          CHECK((in_double(matrix<T>(Y.row(lola::index(i)))).transpose() - in_double(singles[i])).norm() <=
                2 * refs[i].bound);
          CHECK(distance<T>(matrix<T>(Y.row(lola::index(i))), refs[i].y) <= refs[i].bound);
        }
      }
      CHECK(net.forward(std::vector<const io::adapter<T>*>{}, options).rows() == 0);
    }
  }

  TEST_CASE_TEMPLATE("weights round trip through a file and through bytes", T, float, double) {
    std::mt19937_64 rng(2005);
    const auto a = make_adapter<T>({3, 2, 4, 2}, rng);
    const lola_test::temp_dir dir("lola_gl_net");
    for (lola::index K : {1, 3})
      for (auto pool : {nn::pooling::flatten, nn::pooling::mean}) {
        const auto net = make_net<T>(K, pool, rng);
        nn::gl_net_options options;
        options.dropout = 0.1;
        const std::string path = dir / ("net" + std::to_string(K) + nn::to_string(pool) + ".safetensors");
        // F32 for float nets, F64 for double nets: the encoding is exact, so is everything after.
        nn::save_gl_net(net, path, io::dtype_of<T>());
        const auto loaded = nn::load_gl_net<T>(path);
        CHECK(loaded.ignored_keys.empty());
        const auto& copy = loaded.net;
        REQUIRE(copy.modules() == 4);
        CHECK(copy.depth() == K);
        CHECK(copy.hidden_size() == 3);
        CHECK(copy.head.pool == pool);
        CHECK(copy.outputs() == 2);
        for (lola::index j = 0; j < 4; ++j) {
          CHECK(copy.first.phi(j) == net.first.phi(j));
          CHECK(copy.first.psi(j) == net.first.psi(j));
          for (std::size_t k = 0; k < net.hidden.size(); ++k) {
            CHECK(copy.hidden[k].phi(j) == net.hidden[k].phi(j));
            CHECK(copy.hidden[k].psi(j) == net.hidden[k].psi(j));
          }
        }
        CHECK(copy.head.linear1_weight == net.head.linear1_weight);
        CHECK(copy.head.norm_bias == net.head.norm_bias);
        CHECK(copy.head.linear2_bias == net.head.linear2_bias);
        CHECK(copy.forward(a, options) == net.forward(a, options));

        // From bytes, with the two kinds of key the reference saves but never uses.
        auto tensors = nn::gl_net_tensors(net, io::dtype_of<T>());
        tensors.push_back(io::tensor::from_matrix("equiv_mlp.norms.0.scale_u", io::dtype::F32, {1, 4, 3, 1},
                                                  matrix<float>::Ones(12, 1)));
        tensors.push_back(io::tensor::from_matrix("invariant_head.invariant_outputs.0.x", io::dtype::F32, {6, 5},
                                                  matrix<float>::Zero(6, 5)));
        const auto file = io::safetensors_file::from_bytes(io::serialize_safetensors(tensors), "memory");
        const auto from_bytes = nn::read_gl_net<T>(file.view());
        auto ignored = from_bytes.ignored_keys;
        std::sort(ignored.begin(), ignored.end());
        CHECK(ignored == std::vector<std::string>{"equiv_mlp.norms.0.scale_u", "invariant_head.invariant_outputs.0.x"});
        CHECK(from_bytes.net.forward(a, options) == net.forward(a, options));
      }
  }

  TEST_CASE("every malformed weights file is a lola::error naming the key") {
    std::mt19937_64 rng(2006);
    // L = 3 modules, h = 2, K = 3 (two hidden layers), H = 4, 2 outputs, flatten: F = 12.
    const auto net = nn::gl_net<double>::random({5, 4, 6}, {3, 7, 2}, 2, 3, 4, 2, nn::pooling::flatten, rng);
    const auto good = nn::gl_net_tensors(net, io::dtype::F64);
    REQUIRE_NOTHROW((void)nn::read_gl_net<double>(
        io::safetensors_file::from_bytes(io::serialize_safetensors(good), weights_source).view()));
    using io::tensor;
    auto f64 = [](const std::string& name, std::vector<std::uint64_t> shape, const matrix_d& values) {
      return tensor::from_matrix(name, io::dtype::F64, std::move(shape), values);
    };
    const std::string first = "equiv_mlp.first_layer.", u = "equiv_mlp.equivariant_layers_u.",
                      v = "equiv_mlp.equivariant_layers_v.";

    SUBCASE("a missing key") {
      for (const std::string& key : std::vector<std::string>{
               first + "0.w_1", first + "0.w_2", first + "2.w_1", first + "2.w_2", v + "0", v + "1",
               "invariant_head.linear1.weight", "invariant_head.linear1.bias", "invariant_head.ln1.weight",
               "invariant_head.ln1.bias", "invariant_head.linear2.weight", "invariant_head.linear2.bias"}) {
        CAPTURE(key);
        expect_rejected(without(good, key), key, "missing");
      }
    }
    SUBCASE("a missing last equivariant_layers_u is named as such") {
      // K = 3 without u.1, and K = 2 without u.0: the file has more v layers than u layers.
      expect_rejected(without(good, u + "1"), u + "1", "missing");
      const auto net2 = nn::gl_net<double>::random({5, 4, 6}, {3, 7, 2}, 2, 2, 4, 2, nn::pooling::flatten, rng);
      expect_rejected(without(nn::gl_net_tensors(net2, io::dtype::F64), u + "0"), u + "0", "missing");
    }
    SUBCASE("a gap in the numbering") {
      expect_rejected(without(without(good, first + "1.w_1"), first + "1.w_2"), first + "1.w_1", "numbering");
    }
    SUBCASE("an unknown key") {
      for (const std::string& key : std::vector<std::string>{"equiv_mlp.first_layer.0.bias", "model.invariant_head.ln1.weight",
                                                            first + "01.w_1", u + "0.weight"}) {
        CAPTURE(key);
        expect_rejected(with(good, f64(key, {2}, matrix_d::Ones(2, 1))), key, "is not a GL-net weight");
      }
    }
    SUBCASE("a tensor of the wrong rank, or with an empty dimension") {
      expect_rejected(with(good, f64(first + "1.w_1", {2, 4, 1}, matrix_d::Ones(2, 4))), first + "1.w_1", "dimensions");
      expect_rejected(with(good, f64("invariant_head.ln1.weight", {1, 4}, matrix_d::Ones(1, 4))), "invariant_head.ln1.weight",
                      "dimensions");
      expect_rejected(with(good, f64(u + "0", {6, 2}, matrix_d::Ones(6, 2))), u + "0", "dimensions");
      expect_rejected(with(good, f64(first + "0.w_2", {2, 0}, matrix_d::Ones(2, 0))), first + "0.w_2", "[2, 0]");
    }
    SUBCASE("a different h between modules") {
      expect_rejected(with(good, f64(first + "1.w_1", {3, 4}, matrix_d::Ones(3, 4))), first + "1.w_1", "expected [2, *]");
      expect_rejected(with(good, f64(first + "0.w_2", {3, 3}, matrix_d::Ones(3, 3))), first + "0.w_2", "expected [2, *]");
    }
    SUBCASE("hidden layers of the wrong L or h") {
      expect_rejected(with(good, f64(u + "0", {4, 2, 2}, matrix_d::Ones(8, 2))), u + "0", "[3, 2, 2]");
      expect_rejected(with(good, f64(v + "1", {3, 3, 3}, matrix_d::Ones(9, 3))), v + "1", "[3, 2, 2]");
    }
    SUBCASE("the head's shapes") {
      // linear1 takes neither L·h² = 12 nor L = 3 features.
      expect_rejected(with(good, f64("invariant_head.linear1.weight", {4, 13}, matrix_d::Ones(4, 13))),
                      "invariant_head.linear1.weight", "12 (flattened P_j) or 3 (mean pooling)");
      expect_rejected(with(good, f64("invariant_head.linear1.bias", {5}, matrix_d::Ones(5, 1))),
                      "invariant_head.linear1.bias", "expected [4]");
      expect_rejected(with(good, f64("invariant_head.ln1.weight", {5}, matrix_d::Ones(5, 1))), "invariant_head.ln1.weight",
                      "expected [4]");
      expect_rejected(with(good, f64("invariant_head.ln1.bias", {3}, matrix_d::Ones(3, 1))), "invariant_head.ln1.bias",
                      "expected [4]");
      expect_rejected(with(good, f64("invariant_head.linear2.bias", {3}, matrix_d::Ones(3, 1))),
                      "invariant_head.linear2.bias", "expected [2]");
      expect_rejected(with(good, f64("invariant_head.linear2.weight", {2, 5}, matrix_d::Ones(2, 5))),
                      "invariant_head.linear2.weight", "expected [2, 4]");
    }
    SUBCASE("a non-finite value") {
      const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
      matrix_d w = net.head.linear2_weight;
      w(1, 2) = nan;
      expect_rejected(with(good, f64("invariant_head.linear2.weight", {2, 4}, w)), "invariant_head.linear2.weight",
                      "non-finite value at element 6");
      matrix_d psi = net.first.psi(0);
      psi(0, 0) = -inf;
      expect_rejected(with(good, f64(first + "0.w_2", {2, 3}, psi)), first + "0.w_2", "non-finite");
      matrix_d stack = matrix_d::Ones(6, 2);
      stack(5, 1) = inf;
      expect_rejected(with(good, f64(v + "1", {3, 2, 2}, stack)), v + "1", "non-finite");
      nn::vector<double> gamma_ln = net.head.norm_weight;
      gamma_ln(3) = nan;
      expect_rejected(with(good, f64("invariant_head.ln1.weight", {4}, gamma_ln)), "invariant_head.ln1.weight", "non-finite");
    }
  }

  TEST_CASE("an adapter that does not fit the network is a shape_mismatch naming the module") {
    std::mt19937_64 rng(2007);
    const auto net = make_net<double>(2, nn::pooling::flatten, rng);
    const auto a = make_adapter<double>({3, 2, 3, 2}, rng);
    {
      io::adapter<double> fewer = a;
      fewer.modules.pop_back();
      const lola::error e = thrown_by([&] { (void)net.forward(fewer); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "adapter 0 has 3 LoRA modules but the network takes 4"));
    }
    {
      io::adapter<double> wide = a;
      wide.modules[1].A = gaussian<double>(wide.modules[1].A.rows(), 8, rng);  // "x": 4×8 where the network takes 4×7
      const io::adapter<double>* batch[] = {&a, &wide};
      const lola::error e = thrown_by([&] {
        (void)net.forward(std::vector<const io::adapter<double>*>(std::begin(batch), std::end(batch)), {},
                          {"first.safetensors", "second.safetensors"});
      });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "second.safetensors"));
      CHECK(contains(e.what(), "module \"x\""));
      CHECK(contains(e.what(), "4x8"));
      CHECK(contains(e.what(), "4x7"));
    }
    {
      const lola::error e = thrown_by([&] { (void)net.forward(std::vector<nn::uv_list<double>>(1)); });
      CHECK(e.code() == lola::error_code::shape_mismatch);
      CHECK(contains(e.what(), "input 0 has 0 modules, the network 4"));
    }
    for (double p : {-0.5, 1.0}) {
      nn::gl_net_options options;
      options.dropout = p;
      const lola::error e = thrown_by([&] { (void)net.forward(a, options); });
      CHECK(e.code() == lola::error_code::invalid_argument);
      CHECK(contains(e.what(), "[0, 1)"));
    }
    CHECK_THROWS_AS(nn::gl_net<double>::random({}, {}, 3, 1, 4, 2, nn::pooling::mean, rng), lola::error);
    CHECK_THROWS_AS(nn::gl_net<double>::random({4}, {4}, 3, 0, 4, 2, nn::pooling::mean, rng), lola::error);
    // A hand-assembled network whose head does not fit its modules.
    auto broken = net;
    broken.head.pool = nn::pooling::mean;
    const lola::error e = thrown_by([&] { broken.validate(); });
    CHECK(contains(e.what(), "linear1 takes 36 features, mean pooling of 4 modules of width 3 gives 4"));
  }

  TEST_CASE("an adapter module whose B and A ranks differ is a shape_mismatch naming the module") {
    // Last in the file: see the report (gl_net.hpp writes B into a column block sized by A's rank;
    // an Eigen assertion aborts here, and with NDEBUG it is an out-of-bounds write).
    std::mt19937_64 rng(2008);
    const auto net = make_net<double>(2, nn::pooling::flatten, rng);
    io::adapter<double> a = make_adapter<double>({3, 2, 3, 2}, rng);
    a.modules[3].B = gaussian<double>(4, 3, rng);  // "x-y": B 4×3, A 2×7
    const lola::error e = thrown_by([&] { (void)net.forward(a); });
    CHECK(e.code() == lola::error_code::shape_mismatch);
    const std::string what = e.what();
    CHECK_MESSAGE(contains(what, "\"x-y\""), what);
  }
}
