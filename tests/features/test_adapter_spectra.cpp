// Whole-adapter spectra, batched by rank (features/adapter_spectra.hpp): every module's σ in module
// order, by the route its factors allow, the batched r×r kernel or low_rank_svd one by one.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/QR>
#include <Eigen/SVD>

#include "lola/core/random.hpp"
#include "lola/features/adapter_spectra.hpp"
#include "lola/io/adapter.hpp"
#include "lola/linalg/spectrum_from_grams.hpp"
#include "support/adapter_module.hpp"
#include "support/errors.hpp"
#include "support/probe_adapter.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::in_double;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// σ of one module by the host's r×r stage alone (a batch of one), from the Grams the host Gram
// primitive gives its factors as the adapter stores them: what the batch must reproduce bit for
// bit for a module on the Gram route, whichever modules share its batch.
template <class T>
vector<T> kernel_sigma(const lola::io::adapter_module<T>& m) {
  const int r = int(m.rank());
  matrix<T> gb, ga;
  lola::detail::gram_into(m.B, gb);
  lola::detail::gram_into(m.A.transpose(), ga);
  vector<T> sigma(r);
  const T scale = T(m.scale);
  std::vector<T> work(std::size_t(lola::detail::spectrum_workspace_size(r)));
  int status = -1;
  lola::detail::spectra_from_grams(lola::executor::serial(), 1, r, gb.data(), ga.data(), &scale, sigma.data(),
                                   work.data(), &status);
  REQUIRE(status == int(lola::detail::gram_spectrum::computed));
  return sigma;
}

// σ of one module by low_rank_svd (features/spectrum.hpp), zero-padded to r: the route of the rest.
template <class T>
vector<T> one_by_one(const lola::io::adapter_module<T>& m) {
  return lola::singular_values(lola::factor(m.B, m.A, T(m.scale)), m.rank());
}

// A d×r factor with singular values 1, …, 10^-4 (κ = 1e4: past the Gram route's κ ≤ 4).
template <class T>
matrix<T> ill_conditioned(int d, int r, std::mt19937_64& rng) {
  const Eigen::HouseholderQR<matrix<T>> qr(gaussian<T>(d, r, rng));
  const matrix<T> q = qr.householderQ() * matrix<T>::Identity(d, r);
  const vector<T> spread = vector<T>::LinSpaced(r, T(0), T(-4)).unaryExpr([](T e) { return T(std::pow(T(10), e)); });
  return q * spread.asDiagonal() * lola::random_orthogonal<T>(r, rng);
}

struct module_spec {
  int d, k, r;
  double scale;
  bool ill;  // B ill-conditioned: the Householder route
};
}  // namespace

TEST_SUITE("features.adapter_spectra") {
  TEST_CASE_TEMPLATE("adapter_singular_values: modules of mixed ranks, batched by rank, each in module order and "
                     "by its route",
                     T, float, double) {
    std::mt19937_64 rng(1401);
    // Ranks interleaved so that every batch gathers modules from across the adapter; two modules
    // off the Gram route (κ(B) = 1e4), one with d < r, one of rank 0.
    const std::vector<module_spec> specs = {{96, 80, 4, 2.0, false},    {120, 64, 8, -0.5, false},
                                            {64, 100, 4, 0.25, false},  {200, 150, 16, 1.0, false},
                                            {90, 70, 8, 4.0, false},    {80, 96, 6, 1.0, true},
                                            {70, 80, 4, -3.0, false},   {3, 50, 5, 1.0, false},
                                            {100, 110, 8, 0.125, true}, {160, 140, 16, -1.5, false},
                                            {40, 30, 0, 1.0, false}};
    lola::io::adapter<T> a;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const auto& sp = specs[i];
      const matrix<T> B = sp.ill ? ill_conditioned<T>(sp.d, sp.r, rng) : gaussian<T>(sp.d, sp.r, rng);
      a.modules.push_back(lola_test::make_module<T>("m" + std::to_string(i), B, gaussian<T>(sp.r, sp.k, rng), sp.scale));
    }
    const auto sigma = lola::adapter_singular_values<T>(a, lola::executor{2});
    REQUIRE(sigma.size() == specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      CAPTURE(i);
      const auto& sp = specs[i];
      const auto& m = a.modules[i];
      REQUIRE(sigma[i].size() == sp.r);
      const bool gram_route = !sp.ill && sp.d >= sp.r && sp.r > 0;
      CHECK((sigma[i].array() == (gram_route ? kernel_sigma(m) : one_by_one(m)).array()).all());
      // low_rank_svd runs the same kernel on the Gram route: alone or batched, the same bits.
      CHECK((sigma[i].array() == one_by_one(m).array()).all());
      // Against σ of the dense product in double: the Gram route's bound (test_support.hpp), or
      // low_rank_svd's on the Householder route, a small multiple of ε·|s|·‖B‖·‖A‖ (64 with a
      // wide margin at these sizes, as in test_thrust_spectra.cpp).
      const matrix_d Bd = in_double(m.B), Ad = in_double(m.A);
      const Eigen::BDCSVD<matrix_d> truth(sp.scale * Bd * Ad);
      for (int j = 0; j < sp.r; ++j) {
        CAPTURE(j);
        const double t = j < truth.singularValues().size() ? truth.singularValues()(j) : 0.0;
        const double bound = gram_route ? lola_test::sigma_tolerance<T>(sp.d, sp.k, sp.r, sp.scale, Bd.norm(), Ad.norm(), t)
                                        : 64 * lola_test::eps<T>() * std::abs(sp.scale) * Bd.norm() * Ad.norm();
        CHECK(std::abs(double(sigma[i](j)) - t) <= bound);
        // The deliberately wrong variant: module i's σ read against the next module of its rank.
        for (std::size_t o = i + 1; o < specs.size(); ++o)
          if (specs[o].r == sp.r && j == 0) {
            const double other = Eigen::BDCSVD<matrix_d>(specs[o].scale * in_double(a.modules[o].B) *
                                                         in_double(a.modules[o].A))
                                     .singularValues()(0);
            CHECK_FALSE(std::abs(double(sigma[i](0)) - other) <= bound);
            break;
          }
      }
    }
    // The probe backend (a distinct storage whose views are not Eigen types) runs the same batches.
    const auto on_probe = lola::adapter_singular_values<T>(lola_test::probe::copy_of(a), lola::executor{2});
    for (std::size_t i = 0; i < specs.size(); ++i) CHECK((on_probe[i].array() == sigma[i].array()).all());
  }

  TEST_CASE("adapter_singular_values across the range: scaled factors give exactly scaled σ on either route") {
    std::mt19937_64 rng(1402);
    const int d = 150, k = 120, r = 8;
    const matrix_d B = gaussian<double>(d, r, rng), A = gaussian<double>(r, k, rng);
    lola::io::adapter<double> a;
    // 2^e on both factors, e = ±300: Grams in range, their product M not (the batched kernel
    // normalises). 2^520 on B and 2^-520 on A: Grams past the range (the module leaves the batch
    // for low_rank_svd and its rescaling). 1e-200 on B alone: the Gram of B underflows, likewise.
    for (int e : {0, -300, 300})
      a.modules.push_back(lola_test::make_module<double>("e" + std::to_string(e), std::ldexp(1.0, e) * B,
                                                         std::ldexp(1.0, e) * A, 0.5));
    a.modules.push_back(lola_test::make_module<double>("apart", std::ldexp(1.0, 520) * B, std::ldexp(1.0, -520) * A, 0.5));
    a.modules.push_back(lola_test::make_module<double>("tiny", 1e-200 * B, A, 0.5));
    const auto sigma = lola::adapter_singular_values<double>(a);
    for (int i : {1, 2}) {
      CAPTURE(i);
      const int e = i == 1 ? -300 : 300;
      for (int j = 0; j < r; ++j) CHECK(sigma[std::size_t(i)](j) == std::ldexp(sigma[0](j), 2 * e));
    }
    CHECK((sigma[3].array() == one_by_one(a.modules[3]).array()).all());
    CHECK((sigma[4].array() == one_by_one(a.modules[4]).array()).all());
    // Against the truth: 1e-200·σ(B·A), to the accuracy of low_rank_svd's Householder route.
    const Eigen::VectorXd truth = Eigen::BDCSVD<matrix_d>(0.5 * B * A).singularValues().head(r);
    CHECK((sigma[4] - 1e-200 * truth).cwiseAbs().maxCoeff() <=
          64 * lola_test::eps<double>() * 0.5 * 1e-200 * B.norm() * A.norm());
  }

  TEST_CASE("adapter_singular_values: the first failing module in module order is named, on either route") {
    std::mt19937_64 rng(1403);
    lola::io::adapter<double> a;
    for (int i = 0; i < 6; ++i)
      a.modules.push_back(lola_test::make_module<double>("layer" + std::to_string(i), gaussian<double>(64, 4, rng),
                                                         gaussian<double>(4, 48, rng)));
    a.modules[4].A(1, 2) = std::numeric_limits<double>::infinity();
    a.modules[2].B(3, 0) = std::nan("");
    a.modules[5].scale = std::numeric_limits<double>::infinity();
    lola::error e = lola_test::thrown_by([&] { (void)lola::adapter_singular_values<double>(a); });
    CHECK(e.code() == lola::error_code::numerical);
    CHECK_MESSAGE(lola_test::contains(e.what(), "module \"layer2\": "), e.what());
    CHECK_MESSAGE(lola_test::contains(e.what(), "not finite"), e.what());
    a.modules[2].B(3, 0) = 0;
    a.modules[4].A(1, 2) = 0;
    e = lola_test::thrown_by([&] { (void)lola::adapter_singular_values<double>(a); });
    CHECK_MESSAGE(lola_test::contains(e.what(), "module \"layer5\": "), e.what());
  }
}
