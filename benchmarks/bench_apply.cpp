// ΔW·x for one vector: lola's s·B·(A·x) from the factors against the dense d×k matvec with the
// merged ΔW (the alternative). Bytes are those each variant must stream: (d + k)·r floats for the
// factors, d·k floats for the dense matrix; each floor reads exactly those bytes once.
#include <benchmark/benchmark.h>

#include <lola/lola.hpp>

#include "bench_support.hpp"

namespace {

void lowrank_matvec(benchmark::State& state, lola_bench::shape s) {
  const Eigen::MatrixXf B = lola_bench::random_matrix(s.d, s.r, 1);
  const Eigen::MatrixXf A = lola_bench::random_matrix(s.r, s.k, 2);
  const Eigen::MatrixXf x = lola_bench::random_matrix(s.k, 1, 3, 1.0f);
  const auto delta = lola::factor(B, A, 2.0f);
  Eigen::MatrixXf y(s.d, 1);
  const double floor = lola_bench::read_floor_seconds({&B, &A});
  lola_bench::run_against_floor(state, std::int64_t(s.d + s.k) * s.r * 4, floor, [&] {
    y = lola::dense(delta * x);
    benchmark::DoNotOptimize(y.data());
  });
}

void dense_matvec(benchmark::State& state, lola_bench::shape s) {
  const Eigen::MatrixXf B = lola_bench::random_matrix(s.d, s.r, 1);
  const Eigen::MatrixXf A = lola_bench::random_matrix(s.r, s.k, 2);
  const Eigen::MatrixXf x = lola_bench::random_matrix(s.k, 1, 3, 1.0f);
  const Eigen::MatrixXf W = lola::dense(lola::factor(B, A, 2.0f));
  Eigen::VectorXf y(s.d);
  const double floor = lola_bench::read_floor_seconds({&W});
  lola_bench::run_against_floor(state, std::int64_t(s.d) * s.k * 4, floor, [&] {
    y.noalias() = W * x.col(0);
    benchmark::DoNotOptimize(y.data());
  });
}

const bool registered = [] {
  for (const auto& s : lola_bench::standard_shapes()) {
    benchmark::RegisterBenchmark(("matvec/lola/" + s.label()).c_str(), lowrank_matvec, s)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("matvec/alt_dense/" + s.label()).c_str(), dense_matvec, s)
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
