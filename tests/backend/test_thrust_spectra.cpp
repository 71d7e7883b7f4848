// The batched r×r spectra kernel launched through Thrust's host systems (CPP and OpenMP): the same
// functor a GPU runs, one module per work item, checked against the kernel called directly.
#include <doctest/doctest.h>

#include <limits>
#include <random>
#include <vector>

#include <thrust/system/cpp/execution_policy.h>
#include <thrust/system/omp/execution_policy.h>

#include "lola/backend/eigen/gram.hpp"
#include "lola/backend/thrust/batched_spectra.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

using lola_test::gaussian;
using lola_test::matrix;

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
    const int d = 2 + 7 * i % 23, k = 3 + 5 * i % 19;  // some with min(d, k) < r
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
                                              b.scales[i], b.r, sigma.data() + i * b.r, work.data()));
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
    CHECK(status[7] == 0);
    CHECK(status[8] == 1);
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
}
