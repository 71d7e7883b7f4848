// Whole-adapter spectra and canonical forms: lola's factor-space SVD (linalg/low_rank_svd.hpp,
// O((d + k)·r² + r³) per module) run on every module of a standard adapter with parallel_for, at 1
// and 2 threads (the thread count is the `_tN` suffix of the shape label):
//   svd_values/lola/<adapter>_tN   singular_values(ΔW, r) of every module
//   canonical/lola/<adapter>_tN    canonicalize(ΔW, balanced) of every module
//   svd_values/lola_thrust_omp/<adapter>_tN  the batched route a GPU takes (where Thrust is found):
//       every module's two Grams (backend/eigen/gram.hpp), then one Thrust launch of the r×r kernel
//       over all modules (backend/thrust/batched_spectra.hpp) on Thrust's OpenMP system
//   svd_values/lola_adapter/<adapter>_tN   adapter_singular_values (features/adapter_spectra.hpp) of
//       an io::adapter holding the same factors (row-major, as loaded): the Grams, then one batched
//       r×r call per rank on the executor's threads
//   svd_values/lola_adapter_one_by_one/<adapter>_tN   the same adapter, singular_values module by
//       module (what adapter_singular_values did before it batched)
// against the obvious alternative
//   svd_values/alt_dense_bdcsvd/<adapter>_tN   form the dense d×k ΔW, then Eigen::BDCSVD, values only
// Bytes are those every variant must move: for svd_values the float B and A factors of all modules,
// and the floor (measured in this run, one thread) is one vectorised read of exactly those factors;
// the alternative reports the same bytes and floor, so its floor_ratio says how far the dense route
// is from the physical limit of the task. canonical also writes a factor pair as large as the one
// it reads, so its bytes are twice the factors' and its floor copies them once.
#include <algorithm>
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/SVD>

#include <lola/canon/canonical_form.hpp>
#include <lola/core/parallel.hpp>
#include <lola/features/adapter_spectra.hpp>
#include <lola/features/spectrum.hpp>
#include <lola/io/adapter.hpp>
#include <lola/lola.hpp>

#include "bench_support.hpp"

#if defined(LOLA_BENCH_THRUST)
#include <thrust/system/omp/execution_policy.h>

#include <lola/backend/eigen/gram.hpp>
#include <lola/backend/thrust/batched_spectra.hpp>
#endif


namespace {

/// A whole adapter: the name (the shape label before `_tN`) and the shape of every module.
struct adapter_spec {
  std::string name;
  std::vector<lola_bench::shape> modules;
};

std::vector<lola_bench::shape> repeat(int times, std::vector<lola_bench::shape> per_layer) {
  std::vector<lola_bench::shape> out;
  for (int i = 0; i < times; ++i) out.insert(out.end(), per_layer.begin(), per_layer.end());
  return out;
}

/// SD-1.4 UNet (research/papers.md §4): 16 transformer blocks, C = 320 in 5, 640 in 5, 1280 in 6;
/// each has three C×C modules (attn1 to_q/to_v, attn2 to_q) and attn2.to_v, C×768. L = 64.
std::vector<lola_bench::shape> sd14_unet(int r) {
  std::vector<lola_bench::shape> out;
  for (const auto& [c, blocks] : std::vector<std::pair<int, int>>{{320, 5}, {640, 5}, {1280, 6}})
    for (int b = 0; b < blocks; ++b) {
      for (int i = 0; i < 3; ++i) out.push_back({"sd14_attn", c, c, r});
      out.push_back({"sd14_attn2_to_v", c, 768, r});
    }
  return out;
}

/// The standard adapters of DESIGN.md §6, whole.
std::vector<adapter_spec> standard_adapters() {
  return {
      {"llama2_7b_adapter", repeat(128, {{"llama2_7b_qkvo", 4096, 4096, 16}})},
      {"qwen2_1.5b_adapter",
       repeat(28, {{"qwen2_1.5b_q", 1536, 1536, 4}, {"qwen2_1.5b_v", 256, 1536, 4}})},
      // The 28 v_proj modules alone: small enough for the dense alternative (and the CI smoke run).
      {"qwen2_1.5b_v_adapter", repeat(28, {{"qwen2_1.5b_v", 256, 1536, 4}})},
      {"sd14_unet_adapter_r4", sd14_unet(4)},
      {"sd14_unet_adapter_r32", sd14_unet(32)},
      {"gpt3_175b_adapter", repeat(96, {{"gpt3_175b", 12288, 12288, 4}})},
  };
}

/// Random Gaussian factors (fixed seeds) of every module, and the expressions over them.
struct adapter {
  std::vector<Eigen::MatrixXf> B, A;
  std::vector<decltype(lola::factor(std::declval<const Eigen::MatrixXf&>(),
                                    std::declval<const Eigen::MatrixXf&>(), 1.0f))>
      delta;
  std::vector<const Eigen::MatrixXf*> buffers;  // every factor, for the floor
  std::int64_t bytes = 0;
  lola::index size() const { return static_cast<lola::index>(delta.size()); }
};

/// Built once per adapter and kept: the benchmarks run one after another on this thread.
const adapter& build(const adapter_spec& spec) {
  return lola_bench::built_once<adapter>(spec.name, [&](adapter& a) {
    const std::size_t n = spec.modules.size();
    a.B.reserve(n);
    a.A.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& m = spec.modules[i];
      a.B.push_back(lola_bench::random_matrix(m.d, m.r, 2 * i + 1));
      a.A.push_back(lola_bench::random_matrix(m.r, m.k, 2 * i + 2));
      a.bytes += std::int64_t(m.d + m.k) * m.r * 4;
    }
    for (std::size_t i = 0; i < n; ++i) {  // after the loops above: no reallocation moves B or A
      a.delta.push_back(lola::factor(a.B[i], a.A[i], 2.0f));
      a.buffers.push_back(&a.B[i]);
      a.buffers.push_back(&a.A[i]);
    }
  });
}

void lola_values(benchmark::State& state, adapter_spec spec, int threads) {
  const adapter& a = build(spec);
  std::vector<Eigen::VectorXf> sigma(a.delta.size());
  const double floor = lola_bench::read_floor_seconds(a.buffers);
  lola_bench::set_threads(threads);
  lola_bench::run_against_floor(state, a.bytes, floor, [&] {
    lola::parallel_for(a.size(), [&](lola::index i) {
      const auto& delta = a.delta[std::size_t(i)];
      sigma[std::size_t(i)] = lola::singular_values(delta, delta.rank());
    });
    benchmark::DoNotOptimize(sigma.data());
    benchmark::ClobberMemory();
  });
}

void lola_canonical(benchmark::State& state, adapter_spec spec, int threads) {
  const adapter& a = build(spec);
  std::vector<lola::canonical_result<float>> canon(a.delta.size());
  const double floor = lola_bench::copy_floor_seconds(a.buffers);
  lola_bench::set_threads(threads);
  lola_bench::run_against_floor(state, 2 * a.bytes, floor, [&] {
    lola::parallel_for(a.size(), [&](lola::index i) {
      canon[std::size_t(i)] =
          lola::canonicalize(a.delta[std::size_t(i)], lola::canonical_form::balanced);
    });
    benchmark::DoNotOptimize(canon.data());
    benchmark::ClobberMemory();
  });
}

/// The adapter of `spec` as a loader returns it: row-major factors, the scale 2.
const lola::io::adapter<float>& build_io(const adapter_spec& spec) {
  return lola_bench::built_once<lola::io::adapter<float>>(spec.name, [&](lola::io::adapter<float>& out) {
    const adapter& a = build(spec);
    for (std::size_t i = 0; i < a.B.size(); ++i) {
      lola::io::adapter_module<float> m;
      m.name = "module" + std::to_string(i);
      m.B = a.B[i];
      m.A = a.A[i];
      m.scale = 2.0;
      out.modules.push_back(std::move(m));
    }
  });
}

void lola_adapter_values(benchmark::State& state, adapter_spec spec, int threads, bool batched) {
  const adapter& a = build(spec);
  const lola::io::adapter<float>& io = build_io(spec);
  std::vector<Eigen::VectorXf> sigma(io.modules.size());
  const double floor = lola_bench::read_floor_seconds(a.buffers);
  lola_bench::set_threads(threads);
  lola_bench::run_against_floor(state, a.bytes, floor, [&] {
    if (batched) {
      sigma = lola::adapter_singular_values<float>(io, lola::executor{threads});
    } else {
      lola::parallel_for(lola::executor{threads}, lola::index(io.modules.size()), [&](lola::index i) {
        const auto& m = io.modules[std::size_t(i)];
        sigma[std::size_t(i)] = lola::singular_values(lola::factor(m.B, m.A, float(m.scale)), m.rank());
      });
    }
    benchmark::DoNotOptimize(sigma.data());
    benchmark::ClobberMemory();
  });
}

#if defined(LOLA_BENCH_THRUST)
/// The batched route: Grams per module into two contiguous r×r stacks, then one launch of the
/// per-module r×r kernel. The standard adapters have one rank per adapter.
void thrust_omp_values(benchmark::State& state, adapter_spec spec, int threads) {
  const adapter& a = build(spec);
  const int r = spec.modules.front().r;
  const lola::index n = a.size(), rr = lola::index(r) * r;
  std::vector<float> b_grams(n * rr), a_grams(n * rr), scales(n, 2.0f), sigma(n * r),
      work(n * lola::detail::spectrum_workspace_size(r));
  std::vector<int> status(n);
  const double floor = lola_bench::read_floor_seconds(a.buffers);
  lola_bench::set_threads(threads);
  lola_bench::run_against_floor(state, a.bytes, floor, [&] {
    lola::parallel_for(n, [&](lola::index i) {
      Eigen::Map<Eigen::MatrixXf> gb(b_grams.data() + i * rr, r, r), ga(a_grams.data() + i * rr, r, r);
      Eigen::MatrixXf g;
      lola::detail::gram_into(a.B[std::size_t(i)], g);
      gb = g;
      lola::detail::gram_into(a.A[std::size_t(i)].transpose(), g);
      ga = g;
    });
    lola::batched_spectra_from_grams(thrust::omp::par, n, r, b_grams.data(), a_grams.data(),
                                     scales.data(), sigma.data(), work.data(), status.data());
    benchmark::DoNotOptimize(sigma.data());
    benchmark::ClobberMemory();
  });
  // The standard adapters' random factors are well-conditioned: every module takes the Gram route.
  if (std::count(status.begin(), status.end(), int(lola::detail::gram_spectrum::computed)) != n)
    state.SkipWithError("a module left the Gram route; the batched time would not cover it");
}
#endif

void dense_bdcsvd_values(benchmark::State& state, adapter_spec spec, int threads) {
  const adapter& a = build(spec);
  std::vector<Eigen::VectorXf> sigma(a.delta.size());
  const double floor = lola_bench::read_floor_seconds(a.buffers);
  lola_bench::set_threads(threads);
  lola_bench::run_against_floor(state, a.bytes, floor, [&] {
    lola::parallel_for(a.size(), [&](lola::index i) {
      const Eigen::MatrixXf W = lola::dense(a.delta[std::size_t(i)]);
      sigma[std::size_t(i)] = Eigen::BDCSVD<Eigen::MatrixXf>(W).singularValues();  // values only
    });
    benchmark::DoNotOptimize(sigma.data());
    benchmark::ClobberMemory();
  });
}

/// Adapters whose dense alternative finishes one iteration in reasonable time on a small machine:
/// the SD-1.4 UNet (64 modules of at most 1280×1280, about 5 s an iteration at one thread on a
/// 2-core EPYC; the dense cost does not depend on r, so only r=4 is run) and the 28 Qwen2 v_proj
/// modules (256×1536, about 0.5 s). Skipped, by extrapolation from those: the whole Qwen2 adapter
/// (28 × 1536² q_proj, over 10 s), Llama-2 (128 × 4096², about a quarter of an hour) and GPT-3
/// (96 × 12288², hours, and a 604 MB dense ΔW per module in flight).
bool has_dense_alternative(const std::string& name) {
  return name == "sd14_unet_adapter_r4" || name == "qwen2_1.5b_v_adapter";
}

// Grouped by area (write_results starts a section at each change of area).
const bool registered = [] {
  const auto adapters = standard_adapters();
  const auto each = [&](auto&& add) {
    for (const auto& spec : adapters)
      for (const int threads : {1, 2}) add(spec, threads, spec.name + "_t" + std::to_string(threads));
  };
  each([](const adapter_spec& spec, int threads, const std::string& shape) {
    benchmark::RegisterBenchmark(("svd_values/lola/" + shape).c_str(), lola_values, spec, threads)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("svd_values/lola_adapter/" + shape).c_str(), lola_adapter_values, spec,
                                 threads, true)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("svd_values/lola_adapter_one_by_one/" + shape).c_str(), lola_adapter_values,
                                 spec, threads, false)
        ->Unit(benchmark::kMillisecond);
#if defined(LOLA_BENCH_THRUST)
    benchmark::RegisterBenchmark(("svd_values/lola_thrust_omp/" + shape).c_str(), thrust_omp_values,
                                 spec, threads)
        ->Unit(benchmark::kMillisecond);
#endif
    if (has_dense_alternative(spec.name))
      benchmark::RegisterBenchmark(("svd_values/alt_dense_bdcsvd/" + shape).c_str(),
                                   dense_bdcsvd_values, spec, threads)
          ->Unit(benchmark::kMillisecond);
  });
  each([](const adapter_spec& spec, int threads, const std::string& shape) {
    benchmark::RegisterBenchmark(("canonical/lola/" + shape).c_str(), lola_canonical, spec,
                                 threads)
        ->Unit(benchmark::kMillisecond);
  });
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
