// LoL dataset featurization (features/featurize.hpp): a batch of N adapters of one standard layout
// to the N×F feature matrix, for every kind, at 1 and 2 threads (the `_tN` suffix of the shape):
//   featurize/<kind>/<adapter>_n<N>_tT      featurize(batch, kind) for raw, svd, align, canonical
//                                           over N = 32 adapters, and dense; the output is allocated
//                                           per call, as a user's call does (for outputs above glibc's
//                                           32 MB mmap threshold that includes faulting fresh pages);
//   featurize/raw_into/…, dense_into/…      featurize_into one output reused across calls;
//   featurize/alt_dense_then_copy/…         the obvious alternative to dense: lola::dense(ΔW) per
//                                           module into a d×k temporary, copied into the row of an
//                                           output allocated per call (compare with dense).
// Dense runs at small N only: one SD-1.4 UNet adapter is 46,755,840 features (187 MB in float), so
// N = 2 there and N = 4 on the Qwen2 v_proj modules (11 M features each); the whole Qwen2 adapter
// (77 M dense features, 308 MB per adapter) is not run dense.
// Bytes: the float B and A factors of the N adapters, which every kind reads once; the floor,
// measured in this run on one thread, is one vectorised read of those factors (read_floor_seconds).
// Dense must also write N·F values: its bytes include them and its floor reads the factors and
// reads and writes a buffer of the output's size once (read_write_floor_seconds). The align template
// (one more adapter) is not counted. Counter adapters_per_second = N ÷ time per iteration.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <lola/backend/eigen/dense.hpp>
#include <lola/core/parallel.hpp>
#include <lola/expr/low_rank.hpp>
#include <lola/features/featurize.hpp>
#include <lola/io/adapter.hpp>

#include "bench_support.hpp"


namespace {

namespace io = lola::io;

/// A module of a standard adapter: its PEFT name and shape.
struct named_shape {
  std::string name;
  int d, k, r;
};

struct adapter_spec {
  std::string name;
  std::vector<named_shape> modules;
};

/// Qwen2-1.5B (DESIGN.md §6): q 1536×1536 and v 256×1536 in 28 layers, r = 4.
std::vector<named_shape> qwen2(bool with_q) {
  std::vector<named_shape> out;
  for (int layer = 0; layer < 28; ++layer) {
    const std::string prefix = "base_model.model.model.layers." + std::to_string(layer) + ".self_attn.";
    if (with_q) out.push_back({prefix + "q_proj", 1536, 1536, 4});
    out.push_back({prefix + "v_proj", 256, 1536, 4});
  }
  return out;
}

/// SD-1.4 UNet attention (bench_svd.cpp, research/papers.md §4): 16 transformer blocks, C = 320 in
/// 5, 640 in 5, 1280 in 6; attn1 to_q/to_v and attn2 to_q are C×C, attn2 to_v is C×768. L = 64.
std::vector<named_shape> sd14_unet(int r) {
  std::vector<named_shape> out;
  int block = 0;
  for (const auto& [c, blocks] : std::vector<std::pair<int, int>>{{320, 5}, {640, 5}, {1280, 6}})
    for (int b = 0; b < blocks; ++b, ++block) {
      const std::string prefix =
          "base_model.model.unet.transformer_blocks." + std::to_string(block) + ".";
      out.push_back({prefix + "attn1.to_q", c, c, r});
      out.push_back({prefix + "attn1.to_v", c, c, r});
      out.push_back({prefix + "attn2.to_q", c, c, r});
      out.push_back({prefix + "attn2.to_v", c, 768, r});
    }
  return out;
}

std::vector<adapter_spec> standard_adapters() {
  return {{"qwen2_1.5b_adapter", qwen2(true)},
          // The 28 v_proj modules alone: the quick case (and the CI smoke run's filter).
          {"qwen2_1.5b_v_adapter", qwen2(false)},
          {"sd14_unet_adapter_r4", sd14_unet(4)}};
}

constexpr int batch_size = 32;

/// batch_size adapters of one layout with distinct random factors, a template, and column-major
/// copies of every factor for the floor (the same number of bytes; io's factors are row-major).
struct batch {
  std::vector<io::adapter<float>> adapters;
  io::adapter<float> templ;
  std::vector<Eigen::MatrixXf> copies;
  std::int64_t bytes_per_adapter = 0;

  std::vector<const io::adapter<float>*> first(int n) const {
    std::vector<const io::adapter<float>*> out;
    for (int i = 0; i < n; ++i) out.push_back(&adapters[std::size_t(i)]);
    return out;
  }
  /// The factor copies of the first n adapters.
  std::vector<const Eigen::MatrixXf*> buffers(int n) const {
    const std::size_t per_adapter = copies.size() / adapters.size();
    std::vector<const Eigen::MatrixXf*> out;
    for (std::size_t i = 0; i < per_adapter * std::size_t(n); ++i) out.push_back(&copies[i]);
    return out;
  }
};

io::adapter<float> random_adapter(const adapter_spec& spec, std::uint64_t seed,
                                  std::vector<Eigen::MatrixXf>* copies) {
  io::adapter<float> a;
  a.format = io::adapter_format::peft;
  for (const auto& s : spec.modules) {
    io::adapter_module<float> m;
    m.name = s.name;
    Eigen::MatrixXf B = lola_bench::random_matrix(s.d, s.r, seed++);
    Eigen::MatrixXf A = lola_bench::random_matrix(s.r, s.k, seed++);
    m.B = B;
    m.A = A;
    m.scale = 2.0;
    a.modules.push_back(std::move(m));
    if (copies) {
      copies->push_back(std::move(B));
      copies->push_back(std::move(A));
    }
  }
  return a;
}

/// Built once per layout and kept: the benchmarks run one after another on this thread.
const batch& build(const adapter_spec& spec) {
  return lola_bench::built_once<batch>(spec.name, [&](batch& b) {
    b.copies.reserve(spec.modules.size() * 2 * batch_size);
    for (int i = 0; i < batch_size; ++i)
      b.adapters.push_back(random_adapter(spec, 1000003ull * std::uint64_t(i + 1), &b.copies));
    b.templ = random_adapter(spec, 7, nullptr);
    for (const auto& s : spec.modules) b.bytes_per_adapter += std::int64_t(s.d + s.k) * s.r * 4;
  });
}

lola::featurize_options<float> options_for(lola::feature_kind kind, const batch& b) {
  lola::featurize_options<float> options;
  options.kind = kind;
  options.templ = &b.templ;
  options.max_elements = std::uint64_t(1) << 32;
  return options;
}

/// Reports adapters_per_second from the per-iteration time run_against_floor measured.
void report_adapters(benchmark::State& state, int n, double floor) {
  const double per_iteration = state.counters["floor_ratio"] * floor;
  state.counters["adapters_per_second"] = n / per_iteration;
}

/// featurize: the output allocated per call, as a user's call would; into: featurize_into one
/// output reused across calls; alt_dense_then_copy: see the file comment (allocating, like featurize).
enum class variant { allocate, into, alt_dense_then_copy };

void featurize_batch(benchmark::State& state, adapter_spec spec, lola::feature_kind kind,
                     variant how, int n, int threads) {
  const batch& b = build(spec);
  const auto adapters = b.first(n);
  const auto options = options_for(kind, b);
  const auto blocks = lola::feature_layout(b.adapters.front(), options);
  const lola::index L = static_cast<lola::index>(blocks.size());
  const lola::index F = blocks.back().offset + blocks.back().size;
  // The reused output of `into`, which for dense is also the floor's output-sized buffer (N×F
  // row-major is the memory of an F×N column-major matrix).
  Eigen::MatrixXf reused;
  if (how == variant::into || kind == lola::feature_kind::dense) reused = Eigen::MatrixXf::Zero(F, n);
  Eigen::Map<lola::feature_matrix<float>> reused_rows(reused.data(), n, F);
  std::int64_t bytes = b.bytes_per_adapter * n;
  double floor = 0;
  if (kind == lola::feature_kind::dense) {
    floor = lola_bench::read_write_floor_seconds(reused, b.buffers(n));
    bytes += std::int64_t(F) * n * 4;
  } else {
    floor = lola_bench::read_floor_seconds(b.buffers(n));
  }
  lola_bench::set_threads(threads);
  switch (how) {
    case variant::allocate:
      lola_bench::run_against_floor(state, bytes, floor, [&] {
        auto features = lola::featurize(adapters, options);
        benchmark::DoNotOptimize(features.data());
        benchmark::ClobberMemory();
      });
      break;
    case variant::into:
      lola_bench::run_against_floor(state, bytes, floor, [&] {
        lola::featurize_into(adapters, options, reused_rows);
        benchmark::ClobberMemory();
      });
      break;
    case variant::alt_dense_then_copy:
      lola_bench::run_against_floor(state, bytes, floor, [&] {
        lola::feature_matrix<float> features(n, F);
        lola::parallel_for(n * L, [&](lola::index item) {
          const auto& block = blocks[std::size_t(item % L)];
          const auto& m = *adapters[std::size_t(item / L)]->find(block.name);
          const Eigen::MatrixXf W = lola::dense(lola::factor(m.B, m.A));
          Eigen::Map<lola::feature_matrix<float>>(&features(item / L, block.offset), m.rows(),
                                                  m.cols()) = W;
        });
        benchmark::DoNotOptimize(features.data());
        benchmark::ClobberMemory();
      });
      break;
  }
  report_adapters(state, n, floor);
}

/// The batch size of the dense variants, by layout.
int dense_batch(const std::string& name) {
  if (name == "sd14_unet_adapter_r4") return 2;
  if (name == "qwen2_1.5b_v_adapter") return 4;
  return 0;  // none
}

// Grouped by area (write_results starts a section at each change of area).
const bool registered = [] {
  using lola::feature_kind;
  for (const auto& spec : standard_adapters())
    for (const int threads : {1, 2}) {
      const auto add = [&](const std::string& label, feature_kind kind, variant how, int n) {
        const std::string name = "featurize/" + label + "/" + spec.name + "_n" +
                                 std::to_string(n) + "_t" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), featurize_batch, spec, kind, how, n, threads)
            ->Unit(benchmark::kMillisecond);
      };
      for (auto kind : {feature_kind::raw, feature_kind::svd, feature_kind::align,
                        feature_kind::canonical})
        add(lola::to_string(kind), kind, variant::allocate, batch_size);
      add("raw_into", feature_kind::raw, variant::into, batch_size);
      if (const int n = dense_batch(spec.name); n > 0) {
        add("dense", feature_kind::dense, variant::allocate, n);
        add("dense_into", feature_kind::dense, variant::into, n);
        add("alt_dense_then_copy", feature_kind::dense, variant::alt_dense_then_copy, n);
      }
    }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
