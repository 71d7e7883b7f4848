// GL-net inference (nn/gl_net.hpp) at the paper's shapes (research/papers.md §3.6, §4, §6):
//   gl_net/lola/<net>_N<batch>_tN                  forward() on the whole batch of N adapters
//   gl_net/alt_per_adapter_loop/<net>_N<batch>_tN  forward() called N times, one adapter each
// <net> names the adapter shape and the network (r rank, h equivariant width, K equivariant layers,
// H head width); `_tN` is the thread count (omp_set_num_threads). Counters use the wall clock.
//
//   sd14_unet_r4_h64_K1_H16   SD-1.4 UNet, L = 64 (papers.md §4), the CelebA-attributes run:
//                             flatten head, 5 outputs; N = 8, 64, 512, all distinct adapters.
//   qwen2_1.5b_r4_h16_K2_H256 Qwen2-1.5B, 28 × {q 1536×1536, v 256×1536} = 56 modules, the LLM
//                             run (main.py: h 16, K 2 `gl_mlp`, head 256, batch 32), 19 outputs
//                             (the source-membership task); 32 distinct adapters.
//   qwen2_1.5b_v_r4_h16_K2_H256  the same net on the 28 v_proj modules alone: the CI smoke shape.
//   gpt3_175b_r4_h16_K2_H16   the timing script's 175B setting (forward_timing.py: 96 modules of
//                             12288×12288, fast GL-net, h 16, K 2, batch 128). Its head width is
//                             hidden_dim_inv's default, which the notes do not record: H = 16 here,
//                             one output.
//
// Factors: B d×r and A r×k, N(0, 0.02) floats, held in io::adapter like a loaded PEFT file; module
// names are zero-padded so the lexicographic key order GL-net pairs modules in is the build order.
// Each adapter of a batch is a distinct copy except for GPT-3: one adapter is 96·2·12288·4 floats
// = 37.7 MB, so 128 distinct ones would be 4.8 GB; the batch cycles through a pool of 16 (604 MB).
// 15 other adapters (566 MB) are read between two references to the same one, more than any
// last-level cache (this VM reports 480 MiB), so every reference streams from DRAM.
//
// Bytes: the factor bytes of the batch (each reference counted). The counter weight_bytes gives
// the network's weights (every equivariant layer and the head's matrices), which are read at least
// once per forward. Floor (one thread, this run): one vectorised read of every referenced factor
// buffer in batch order, plus one read of the weights. floor_ratio = wall time ÷ that floor.
// adapters_per_second = N ÷ wall time. GFLOP/s counts, per adapter, the first equivariant layer
// 2·h·Σ_j(n_j + m_j)·r and the head's first linear 2·H·F (F = L·h² flatten); the K − 1 hidden
// layers (4·h²·r per module each), the pooled products P_j (2·h²·r per module) and the last linear
// are left out: under 4 % of the total at every shape here.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <lola/io/adapter.hpp>
#include <lola/nn/gl_net.hpp>

#include "bench_support.hpp"


namespace {

namespace io = lola::io;
namespace nn = lola::nn;

/// A GL-net benchmark shape: the adapter's modules (d, k), the rank and the network's sizes.
struct net_spec {
  std::string name;
  std::vector<std::pair<int, int>> modules;  // (d, k) = (n_j, m_j)
  int r, h, K, H, outputs;
  int distinct;  // adapters in the pool a batch cycles through
};

std::vector<std::pair<int, int>> repeat(int times, const std::vector<std::pair<int, int>>& per_layer) {
  std::vector<std::pair<int, int>> out;
  for (int i = 0; i < times; ++i) out.insert(out.end(), per_layer.begin(), per_layer.end());
  return out;
}

/// SD-1.4 UNet (research/papers.md §4): 16 transformer blocks, C = 320 in 5, 640 in 5, 1280 in 6;
/// each has three C×C modules (attn1 to_q/to_v, attn2 to_q) and attn2.to_v, C×768. L = 64.
std::vector<std::pair<int, int>> sd14_unet() {
  std::vector<std::pair<int, int>> out;
  for (const auto& [c, blocks] : std::vector<std::pair<int, int>>{{320, 5}, {640, 5}, {1280, 6}})
    for (int b = 0; b < blocks; ++b) {
      for (int i = 0; i < 3; ++i) out.push_back({c, c});
      out.push_back({c, 768});
    }
  return out;
}

const net_spec sd14{"sd14_unet_r4_h64_K1_H16", sd14_unet(), 4, 64, 1, 16, 5, 512};
const net_spec qwen2{"qwen2_1.5b_r4_h16_K2_H256", repeat(28, {{1536, 1536}, {256, 1536}}), 4, 16, 2, 256,
                     19, 32};
const net_spec qwen2_v{"qwen2_1.5b_v_r4_h16_K2_H256", repeat(28, {{256, 1536}}), 4, 16, 2, 256, 19, 32};
const net_spec gpt3{"gpt3_175b_r4_h16_K2_H16", repeat(96, {{12288, 12288}}), 4, 16, 2, 16, 1, 16};

/// N(0, 0.02) floats to copy factors from: filling gigabytes from std::normal_distribution would
/// take longer than the benchmarks. Every factor is a slice at its own offset, so the adapters
/// are distinct in memory and (all but) distinct in value.
const std::vector<float>& gaussian_source() {
  static const std::vector<float> source = [] {
    std::vector<float> v(std::size_t(1) << 22);
    std::mt19937_64 rng(12345);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (auto& x : v) x = normal(rng);
    return v;
  }();
  return source;
}

void fill(float* out, std::size_t count, std::uint64_t& offset) {
  const auto& src = gaussian_source();
  offset = (offset * 6364136223846793005ULL + 1442695040888963407ULL);
  std::size_t at = static_cast<std::size_t>(offset >> 33) % src.size();
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(count - done, src.size() - at);
    std::copy_n(src.data() + at, n, out + done);
    done += n;
    at = 0;
  }
}

io::adapter<float> make_adapter(const net_spec& spec, std::uint64_t seed) {
  io::adapter<float> a;
  a.format = io::adapter_format::peft;
  a.modules.resize(spec.modules.size());
  for (std::size_t j = 0; j < spec.modules.size(); ++j) {
    auto& m = a.modules[j];
    const auto [d, k] = spec.modules[j];
    char name[32];
    std::snprintf(name, sizeof name, "module%03zu", j);
    m.name = name;
    m.B.resize(d, spec.r);
    m.A.resize(spec.r, k);
    fill(m.B.data(), std::size_t(m.B.size()), seed);
    fill(m.A.data(), std::size_t(m.A.size()), seed);
    m.scale = 1;
    m.B_shape = {std::uint64_t(d), std::uint64_t(spec.r)};
    m.A_shape = {std::uint64_t(spec.r), std::uint64_t(k)};
  }
  return a;
}

/// The network and its pool of adapters, built once per spec and kept (benchmarks run one after
/// another on this thread).
struct fixture {
  nn::gl_net<float> net;
  std::vector<io::adapter<float>> pool;
  std::vector<std::pair<const float*, lola::index>> weights;  // every weight matrix, for the floor
  std::int64_t weight_bytes = 0;
  std::int64_t adapter_bytes = 0;
  double flops_per_adapter = 0;
};

const fixture& build(const net_spec& spec) {
  return lola_bench::built_once<fixture>(spec.name, [&](fixture& f) {
    std::vector<lola::index> n, m;
    for (const auto& [d, k] : spec.modules) {
      n.push_back(d);
      m.push_back(k);
    }
    std::mt19937_64 rng(7);
    f.net = nn::gl_net<float>::random(n, m, spec.h, spec.K, spec.H, spec.outputs, nn::pooling::flatten, rng);
    const auto add = [&](const Eigen::MatrixXf& w) {
      f.weights.push_back({w.data(), w.size()});
      f.weight_bytes += std::int64_t(w.size()) * 4;
    };
    const auto add_layer = [&](const nn::equivariant_linear<float>& layer) {
      for (lola::index j = 0; j < layer.modules(); ++j) {
        add(layer.phi(j));
        add(layer.psi(j));
      }
    };
    add_layer(f.net.first);
    for (const auto& layer : f.net.hidden) add_layer(layer);
    add(f.net.head.linear1_weight);
    add(f.net.head.linear2_weight);

    f.pool.reserve(std::size_t(spec.distinct));
    for (int i = 0; i < spec.distinct; ++i)
      f.pool.push_back(make_adapter(spec, 1000003ULL * std::uint64_t(i + 1)));

    double sum_nm = 0;
    for (const auto& [d, k] : spec.modules) sum_nm += d + k;
    f.adapter_bytes = std::int64_t(sum_nm) * spec.r * 4;
    const double F = double(spec.modules.size()) * spec.h * spec.h;
    f.flops_per_adapter = 2.0 * spec.h * sum_nm * spec.r + 2.0 * spec.H * F;
  });
}

/// The floor: one vectorised read of every buffer, in order (a buffer listed twice is read twice).
double read_floor_seconds(const std::vector<std::pair<const float*, lola::index>>& buffers) {
  return lola_bench::fastest_seconds([&] {
    float total = 0;
    for (const auto& [data, size] : buffers) total += Eigen::Map<const Eigen::VectorXf>(data, size).sum();
    benchmark::DoNotOptimize(total);
  });
}

enum class variant { batched, per_adapter };

void gl_net_forward(benchmark::State& state, const net_spec* spec, int N, int threads, variant v) {
  const fixture& f = build(*spec);
  std::vector<const io::adapter<float>*> batch;
  std::vector<std::pair<const float*, lola::index>> buffers;
  for (int i = 0; i < N; ++i) {
    const auto& a = f.pool[std::size_t(i % spec->distinct)];
    batch.push_back(&a);
    for (const auto& m : a.modules) {
      buffers.push_back({m.B.data(), m.B.size()});
      buffers.push_back({m.A.data(), m.A.size()});
    }
  }
  buffers.insert(buffers.end(), f.weights.begin(), f.weights.end());
  lola_bench::set_threads(1);
  const double floor = read_floor_seconds(buffers);
  lola_bench::set_threads(threads);

  const nn::gl_net_options options;
  Eigen::MatrixXf out(N, f.net.outputs());
  const std::int64_t bytes = std::int64_t(N) * f.adapter_bytes;
  lola_bench::run_against_floor(state, bytes, floor, [&] {
    if (v == variant::batched) {
      out = f.net.forward(batch, options);
    } else {
      for (int i = 0; i < N; ++i)
        out.row(i) = f.net.forward(std::vector<const io::adapter<float>*>{batch[std::size_t(i)]}, options);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  });
  const double seconds = state.counters["floor_ratio"].value * floor;  // wall time per iteration
  state.counters["floor_seconds"] = floor;
  state.counters["weight_bytes"] = benchmark::Counter(double(f.weight_bytes), benchmark::Counter::kDefaults,
                                                      benchmark::Counter::kIs1024);
  state.counters["adapters_per_second"] = N / seconds;
  state.counters["GFLOP/s"] = N * f.flops_per_adapter / seconds * 1e-9;
  lola_bench::set_threads(1);
}

void add(const net_spec& spec, int N, int threads, variant v) {
  const std::string name = std::string("gl_net/") +
                           (v == variant::batched ? "lola" : "alt_per_adapter_loop") + "/" + spec.name +
                           "_N" + std::to_string(N) + "_t" + std::to_string(threads);
  auto* b = benchmark::RegisterBenchmark(name.c_str(), gl_net_forward, &spec, N, threads, v)
                ->Unit(benchmark::kMillisecond);
  // The iteration count follows the wall clock where other threads work (Google Benchmark
  // otherwise times the calling thread's CPU); the name then ends in /real_time.
  if (threads > 1) b->UseRealTime();
}

const bool registered = [] {
  for (const int N : {8, 64, 512}) add(sd14, N, 1, variant::batched);
  add(sd14, 64, 1, variant::per_adapter);
  // Two threads. gl_net runs the head's linear1 outside parallel_for, so Eigen 3.4 threads that
  // GEMM itself, and its threads busy-wait on each other at every depth panel: on a loaded 2-core
  // VM the SD row took 0.7–13 s against 0.2 s at one thread. Compare these rows on an idle machine.
  add(sd14, 64, 2, variant::batched);
  add(sd14, 64, 2, variant::per_adapter);
  add(qwen2, 32, 1, variant::batched);
  add(qwen2_v, 32, 1, variant::batched);
  add(qwen2_v, 32, 1, variant::per_adapter);
  // Over a second an iteration: Google Benchmark's first, one-iteration run already passes its
  // default 0.5 s minimum and is reported.
  add(gpt3, 128, 1, variant::batched);
  add(gpt3, 128, 2, variant::batched);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
