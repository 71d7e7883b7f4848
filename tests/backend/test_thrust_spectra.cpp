// The batched r×r spectra kernel launched through Thrust's host systems (CPP and OpenMP): the same
// functor a GPU runs, one module per work item, checked against the kernel called directly.
#include <doctest/doctest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <thrust/system/cpp/execution_policy.h>
#include <thrust/system/omp/execution_policy.h>

#include "lola/backend/eigen/gram.hpp"
#include "lola/canon/o_align.hpp"
#include "lola/backend/thrust/batched_procrustes.hpp"
#include "lola/backend/thrust/batched_spectra.hpp"
#include "lola/core/random.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::matrix;
using lola_test::matrix_d;

namespace {
// n modules of rank r with their own shapes, Grams stored one after another (column-major r×r).
template <class T>
struct batch {
  int n, r;
  std::vector<T> b_grams, a_grams, scales;
};

template <class T>
batch<T> random_batch(int n, int r, std::mt19937_64& rng) {
  batch<T> out{n, r, std::vector<T>(n * r * r), std::vector<T>(n * r * r), std::vector<T>(n)};
  for (int i = 0; i < n; ++i) {
    // d, k ≥ 8r: κ ≈ (1 + √(r/d))/(1 − √(r/d)) ≤ 2.1, so every module takes the Gram route.
    const int d = 8 * r + 7 * i % 23, k = 8 * r + 5 * i % 19;
    const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
    matrix<T> gb, ga;
    lola::detail::gram_into(B, gb);
    lola::detail::gram_into(A.transpose(), ga);
    std::copy(gb.data(), gb.data() + r * r, out.b_grams.begin() + i * r * r);
    std::copy(ga.data(), ga.data() + r * r, out.a_grams.begin() + i * r * r);
    out.scales[i] = T(0.25) * T(i + 1) * (i % 2 ? T(-1) : T(1));
  }
  return out;
}

template <class T, class Policy>
std::vector<T> launch(const Policy& policy, batch<T>& b) {
  std::vector<T> sigma(b.n * b.r, T(-1)), work(b.n * lola::detail::spectrum_workspace_size(b.r));
  std::vector<int> status(b.n, -1);
  lola::batched_spectra_from_grams(policy, b.n, b.r, b.b_grams.data(), b.a_grams.data(), b.scales.data(),
                                   sigma.data(), work.data(), status.data());
  return sigma;
}

// The kernel called directly, module by module, as the reference: the launch must reproduce it
// bit for bit (each work item runs the same sequential code on the same data).
template <class T>
std::vector<T> one_by_one(const batch<T>& b) {
  std::vector<T> sigma(b.n * b.r), work(lola::detail::spectrum_workspace_size(b.r));
  for (int i = 0; i < b.n; ++i)
    REQUIRE(lola::detail::spectrum_from_grams(b.b_grams.data() + i * b.r * b.r, b.a_grams.data() + i * b.r * b.r,
                                              b.scales[i], b.r, sigma.data() + i * b.r, work.data()) ==
            lola::detail::gram_spectrum::computed);
  return sigma;
}
}  // namespace

TEST_SUITE("backend.thrust") {
  TEST_CASE_TEMPLATE("batched spectra on Thrust's CPP and OpenMP systems equal the kernel per module", T,
                     float, double) {
    std::mt19937_64 rng(31);
    for (int r : {1, 4, 16}) {
      CAPTURE(r);
      batch<T> b = random_batch<T>(13, r, rng);
      const std::vector<T> reference = one_by_one(b);
      CHECK(launch(thrust::cpp::par, b) == reference);
      CHECK(launch(thrust::omp::par, b) == reference);
    }
  }

  TEST_CASE_TEMPLATE("batched singular vectors (the r×r stage of canonical forms) on Thrust's CPP and OpenMP "
                     "systems equal the kernel per module", T, float, double) {
    std::mt19937_64 rng(34);
    for (int r : {1, 5, 12}) {
      CAPTURE(r);
      const batch<T> b = random_batch<T>(9, r, rng);
      const std::size_t rr = std::size_t(r) * r;
      std::vector<T> sigma(b.n * r), x_b(b.n * rr), x_a(b.n * rr), work(lola::detail::svd_workspace_size(r));
      for (int i = 0; i < b.n; ++i)
        REQUIRE(lola::detail::svd_from_grams(b.b_grams.data() + i * rr, b.a_grams.data() + i * rr, b.scales[i], r,
                                             sigma.data() + i * r, x_b.data() + i * rr, x_a.data() + i * rr,
                                             work.data()) == lola::detail::gram_spectrum::computed);
      const auto launched = [&](const auto& policy) {
        std::vector<T> s(b.n * r, T(-1)), xb(b.n * rr, T(-1)), xa(b.n * rr, T(-1)),
            w(b.n * lola::detail::svd_workspace_size(r));
        std::vector<int> status(b.n, -1);
        lola::batched_spectra_from_grams(policy, b.n, r, b.b_grams.data(), b.a_grams.data(), b.scales.data(),
                                         s.data(), w.data(), status.data(), xb.data(), xa.data());
        return s == sigma && xb == x_b && xa == x_a;
      };
      CHECK(launched(thrust::cpp::par));
      CHECK(launched(thrust::omp::par));
    }
  }

  TEST_CASE("a module with non-finite Grams is named; the others are still computed") {
    std::mt19937_64 rng(32);
    batch<double> b = random_batch<double>(9, 3, rng);
    b.a_grams[7 * 9 + 4] = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> sigma(9 * 3, -1.0), work(9 * lola::detail::spectrum_workspace_size(3));
    std::vector<int> status(9, -1);
    const lola::error e = lola_test::thrown_by([&] {
      lola::batched_spectra_from_grams(thrust::omp::par, 9, 3, b.b_grams.data(), b.a_grams.data(),
                                       b.scales.data(), sigma.data(), work.data(), status.data());
    });
    CHECK(e.code() == lola::error_code::numerical);
    CHECK(lola_test::contains(e.what(), "module 7 of 9"));
    const std::vector<double> reference_first = [&] {
      batch<double> head = b;
      head.n = 7;
      return one_by_one(head);
    }();
    CHECK(std::vector<double>(sigma.begin(), sigma.begin() + 7 * 3) == reference_first);
    CHECK(status[7] == int(lola::detail::gram_spectrum::failed));
    CHECK(status[8] == int(lola::detail::gram_spectrum::computed));
  }

  TEST_CASE_TEMPLATE("batched Procrustes rotations (O-Align's r×r stage) on Thrust's CPP and OpenMP systems equal "
                     "the kernel per module and o_align's Q; a non-finite M is named",
                     T, float, double) {
    std::mt19937_64 rng(35);
    for (int r : {1, 4, 16}) {
      CAPTURE(r);
      const int n = 11;
      const std::size_t rr = std::size_t(r) * r;
      std::vector<T> m(n * rr), q(n * rr), ratio(n), work(lola::detail::procrustes_workspace_size(r));
      std::vector<matrix<T>> qs;
      for (int i = 0; i < n; ++i) {
        // M = Bᵀ·B̄ + A·Āᵀ of a module and its template, the matrix o_align forms.
        const int d = 3 * r + i, k = 2 * r + 5;
        const matrix<T> B = gaussian<T>(d, r, rng), A = gaussian<T>(r, k, rng);
        const matrix<T> Bt = gaussian<T>(d, r, rng), At = gaussian<T>(r, k, rng);
        matrix<T> gb, ga;
        lola::detail::cross_gram_into(B, Bt, gb);
        lola::detail::cross_gram_into(A.transpose(), At.transpose(), ga);
        const matrix<T> mi = gb + ga;
        std::copy(mi.data(), mi.data() + rr, m.begin() + i * rr);
        REQUIRE(lola::detail::procrustes_rotation(mi.data(), r, q.data() + i * rr, work.data(), &ratio[i]));
        // o_align runs the same kernel on the same M: the same Q, bit for bit.
        const auto aligned = lola::o_align(lola::factor(B, A), lola::factor(Bt, At));
        CHECK(std::equal(q.begin() + i * rr, q.begin() + (i + 1) * rr, aligned.Q.data()));
        CHECK(aligned.min_singular_value == ratio[i]);
      }
      const auto launched = [&](const auto& policy) {
        std::vector<T> ql(n * rr, T(-1)), rl(n, T(-1)), wl(n * lola::detail::procrustes_workspace_size(r));
        std::vector<int> ok(n, -1);
        lola::batched_procrustes(policy, n, r, m.data(), ql.data(), rl.data(), wl.data(), ok.data());
        return ql == q && rl == ratio && std::count(ok.begin(), ok.end(), 1) == n;
      };
      CHECK(launched(thrust::cpp::par));
      CHECK(launched(thrust::omp::par));
      // A NaN in module 6's M: named, and module 7 still solved.
      m[6 * rr + rr / 2] = std::numeric_limits<T>::quiet_NaN();
      std::vector<T> ql(n * rr), rl(n), wl(n * lola::detail::procrustes_workspace_size(r));
      std::vector<int> ok(n, -1);
      const lola::error e = lola_test::thrown_by(
          [&] { lola::batched_procrustes(thrust::omp::par, n, r, m.data(), ql.data(), rl.data(), wl.data(), ok.data()); });
      CHECK(e.code() == lola::error_code::numerical);
      CHECK(lola_test::contains(e.what(), "module 6 of 11"));
      CHECK(ok[6] == 0);
      CHECK(ok[7] == 1);
      CHECK(std::equal(ql.begin() + 7 * rr, ql.begin() + 8 * rr, q.begin() + 7 * rr));
    }
  }

  TEST_CASE("an empty batch is a no-op; a negative count is an invalid argument") {
    float* none = nullptr;
    int* no_status = nullptr;
    CHECK_NOTHROW(lola::batched_spectra_from_grams(thrust::cpp::par, 0, 4, none, none, none, none, none, no_status));
    const lola::error e = lola_test::thrown_by([&] {
      lola::batched_spectra_from_grams(thrust::cpp::par, -1, 4, none, none, none, none, none, no_status);
    });
    CHECK(e.code() == lola::error_code::invalid_argument);
  }

  TEST_CASE("ill-conditioned factors: the batch leaves them to the Householder route and matches low_rank_svd's "
            "accuracy; the Gram route alone does not") {
    // Float factors B = Q·diag(1, …, 1e-4)·Pᵀ (κ = 1e4: κ² = 1e8 > 1/ε_float, so the Gram route loses
    // the small σ) and Gaussian A, alternating with well-conditioned modules.
    std::mt19937_64 rng(33);
    const int n = 8, r = 6, d = 300, k = 200;
    std::vector<matrix<float>> Bs, As;
    std::vector<float> b_grams(n * r * r), a_grams(n * r * r), scales(n, 1.0f), sigma(n * r, -1.0f),
        work(n * lola::detail::spectrum_workspace_size(r));
    std::vector<int> status(n, -1);
    for (int i = 0; i < n; ++i) {
      matrix<float> B = gaussian<float>(d, r, rng);
      if (i % 2) {
        const Eigen::HouseholderQR<matrix<float>> qr(B);
        const matrix<float> q = qr.householderQ() * matrix<float>::Identity(d, r);
        Eigen::VectorXf spread = Eigen::VectorXf::LinSpaced(r, 0.0f, -4.0f);
        B = q * spread.unaryExpr([](float e) { return std::pow(10.0f, e); }).asDiagonal() *
            lola::random_orthogonal<float>(r, rng);
      }
      Bs.push_back(B);
      As.push_back(gaussian<float>(r, k, rng));
      matrix<float> gb, ga;
      lola::detail::gram_into(Bs.back(), gb);
      lola::detail::gram_into(As.back().transpose(), ga);
      std::copy(gb.data(), gb.data() + r * r, b_grams.begin() + i * r * r);
      std::copy(ga.data(), ga.data() + r * r, a_grams.begin() + i * r * r);
    }
    lola::batched_spectra_from_grams(thrust::omp::par, n, r, b_grams.data(), a_grams.data(), scales.data(),
                                     sigma.data(), work.data(), status.data());
    for (int i = 0; i < n; ++i) {
      CAPTURE(i);
      CHECK(status[i] == int(i % 2 ? lola::detail::gram_spectrum::needs_householder
                                   : lola::detail::gram_spectrum::computed));
      if (status[i] == int(lola::detail::gram_spectrum::needs_householder)) {
        const lola::low_rank_svd<float> svd(lola::factor(Bs[i], As[i]), lola::singular_values_only);
        std::copy(svd.singularValues().data(), svd.singularValues().data() + r, sigma.begin() + i * r);
      }
    }
    // Against σ of the dense product in double. Each module meets the bound of the route it took,
    // the CPU's for that factor: on the Householder route (backward stable QR and core SVD) an
    // absolute error of a small multiple of ε·‖B‖·‖A‖, 64·ε for r = 6 with a wide margin; on the
    // Gram route (κ ≤ 4) the kernel's 16·r·ε·‖B‖²·‖A‖²/σ (linalg/spectrum_from_grams.hpp).
    bool gram_route_caught = false;
    for (int i = 0; i < n; ++i) {
      CAPTURE(i);
      const matrix_d Bd = Bs[i].cast<double>(), Ad = As[i].cast<double>();
      const Eigen::BDCSVD<matrix_d> truth(Bd * Ad);
      const double eps = std::numeric_limits<float>::epsilon(), norms = Bd.norm() * Ad.norm();
      const double householder_bound = 64 * eps * norms;
      for (int j = 0; j < r; ++j) {
        const double sigma_j = truth.singularValues()(j);
        const double bound = i % 2 ? householder_bound : 16 * r * eps * norms * norms / sigma_j;
        CHECK(std::abs(double(sigma[i * r + j]) - sigma_j) <= bound);
      }
      // The deliberately wrong variant: the Gram route taken anyway (what the kernel did before),
      // σ_r from the eigenvalues of M = Lᵀ·G_B·L, G_A = L·Lᵀ.
      const Eigen::LLT<matrix<float>> la((As[i] * As[i].transpose()).eval());
      const matrix<float> L = la.matrixL();
      const matrix<float> M = L.transpose() * (Bs[i].transpose() * Bs[i]) * L;
      const Eigen::SelfAdjointEigenSolver<matrix<float>> eig(M);
      const float smallest = std::sqrt(std::max(eig.eigenvalues()(0), 0.0f));
      if (i % 2) gram_route_caught |= std::abs(double(smallest) - truth.singularValues()(r - 1)) > householder_bound;
    }
    CHECK(gram_route_caught);
  }
}
