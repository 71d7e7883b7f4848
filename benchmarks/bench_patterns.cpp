// PEFT's rank_pattern / alpha_pattern keys (io/pattern.hpp): compiling a config's keys once and
// matching every module name, in time linear in the names.
//
// Module names are Llama-like, model.layers.<L>.self_attn.{q,k,v,o}_proj and
// model.layers.<L>.mlp.{gate,up,down}_proj; literal keys are the escaped full names lola writes
// (peft_config_json, what `lola resize --sv-fro` gives a large adapter), in reverse order, so
// key-by-key matching walks half the list on average. Regex keys are layers\.<L>\.self_attn\.(q|v)_proj.
// Bytes: the module-name bytes matched. Floor: hashing the same name bytes once (std::hash).
//
//   patterns/compile_match/<shape>   pattern_set built from the keys, then every name matched
//   patterns/alt_std_regex/<shape>   the previous code: a std::regex built per (module, key)
//   patterns/catastrophic/<shape>    (a*)*b, (a|a)*c, (.*)*x on one 100,000-byte name
//   patterns/load_adapter/<shape>    io::load_adapter of a PEFT directory of 10,000 modules whose
//                                    config lists every module in rank_pattern and alpha_pattern;
//                                    bytes: the two files; floor: reading both files once
#include <benchmark/benchmark.h>

#include <lola/io/load.hpp>
#include <lola/io/pattern.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"

namespace {

namespace io = lola::io;

std::vector<std::string> module_names(int count) {
  static const char* const parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",   "mlp.up_proj",
                                      "mlp.down_proj"};
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i)
    names.push_back("model.layers." + std::to_string(i / 7) + "." + parts[i % 7]);
  return names;
}

/// Qwen2-1.5B's 28 v_proj modules (the CI smoke shape).
std::vector<std::string> qwen2_v_names() {
  std::vector<std::string> names;
  for (int l = 0; l < 28; ++l) names.push_back("model.layers." + std::to_string(l) + ".self_attn.v_proj");
  return names;
}

/// The escaped full names, last module first; then `regex` keys put before them.
std::vector<std::string> pattern_keys(const std::vector<std::string>& names, int regex) {
  std::vector<std::string> keys;
  for (int l = 0; l < regex; ++l) keys.push_back("layers\\." + std::to_string(l) + "\\.self_attn\\.(q|v)_proj");
  for (auto it = names.rbegin(); it != names.rend(); ++it) keys.push_back(io::detail::regex_escape(*it));
  return keys;
}

std::int64_t name_bytes(const std::vector<std::string>& names) {
  std::int64_t bytes = 0;
  for (const auto& n : names) bytes += static_cast<std::int64_t>(n.size());
  return bytes;
}

/// Floor: hashing every name's bytes once.
double hash_floor_seconds(const std::vector<std::string>& names) {
  return lola_bench::fastest_seconds([&] {
    std::size_t h = 0;
    for (const auto& n : names) h ^= std::hash<std::string_view>()(n);
    benchmark::DoNotOptimize(h);
  });
}

void compile_match(benchmark::State& state, std::vector<std::string> names, int regex) {
  const auto keys = pattern_keys(names, regex);
  lola_bench::run_against_floor(state, name_bytes(names), hash_floor_seconds(names), [&] {
    const io::pattern_set set(keys, "bench");
    std::size_t found = 0;
    for (const auto& n : names) found += set.find(n) != io::pattern_set::npos;
    if (found != names.size()) state.SkipWithError("a module matched no key");
    benchmark::DoNotOptimize(found);
  });
}

/// The code this replaced (peft_config::match before io/pattern.hpp): per module, a std::regex
/// compiled for each key in order until one matches.
void alt_std_regex(benchmark::State& state, std::vector<std::string> names) {
  const auto keys = pattern_keys(names, 0);
  lola_bench::run_against_floor(state, name_bytes(names), hash_floor_seconds(names), [&] {
    std::size_t found = 0;
    for (const auto& n : names)
      for (const auto& k : keys)
        if (std::regex_match(n, std::regex("(.*\\.)?(" + k + ")", std::regex::ECMAScript))) {
          ++found;
          break;
        }
    if (found != names.size()) state.SkipWithError("a module matched no key");
    benchmark::DoNotOptimize(found);
  });
}

void catastrophic(benchmark::State& state) {
  const std::vector<std::string> names = {std::string(100000, 'a')};
  const std::vector<std::string> keys = {"(a*)*b", "(a|a)*c", "(.*)*x"};
  lola_bench::run_against_floor(state, name_bytes(names), hash_floor_seconds(names), [&] {
    const io::pattern_set set(keys, "bench");
    const std::size_t found = set.find(names[0]);
    if (found != io::pattern_set::npos) state.SkipWithError("matched");
    benchmark::DoNotOptimize(found);
  });
}

/// A PEFT directory of 10,000 modules (ranks 1..16, a scale per module) with the config lola
/// writes for it, in a temporary directory removed at exit.
struct adapter_dir {
  std::string path;
  std::int64_t bytes = 0;
  ~adapter_dir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

void write_adapter_dir(adapter_dir& dir) {
  constexpr int count = 10000;
  io::adapter<float> a;
  a.format = io::adapter_format::peft;
  a.config = io::json_value::object();
  std::vector<io::tensor> tensors;
  const auto names = module_names(count);
  for (int i = 0; i < count; ++i) {
    io::adapter_module<float> m;
    m.name = "base_model.model." + names[static_cast<std::size_t>(i)];
    const int r = 1 + i % 16;
    m.A = io::adapter_module<float>::matrix::Constant(r, 2, 0.5f);
    m.B = io::adapter_module<float>::matrix::Constant(3, r, 0.25f);
    m.scale = 1.0 + i / 1024.0;
    tensors.push_back(io::tensor::from_matrix(m.name + ".lora_A.weight", io::dtype::F32, {std::uint64_t(r), 2}, m.A));
    tensors.push_back(io::tensor::from_matrix(m.name + ".lora_B.weight", io::dtype::F32, {3, std::uint64_t(r)}, m.B));
    a.modules.push_back(std::move(m));
  }
  dir.path = "/tmp/lola_bench_patterns_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir.path);
  const std::string config = io::peft_config_json(a).dump(2);
  const auto image = io::serialize_safetensors(tensors, {{"format", "pt"}});
  io::write_file_atomic(dir.path + "/adapter_config.json", config);
  io::write_file_atomic(dir.path + "/adapter_model.safetensors", image.data(), image.size());
  dir.bytes = static_cast<std::int64_t>(config.size() + image.size());
}

void load_adapter(benchmark::State& state) {
  const auto& dir = lola_bench::built_once<adapter_dir>("patterns_10000", write_adapter_dir);
  const std::vector<std::string> files = {dir.path + "/adapter_config.json", dir.path + "/adapter_model.safetensors"};
  std::vector<std::vector<char>> buffers;
  for (const auto& f : files) buffers.emplace_back(std::filesystem::file_size(f));
  const double floor = lola_bench::fastest_seconds([&] {
    for (std::size_t i = 0; i < files.size(); ++i) {
      std::ifstream in(files[i], std::ios::binary);
      in.read(buffers[i].data(), static_cast<std::streamsize>(buffers[i].size()));
    }
    benchmark::ClobberMemory();
  });
  lola_bench::run_against_floor(state, dir.bytes, floor, [&] {
    const auto a = io::load_adapter<float>(dir.path);
    if (a.modules.size() != 10000) state.SkipWithError("wrong module count");
    benchmark::DoNotOptimize(a.modules.data());
  });
}

const bool registered = [] {
  benchmark::RegisterBenchmark("patterns/compile_match/qwen2_1.5b_v_28modules_28keys", compile_match,
                               qwen2_v_names(), 0)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("patterns/compile_match/10000modules_10000keys", compile_match, module_names(10000), 0)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("patterns/compile_match/10000modules_10000keys_100regex", compile_match,
                               module_names(10000), 100)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("patterns/compile_match/1000modules_1000keys", compile_match, module_names(1000), 0)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("patterns/alt_std_regex/1000modules_1000keys", alt_std_regex, module_names(1000))
      ->Unit(benchmark::kMillisecond)
      ->Iterations(1);
  benchmark::RegisterBenchmark("patterns/catastrophic/100000byte_name_3keys", catastrophic)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("patterns/load_adapter/10000modules_10000keys", load_adapter)
      ->Unit(benchmark::kMillisecond);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
