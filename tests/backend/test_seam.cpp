// The seam between algorithms and backends (backend/primitives.hpp): every algorithm written against
// the primitives instantiates for the probe backend (tests/support/probe_backend.hpp), whose views
// are not Eigen types, and gives the host backend's result bit for bit, reaching the factors only
// through the primitives it counts. Compiling this file is the proof that these algorithms do not
// bypass the seam; the comparisons prove that the probe's routing changes no arithmetic.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "lola/lola.hpp"
#include "support/adapter_module.hpp"
#include "support/probe_adapter.hpp"
#include "support/probe_backend.hpp"
#include "support/test_support.hpp"

namespace probe = lola_test::probe;
using lola_test::gaussian;
using lola_test::matrix;

namespace {

/// Exactly equal: same shape, every entry bit for bit (NaN never occurs here).
template <class X, class Y>
bool identical(const X& x, const Y& y) {
  return x.rows() == y.rows() && x.cols() == y.cols() && (x.array() == y.array()).all();
}

template <class F, class H>
bool identical_factors(const F& from_probe, const H& host) {
  return identical(probe::to_eigen(from_probe.B()), host.B()) &&
         identical(probe::to_eigen(from_probe.A()), host.A()) && from_probe.scale() == host.scale();
}

/// One module in both backends: B column-major, A row-major as a file stores it.
template <class T>
struct module_pair {
  matrix<T> B;
  lola_test::row_major<T> A;
  probe::matrix<T> probe_B, probe_A_transposed;
  T s;

  module_pair(matrix<T> b, const matrix<T>& a, T scale)
      : B(std::move(b)), A(a), probe_B(probe::copy_of(B)), probe_A_transposed(probe::copy_of(a.transpose())),
        s(scale) {}
  auto host() const { return lola::factor(B, A, s); }
  auto on_probe() const { return lola::factor(probe_B.as_view(), probe_A_transposed.transpose(), s); }
};

/// The inputs that take each route of the factor-space SVD (linalg/column_space.hpp).
template <class T>
std::vector<module_pair<T>> routes(std::mt19937_64& rng) {
  std::vector<module_pair<T>> out;
  const int d = 48, k = 36, r = 6;
  // Gram route: Gaussian factors are well conditioned.
  out.emplace_back(gaussian<T>(d, r, rng), gaussian<T>(r, k, rng), T(0.75));
  // Householder route: columns of B scaled over four decades, κ(B) ≫ 4.
  matrix<T> graded = gaussian<T>(d, r, rng);
  for (int j = 0; j < r; ++j) graded.col(j) *= T(std::pow(10.0, -0.8 * j));
  out.emplace_back(graded, gaussian<T>(r, k, rng), T(-2));
  // Rescaled route: entries near the top of the range, whose Gram would overflow.
  const T huge = std::numeric_limits<T>::max() / T(1e6);
  out.emplace_back(matrix<T>(gaussian<T>(d, r, rng) * huge), gaussian<T>(r, k, rng), T(1));
  // Wide factors, m < n on both sides (r above d and k).
  out.emplace_back(gaussian<T>(4, r, rng), gaussian<T>(r, 5, rng), T(3));
  return out;
}

/// N adapters of three modules, named out of key order, shapes (d, k, r) differing between
/// modules; ranks agree across adapters (raw, align and canonical need that).
template <class T>
std::vector<lola::io::adapter<T>> adapter_batch(int N, std::mt19937_64& rng) {
  const struct {
    const char* name;
    int d, k, r;
  } shapes[] = {{"layers.1.v_proj", 12, 9, 3}, {"layers.0.q_proj", 10, 14, 4}, {"layers.0.k_proj", 7, 7, 2}};
  std::vector<lola::io::adapter<T>> out(static_cast<std::size_t>(N));
  for (auto& a : out)
    for (const auto& s : shapes)
      a.modules.push_back(lola_test::make_module<T>(s.name, gaussian<T>(s.d, s.r, rng), gaussian<T>(s.r, s.k, rng),
                                                    0.25 + 0.5 * double(rng() % 4)));
  return out;
}

/// featurize(align) computed on the host module by module against a column-major copy of the
/// template: the layout the probe's upload gives it (the host kernels pick their path, and so their
/// rounding, by layout; featurize on the host reads the row-major template itself).
template <class T>
lola::feature_matrix<T> aligned_with_column_major_template(const std::vector<lola::io::adapter<T>>& adapters,
                                                           const lola::io::adapter<T>& templ,
                                                           const lola::featurize_options<T>& options) {
  const auto blocks = lola::feature_layout(adapters[0], options);
  lola::feature_matrix<T> out(lola::index(adapters.size()), blocks.back().offset + blocks.back().size);
  for (std::size_t i = 0; i < adapters.size(); ++i)
    for (const auto& b : blocks) {
      const auto& m = *adapters[i].find(b.name);
      const auto& t = *templ.find(b.name);
      const matrix<T> tB = t.B, tA = t.A;
      const T s = options.fold_scale ? T(m.scale) : T(1);
      const auto aligned = lola::o_align(lola::factor(m.B, m.A, s), lola::factor(tB, tA)).aligned;
      using map = Eigen::Map<lola::feature_matrix<T>>;
      T* dst = out.row(lola::index(i)).data() + b.offset;
      map(dst, b.rows, b.rank) = aligned.scale() * aligned.B();
      map(dst + b.rows * b.rank, b.cols, b.rank) = T(1) * aligned.A().transpose();
    }
  return out;
}

template <class A>
std::vector<const A*> pointers(const std::vector<A>& adapters) {
  std::vector<const A*> out;
  for (const auto& a : adapters) out.push_back(&a);
  return out;
}

}  // namespace

TEST_SUITE("backend.seam") {
  TEST_CASE_TEMPLATE("σ, U, V and Vᵀ of low_rank_svd equal the host backend's bit for bit", T, float,
                     double) {
    std::mt19937_64 rng(1301);
    const auto inputs = routes<T>(rng);
    for (std::size_t route = 0; route < inputs.size(); ++route) {
      CAPTURE(route);
      const auto& m = inputs[route];
      const lola::low_rank_svd<T> host(m.host(), lola::compute_uv | lola::compute_vt);
      probe::reset();
      const lola::low_rank_svd on_probe(m.on_probe(), lola::compute_uv | lola::compute_vt);
      static_assert(std::is_same_v<typename decltype(on_probe)::matrix, probe::matrix<T>>);
      CHECK(probe::counts.total() > 0);
      CHECK(identical(on_probe.singularValues(), host.singularValues()));
      CHECK(identical(probe::to_eigen(on_probe.matrixU()), host.matrixU()));
      CHECK(identical(probe::to_eigen(on_probe.matrixV()), host.matrixV()));
      CHECK(identical(probe::to_eigen(on_probe.matrixVt()), host.matrixVt()));
      CHECK(identical(lola::singular_values(m.on_probe(), 9), lola::singular_values(m.host(), 9)));
      const auto a = lola::spectral_summary(m.on_probe()), b = lola::spectral_summary(m.host());
      CHECK(a.frobenius == b.frobenius);
      CHECK(a.effective_rank == b.effective_rank);
    }
  }

  TEST_CASE_TEMPLATE("the routes reach the factors through the primitives they name", T, float, double) {
    std::mt19937_64 rng(1302);
    const auto inputs = routes<T>(rng);
    probe::reset();
    (void)lola::singular_values(inputs[0].on_probe());
    // Gram route: one Gram per factor, no QR, no rescaling.
    CHECK(probe::counts.gram == 2);
    CHECK(probe::counts.qr == 0);
    CHECK(probe::counts.update == 0);
    probe::reset();
    (void)lola::singular_values(inputs[1].on_probe());
    CHECK(probe::counts.gram == 2);
    CHECK(probe::counts.qr == 1);  // B only: A is well conditioned
    probe::reset();
    (void)lola::singular_values(inputs[2].on_probe());
    CHECK(probe::counts.update == 1);  // B rescaled by 2⁻ᵉ once
    CHECK(probe::counts.gram == 3);    // and its Gram taken again
  }

  TEST_CASE_TEMPLATE("canonical forms, qr_form and resize equal the host backend's", T, float, double) {
    std::mt19937_64 rng(1303);
    const auto inputs = routes<T>(rng);
    for (std::size_t route = 0; route < inputs.size(); ++route) {
      CAPTURE(route);
      const auto& m = inputs[route];
      for (auto form : {lola::canonical_form::balanced, lola::canonical_form::left}) {
        const auto host = lola::canonicalize(m.host(), form);
        const auto on_probe = lola::canonicalize(m.on_probe(), form);
        CHECK(identical_factors(on_probe.factors, host.factors));
        CHECK(identical(on_probe.singular_values, host.singular_values));
        CHECK(on_probe.rank == host.rank);
        CHECK(on_probe.degenerate == host.degenerate);
      }
      CHECK(identical_factors(lola::qr_form(m.on_probe()), lola::qr_form(m.host())));
      const auto rule = lola::rank_rule::sv_fro(0.9);
      const auto host = lola::resize(m.host(), rule);
      const auto on_probe = lola::resize(m.on_probe(), rule);
      CHECK(on_probe.rank == host.rank);
      CHECK(identical_factors(on_probe.factors, host.factors));
      CHECK(on_probe.retained_fro_fraction == host.retained_fro_fraction);
    }
  }

  TEST_CASE_TEMPLATE("O-Align, Grams, inner, norm and trace equal the host backend's", T, float,
                     double) {
    std::mt19937_64 rng(1304);
    const int d = 40, k = 40, r = 5;
    const module_pair<T> m(gaussian<T>(d, r, rng), gaussian<T>(r, k, rng), T(1.5));
    const module_pair<T> t(gaussian<T>(d, r, rng), gaussian<T>(r, k, rng), T(0.5));
    const auto host = lola::o_align(m.host(), t.host());
    const auto on_probe = lola::o_align(m.on_probe(), t.on_probe());
    CHECK(identical(on_probe.Q, host.Q));
    CHECK(identical_factors(on_probe.aligned, host.aligned));
    const auto gp = lola::grams(m.on_probe()), gh = lola::grams(m.host());
    CHECK(identical(gp.b_gram, gh.b_gram));
    CHECK(identical(gp.a_gram, gh.a_gram));
    CHECK(lola::inner(m.on_probe(), t.on_probe()) == lola::inner(m.host(), t.host()));
    CHECK(lola::norm(m.on_probe()) == lola::norm(m.host()));
    CHECK(lola::trace(m.on_probe()) == lola::trace(m.host()));
    CHECK(lola::cosine_similarity(m.on_probe(), t.on_probe()) ==
          lola::cosine_similarity(m.host(), t.host()));
  }

  TEST_CASE_TEMPLATE("sums, scalings and every combination equal the host backend's", T, float,
                     double) {
    std::mt19937_64 rng(1305);
    const int d = 30, k = 20, r = 4;
    std::vector<module_pair<T>> pairs;
    for (int i = 0; i < 3; ++i)
      pairs.emplace_back(gaussian<T>(d, r, rng), gaussian<T>(r, k, rng), T(0.5 + i));
    CHECK(identical(lola::singular_values(T(2) * pairs[0].on_probe() + pairs[1].on_probe()),
                    lola::singular_values(T(2) * pairs[0].host() + pairs[1].host())));
    std::vector<decltype(pairs[0].host())> host_modules;
    std::vector<decltype(pairs[0].on_probe())> probe_modules;
    for (const auto& p : pairs) {
      host_modules.push_back(p.host());
      probe_modules.push_back(p.on_probe());
    }
    const std::vector<T> weights{T(1), T(-0.5), T(2)};
    for (auto type : {lola::combination::weighted_sum, lola::combination::cat, lola::combination::linear,
                      lola::combination::svd}) {
      CAPTURE(int(type));
      for (lola::index rank : {-1, 3, 20}) {
        CAPTURE(rank);
        CHECK(identical_factors(lola::combine(probe_modules, weights, type, rank),
                                lola::combine(host_modules, weights, type, rank)));
      }
    }
  }

  TEST_CASE_TEMPLATE("featurize equals the host backend's for every kind, writing through transfers", T, float,
                     double) {
    std::mt19937_64 rng(1307);
    const auto host = adapter_batch<T>(4, rng);
    std::vector<probe::adapter<T>> on_probe;
    for (const auto& a : host) on_probe.push_back(probe::copy_of(a));
    const auto templ = adapter_batch<T>(1, rng);
    for (auto kind : {lola::feature_kind::raw, lola::feature_kind::svd, lola::feature_kind::dense,
                      lola::feature_kind::align, lola::feature_kind::canonical})
      for (bool fold : {false, true}) {
        const std::string kind_name = lola::to_string(kind);
        CAPTURE(kind_name);
        CAPTURE(fold);
        lola::featurize_options<T> options;
        options.kind = kind;
        options.fold_scale = fold;
        options.templ = &templ[0];
        auto expected = lola::featurize(pointers(host), options);
        if (kind == lola::feature_kind::align)
          expected = aligned_with_column_major_template(host, templ[0], options);
        probe::reset();
        const auto got = lola::featurize(pointers(on_probe), options);
        CHECK(identical(got, expected));
        // 4 adapters × 3 modules: dense is one GEMM each; raw, align and canonical write U and V
        // by two downloads each, align after uploading the template's 3 × 2 factors once.
        const long items = 4 * 3;
        CHECK(probe::counts.product == (kind == lola::feature_kind::dense ? items : 0));
        switch (kind) {
          case lola::feature_kind::raw:
          case lola::feature_kind::canonical: CHECK(probe::counts.transfer == 2 * items); break;
          case lola::feature_kind::align: CHECK(probe::counts.transfer == 2 * items + 2 * 3); break;
          default: CHECK(probe::counts.transfer == 0);
        }
      }
  }

  TEST_CASE_TEMPLATE("GL-net forward and apply_factors equal the host backend's", T, float, double) {
    std::mt19937_64 rng(1308);
    const auto host = adapter_batch<T>(5, rng);
    std::vector<probe::adapter<T>> on_probe;
    for (const auto& a : host) on_probe.push_back(probe::copy_of(a));
    // The network's module j takes the j-th module in key order: k_proj, q_proj, v_proj.
    for (auto pool : {lola::nn::pooling::flatten, lola::nn::pooling::mean}) {
      const auto net = lola::nn::gl_net<T>::random({7, 10, 12}, {7, 14, 9}, 3, 2, 4, 2, pool, rng);
      lola::nn::gl_net_options options;
      options.fold_scale = true;
      options.dropout = 0.25;
      options.block = 2;  // three blocks: 2 + 2 + 1 adapters
      const auto expected = net.forward(pointers(host), options);
      probe::reset();
      const auto got = net.forward(pointers(on_probe), options);
      CHECK(identical(got, expected));
      // The first layer: Φ_j·U and Ψ_j·V per block and module, the weights uploaded for each; the
      // factors gathered into the block's U and V without leaving the probe.
      CHECK(probe::counts.product == 3 * 3 * 2);
      CHECK(probe::counts.transfer == 3 * 3 * 2);
      CHECK(probe::counts.update == 5 * 3 * 2);
    }
    const auto layer = lola::nn::equivariant_linear<T>::random({12, 10}, {9, 14}, 4, rng);
    const auto& m = host[0].modules[1];  // q_proj, 10×14: the layer's module 1
    const auto& p = on_probe[0].modules[1];
    const auto a = layer.apply_factors(1, m.B, m.A, T(0.5));
    const auto b = p.visit([&](const auto& B, const auto& A) { return layer.apply_factors(1, B, A, T(0.5)); });
    CHECK(identical(b.U, a.U));
    CHECK(identical(b.V, a.V));
  }

  TEST_CASE("the bit-for-bit comparison tells a change of 2^-40 in one entry apart") {
    // The check the cases above rely on, shown able to fail: one entry of B moved by a relative
    // 2⁻⁴⁰ (about 4096 ulps) changes σ and the canonical factors. (One ulp may not: on the Gram
    // route σ is computed from BᵀB, whose rounding can absorb it.)
    std::mt19937_64 rng(1306);
    const module_pair<double> m(gaussian<double>(20, 3, rng), gaussian<double>(3, 15, rng), 1.0);
    matrix<double> nudged = m.B;
    nudged(7, 1) *= 1 + std::ldexp(1.0, -40);
    const module_pair<double> other(nudged, matrix<double>(m.A), 1.0);
    CHECK_FALSE(identical(lola::singular_values(other.on_probe()), lola::singular_values(m.host())));
    CHECK_FALSE(identical_factors(lola::canonicalize(other.on_probe()).factors,
                                  lola::canonicalize(m.host()).factors));
  }
}
