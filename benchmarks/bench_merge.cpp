// W += s·B·A: lola's merge_into (one GEMM accumulating into W) against forming D = s·B·A and then
// adding it (the alternative, which writes and rereads a d×k temporary). Bytes: W read and written
// once plus the factors read once; the floor streams exactly that.
#include <benchmark/benchmark.h>

#include <lola/lola.hpp>

#include "bench_support.hpp"

namespace {

std::int64_t merge_bytes(const lola_bench::shape& s) {
  return 2 * std::int64_t(s.d) * s.k * 4 + std::int64_t(s.d + s.k) * s.r * 4;
}

void lola_merge(benchmark::State& state, lola_bench::shape s) {
  const Eigen::MatrixXf B = lola_bench::random_matrix(s.d, s.r, 1);
  const Eigen::MatrixXf A = lola_bench::random_matrix(s.r, s.k, 2);
  Eigen::MatrixXf W = lola_bench::random_matrix(s.d, s.k, 3);
  const auto delta = lola::factor(B, A, 2.0f);
  const double floor = lola_bench::read_write_floor_seconds(W, {&B, &A});
  lola_bench::run_against_floor(state, merge_bytes(s), floor, [&] {
    lola::merge_into(W, delta);
    benchmark::ClobberMemory();
  });
}

void form_then_add(benchmark::State& state, lola_bench::shape s) {
  const Eigen::MatrixXf B = lola_bench::random_matrix(s.d, s.r, 1);
  const Eigen::MatrixXf A = lola_bench::random_matrix(s.r, s.k, 2);
  Eigen::MatrixXf W = lola_bench::random_matrix(s.d, s.k, 3);
  const double floor = lola_bench::read_write_floor_seconds(W, {&B, &A});
  lola_bench::run_against_floor(state, merge_bytes(s), floor, [&] {
    const Eigen::MatrixXf D = 2.0f * B * A;
    W += D;
    benchmark::ClobberMemory();
  });
}

const bool registered = [] {
  for (const auto& s : lola_bench::standard_shapes()) {
    benchmark::RegisterBenchmark(("merge/lola/" + s.label()).c_str(), lola_merge, s)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("merge/alt_form_then_add/" + s.label()).c_str(), form_then_add, s)
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
