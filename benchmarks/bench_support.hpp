#pragma once
// Shared pieces of lola's benchmarks: the standard shapes of DESIGN.md §6, random factors, and the
// physical floor each benchmark compares itself with (floor_ratio = time ÷ floor time).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace lola_bench {

/// One module shape: ΔW is d×k with rank r.
struct shape {
  std::string name;
  int d, k, r;
  std::string label() const {
    return name + "_" + std::to_string(d) + "x" + std::to_string(k) + "_r" + std::to_string(r);
  }
};

/// The distinct module shapes of the standard adapters (DESIGN.md §6).
inline std::vector<shape> standard_shapes() {
  return {
      {"llama2_7b_qkvo", 4096, 4096, 16},  // q/k/v/o of 32 layers
      {"qwen2_1.5b_q", 1536, 1536, 4},     {"qwen2_1.5b_v", 256, 1536, 4},
      {"sd14_attn_c320", 320, 320, 4},     {"sd14_attn_c640", 640, 640, 4},
      {"sd14_attn_c1280", 1280, 1280, 4},  {"sd14_attn2_to_v_c320", 320, 768, 4},
      {"sd14_attn2_to_v_c640", 640, 768, 4}, {"sd14_attn2_to_v_c1280", 1280, 768, 4},
      {"sd14_attn_c320", 320, 320, 32},    {"sd14_attn_c640", 640, 640, 32},
      {"sd14_attn_c1280", 1280, 1280, 32}, {"sd14_attn2_to_v_c1280", 1280, 768, 32},
      {"gpt3_175b", 12288, 12288, 4},      // one module per layer, 96 layers
  };
}

inline Eigen::MatrixXf random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed,
                                     float sd = 0.02f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, sd);
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

/// The T built for `key` by make(T&) on first use, kept for the rest of the run: fixtures are
/// expensive and the benchmarks run one after another on one thread.
template <class T, class Make>
const T& built_once(const std::string& key, Make&& make) {
  static std::map<std::string, std::unique_ptr<T>> cache;
  auto& slot = cache[key];
  if (!slot) {
    slot = std::make_unique<T>();
    make(*slot);
  }
  return *slot;
}

/// The thread count of lola's parallel loops for the rows that follow (the `_tN` of a shape).
inline void set_threads(int threads) {
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

using clock = std::chrono::steady_clock;

/// Fastest time of one pass of `pass`, over at least 5 passes and 50 ms.
template <class Pass>
double fastest_seconds(Pass pass) {
  double best = 1e30, total = 0;
  for (int i = 0; i < 5 || total < 0.05; ++i) {
    const auto start = clock::now();
    pass();
    const double t = std::chrono::duration<double>(clock::now() - start).count();
    best = std::min(best, t);
    total += t;
  }
  return best;
}

/// The floor for an operation that must read these buffers once: a vectorised sum over each.
inline double read_floor_seconds(const std::vector<const Eigen::MatrixXf*>& buffers) {
  return fastest_seconds([&] {
    float total = 0;
    for (const auto* m : buffers)
      total += Eigen::Map<const Eigen::VectorXf>(m->data(), m->size()).sum();
    benchmark::DoNotOptimize(total);
  });
}

/// The floor for an operation that reads these buffers once and writes as many bytes (a new
/// factor pair per module): a vectorised copy of each into a destination of its size.
inline double copy_floor_seconds(const std::vector<const Eigen::MatrixXf*>& buffers) {
  std::vector<Eigen::MatrixXf> copies;
  copies.reserve(buffers.size());
  for (const auto* m : buffers) copies.emplace_back(m->rows(), m->cols());
  return fastest_seconds([&] {
    for (std::size_t i = 0; i < buffers.size(); ++i) copies[i] = *buffers[i];
    benchmark::ClobberMemory();
  });
}

/// The floor for an operation that must read and write `w` once (plus read `also_read`):
/// w = w·1 + 0 in one vectorised pass, which no compiler may elide for floats.
inline double read_write_floor_seconds(Eigen::MatrixXf& w,
                                       const std::vector<const Eigen::MatrixXf*>& also_read) {
  const double read = also_read.empty() ? 0.0 : read_floor_seconds(also_read);
  volatile float one = 1.0f;
  const float factor = one;
  return read + fastest_seconds([&] {
           w.array() = w.array() * factor;
           benchmark::ClobberMemory();
         });
}

/// Runs the timed loop and reports, on the wall clock, bytes_per_second (bytes ÷ time per iteration)
/// and floor_ratio (time per iteration ÷ floor). Google Benchmark's own byte rate divides by the
/// calling thread's CPU time, which undercounts a parallel_for whose other threads are still
/// working; wall time is what a user waits for, single- or multi-threaded.
template <class Body>
void run_against_floor(benchmark::State& state, std::int64_t bytes, double floor_seconds,
                       Body body) {
  const auto start = clock::now();
  for (auto _ : state) body();
  const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
  const double per_iteration = elapsed / static_cast<double>(state.iterations());
  state.counters["bytes_per_second"] = benchmark::Counter(
      static_cast<double>(bytes) / per_iteration, benchmark::Counter::kDefaults,
      benchmark::Counter::kIs1024);
  state.counters["floor_ratio"] = per_iteration / floor_seconds;
}

}  // namespace lola_bench
