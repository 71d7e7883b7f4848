// Merging whole adapters (ops/merge_adapters.hpp): modules matched by name across adapters that
// hold different modules in different orders, exact weighted sums within the budget, Eckart–Young
// below it, and the refusals, each naming the module and the adapters. Also io::module_lookup, the
// name matching it and O-Align's templates share.
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <string>
#include <vector>

#include <Eigen/SVD>

#include "lola/io/module_lookup.hpp"
#include "lola/ops/merge_adapters.hpp"
#include "support/adapter_module.hpp"
#include "support/errors.hpp"
#include "support/test_support.hpp"

using lola_test::contains;
using lola_test::eps;
using lola_test::gaussian;
using lola_test::make_module;
using lola_test::matrix_d;
using lola_test::thrown_by;

namespace {

using adapter = lola::io::adapter<double>;
using module = lola::io::adapter_module<double>;

constexpr int d = 24, k = 20;

module random_module(const std::string& name, int rank, double scale, std::mt19937_64& rng) {
  return make_module<double>(name, gaussian<double>(d, rank, rng), gaussian<double>(rank, k, rng), scale);
}

matrix_d dense(const module& m) { return m.scale * m.B * m.A; }

lola::merge_adapters_options budget(lola::index rank) {
  lola::merge_adapters_options options;
  options.rank = rank;
  return options;
}

/// Three adapters that share some modules, each in its own order: a = {q, v}, b = {v, o, q},
/// c = {q}. Matching by position instead of by name would pair a's q with b's v.
struct three_adapters {
  adapter a, b, c;
  std::vector<double> weights{0.7, -0.3, 1.5};
  explicit three_adapters(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    a.modules = {random_module("q", 3, 2.0, rng), random_module("v", 2, 0.5, rng)};
    b.modules = {random_module("v", 4, 1.0, rng), random_module("o", 2, 4.0, rng), random_module("q", 2, 1.0, rng)};
    c.modules = {random_module("q", 1, 0.25, rng)};
    a.metadata.push_back({"format", "pt"});
    b.passthrough.push_back(lola::io::tensor::from_matrix("base_model.model.lm_head.weight", lola::io::dtype::F32,
                                                          {2, 2}, Eigen::MatrixXd::Ones(2, 2)));
  }
  std::vector<const adapter*> all() const { return {&a, &b, &c}; }
  /// Σ wᵢ·sᵢ·BᵢAᵢ over the adapters holding `name`, and Σ |wᵢsᵢ|·‖Bᵢ‖‖Aᵢ‖, the bound on its terms.
  matrix_d exact(const std::string& name, double* norm_sum = nullptr) const {
    matrix_d sum = matrix_d::Zero(d, k);
    double bound = 0;
    const std::vector<const adapter*> list = all();
    for (std::size_t i = 0; i < list.size(); ++i)
      if (const module* m = list[i]->find(name)) {
        sum += weights[i] * dense(*m);
        bound += std::abs(weights[i] * m->scale) * m->B.norm() * m->A.norm();
      }
    if (norm_sum) *norm_sum = bound;
    return sum;
  }
};

}  // namespace

TEST_CASE("merge_adapters: modules matched by name, the exact weighted sum within the budget") {
  const three_adapters t(811);
  const auto merged = lola::merge_adapters(t.all(), t.weights, budget(16));
  const adapter& out = merged.adapter;
  // Every name of the first adapter in its order, then the new ones in a later adapter's order.
  REQUIRE(out.modules.size() == 3);
  CHECK(out.modules[0].name == "q");
  CHECK(out.modules[1].name == "v");
  CHECK(out.modules[2].name == "o");
  REQUIRE(merged.modules.size() == 3);
  CHECK(merged.modules[0].sources == 3);
  CHECK(merged.modules[1].sources == 2);
  CHECK(merged.modules[2].sources == 1);
  // Ranks add up: q 3 + 2 + 1, v 2 + 4, o 2 (all within the budget of 16, so exact).
  CHECK(merged.modules[0].rank == 6);
  CHECK(merged.modules[1].rank == 6);
  CHECK(merged.modules[2].rank == 2);
  for (std::size_t j = 0; j < 3; ++j) {
    CHECK(merged.modules[j].name == out.modules[j].name);
    CHECK(merged.modules[j].retained_fro_fraction == 1.0);
    CHECK(out.modules[j].rank() == merged.modules[j].rank);
    double norm_sum = 0;
    const matrix_d reference = t.exact(out.modules[j].name, &norm_sum);
    // Stacking scales each B by cᵢ (one rounding) and the product sums R ≤ 6 terms: one product
    // bound (test_support.hpp) on Σ |cᵢ|·‖Bᵢ‖‖Aᵢ‖.
    CHECK((dense(out.modules[j]) - reference).norm() <= lola_test::product_tolerance<double>(6, norm_sum));
  }
  // The first adapter's metadata; a later adapter's passthrough tensors named as left behind.
  CHECK(out.metadata == t.a.metadata);
  CHECK(out.passthrough.empty());
  REQUIRE(merged.warnings.size() == 1);
  CHECK(contains(merged.warnings[0], "adapter 1"));
}

TEST_CASE("merge_adapters: below the budget, the best approximation of the exact sum (Eckart–Young)") {
  const three_adapters t(812);
  lola::merge_adapters_options options;
  options.rank = 2;
  options.labels = {"a.safetensors", "b.safetensors", "c.safetensors"};
  const auto merged = lola::merge_adapters(t.all(), t.weights, options);
  for (std::size_t j = 0; j < merged.adapter.modules.size(); ++j) {
    const module& m = merged.adapter.modules[j];
    double norm_sum = 0;
    const matrix_d reference = t.exact(m.name, &norm_sum);
    const Eigen::VectorXd sigma = Eigen::JacobiSVD<matrix_d>(reference).singularValues();
    const Eigen::Index kept = std::min<Eigen::Index>(2, (sigma.array() > 0).count());
    CHECK(m.rank() == kept);
    // The factor-space SVD (QR of each stacked factor, SVD of the R×R core) is backward stable:
    // each of its steps perturbs the sum by O(n·ε) relative to Σ |cᵢ|·‖Bᵢ‖‖Aᵢ‖, with n at most
    // d + k + R; one product bound with that many terms covers them (Golub–Van Loan §5.2, §8.6).
    const double tol = lola_test::product_tolerance<double>(d + k + 6, norm_sum);
    const Eigen::VectorXd got = Eigen::JacobiSVD<matrix_d>(dense(m)).singularValues();
    for (Eigen::Index i = 0; i < kept; ++i) CHECK(std::abs(got(i) - sigma(i)) <= tol);
    // Optimality: what is left is exactly the tail of the spectrum, and the reported fraction is
    // ‖ΔW_k‖_F / ‖ΔW‖_F.
    const double tail = sigma.tail(sigma.size() - kept).norm();
    CHECK(std::abs((reference - dense(m)).norm() - tail) <= tol);
    const double fraction = sigma.head(kept).norm() / sigma.norm();
    CHECK(std::abs(merged.modules[j].retained_fro_fraction - fraction) <= tol / sigma.norm());
  }
  // The one-source module o (rank 2) fits the budget whole.
  CHECK(merged.modules[2].retained_fro_fraction == 1.0);
}

TEST_CASE("merge_adapters: by name, not by position") {
  // Deliberately wrong variant: pairing modules by their place in each adapter. With b's modules
  // in another order the result must differ from the by-name merge.
  const three_adapters t(813);
  const auto merged = lola::merge_adapters(t.all(), t.weights, budget(16));
  const matrix_d by_position = t.weights[0] * dense(t.a.modules[0]) + t.weights[1] * dense(t.b.modules[0]) +
                               t.weights[2] * dense(t.c.modules[0]);
  double norm_sum = 0;
  const matrix_d by_name = t.exact("q", &norm_sum);
  const double tol = lola_test::product_tolerance<double>(6, norm_sum);
  CHECK((dense(merged.adapter.modules[0]) - by_name).norm() <= tol);
  CHECK((dense(merged.adapter.modules[0]) - by_position).norm() > 1e6 * tol);
}

TEST_CASE("merge_adapters: progress is reported once per module, from any thread") {
  const three_adapters t(814);
  std::atomic<std::size_t> calls{0}, total{0};
  lola::merge_adapters_options options;
  options.module_done = [&](std::size_t n) {
    ++calls;
    total = n;
  };
  lola::merge_adapters(t.all(), t.weights, options);
  CHECK(calls == 3);
  CHECK(total == 3);
}

TEST_CASE("merge_adapters: refusals name the module, the shapes and the adapters, before any merge") {
  three_adapters t(815);
  lola::merge_adapters_options options;
  options.labels = {"a.safetensors", "b.safetensors", "c.safetensors"};
  std::atomic<int> merged_modules{0};
  options.module_done = [&](std::size_t) { ++merged_modules; };

  SUBCASE("a shape that differs") {
    std::mt19937_64 rng(1);
    t.c.modules.push_back(make_module<double>("v", gaussian<double>(d + 1, 2, rng), gaussian<double>(2, k, rng)));
    const auto e = thrown_by([&] { lola::merge_adapters(t.all(), t.weights, options); });
    CHECK(e.code() == lola::error_code::shape_mismatch);
    for (const char* part : {"\"v\"", "24x20", "25x20", "a.safetensors", "c.safetensors"})
      CHECK_MESSAGE(contains(e.message(), part), e.message());
  }
  SUBCASE("a kind that differs") {
    t.b.modules[1].kind = lola::io::module_kind::embedding;
    t.a.modules.push_back(t.b.modules[1]);
    t.a.modules.back().kind = lola::io::module_kind::linear;
    const auto e = thrown_by([&] { lola::merge_adapters(t.all(), t.weights, options); });
    CHECK(e.code() == lola::error_code::shape_mismatch);
    CHECK_MESSAGE(contains(e.message(), "\"o\""), e.message());
  }
  SUBCASE("a DoRA magnitude") {
    t.b.modules[0].extras.push_back(lola::io::tensor::from_matrix(
        "v.lora_magnitude_vector", lola::io::dtype::F32, {std::uint64_t(d)}, Eigen::VectorXd::Ones(d)));
    const auto e = thrown_by([&] { lola::merge_adapters(t.all(), t.weights, options); });
    CHECK(e.code() == lola::error_code::unsupported);
    for (const char* part : {"\"v\"", "v.lora_magnitude_vector", "b.safetensors"})
      CHECK_MESSAGE(contains(e.message(), part), e.message());
  }
  SUBCASE("dialects that differ") {
    t.c.format = lola::io::adapter_format::kohya;
    const auto e = thrown_by([&] { lola::merge_adapters(t.all(), t.weights, options); });
    CHECK(e.code() == lola::error_code::unsupported);
    CHECK_MESSAGE(contains(e.message(), "c.safetensors"), e.message());
  }
  SUBCASE("counts and budgets") {
    CHECK(thrown_by([&] { lola::merge_adapters(t.all(), {1.0, 2.0}, options); }).code() ==
          lola::error_code::invalid_argument);
    options.rank = 0;
    CHECK(thrown_by([&] { lola::merge_adapters(t.all(), t.weights, options); }).code() ==
          lola::error_code::invalid_argument);
    options.rank = -1;
    options.labels = {"only one"};
    CHECK(thrown_by([&] { lola::merge_adapters(t.all(), t.weights, options); }).code() ==
          lola::error_code::invalid_argument);
    CHECK(thrown_by([&] { lola::merge_adapters<double>({}, {}, {}); }).code() == lola::error_code::invalid_argument);
    CHECK(thrown_by([&] { lola::merge_adapters<double>({&t.a, nullptr}, {1.0, 1.0}, {}); }).code() ==
          lola::error_code::invalid_argument);
  }
  CHECK(merged_modules == 0);
}

TEST_CASE("module_lookup: every module found by name, absent names not, the first of equal names") {
  three_adapters t(816);
  t.b.modules.push_back(t.b.modules[0]);  // a second "v", as an adapter built in memory can hold
  t.b.modules.back().scale = 9;
  const lola::io::module_lookup lookup(t.b);
  for (const module& m : t.b.modules) {
    REQUIRE(lookup.find(m.name) != nullptr);
    CHECK(lookup.find(m.name) == t.b.find(m.name));
  }
  CHECK(lookup.find("v")->scale == 1.0);
  CHECK(lookup.find("k") == nullptr);
  CHECK(lookup.find("") == nullptr);
  CHECK(lookup.find("v ") == nullptr);
}
