// Reading whole adapters: validating the safetensors header, and reading a PEFT adapter into
// float factors (header + pairing + conversion), from memory and from a file in the page cache;
// σ of a whole adapter from its file, as views reading their factors at open or on visit.
// Bytes: the file's size. Floor: copying the converted factors' bytes once into newly allocated
// memory (malloc, memcpy of the output size, free) — a reader that returns owned float factors
// must at least do that, page faults of fresh memory included; for F32 files it is exactly one read
// and one write of the data. (io::safetensors_view::map gives zero-copy views instead.)
#include <benchmark/benchmark.h>

#include <lola/features/adapter_spectra.hpp>
#include <lola/io/adapter_view.hpp>
#include <lola/io/load.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bench_support.hpp"

namespace {

namespace io = lola::io;

struct adapter_shape {
  std::string name;
  int modules, d, k, r;
};

// Whole adapters of the standard shapes (DESIGN.md §6).
std::vector<adapter_shape> adapters() {
  return {{"llama2_7b_qkvo_128modules", 128, 4096, 4096, 16},
          {"qwen2_1.5b_q_28modules", 28, 1536, 1536, 4},
          {"qwen2_1.5b_v_28modules", 28, 256, 1536, 4},
          {"sd14_attn_c1280_r32_16modules", 16, 1280, 1280, 32}};
}

std::vector<std::byte> adapter_image(const adapter_shape& s, io::dtype t) {
  std::vector<io::tensor> tensors;
  const Eigen::MatrixXf A = lola_bench::random_matrix(s.r, s.k, 1);
  const Eigen::MatrixXf B = lola_bench::random_matrix(s.d, s.r, 2);
  for (int m = 0; m < s.modules; ++m) {
    const std::string name = "base_model.model.model.layers." + std::to_string(m / 4) +
                             ".self_attn.proj" + std::to_string(m % 4);
    tensors.push_back(io::tensor::from_matrix(name + ".lora_A.weight", t,
                                              {std::uint64_t(s.r), std::uint64_t(s.k)}, A));
    tensors.push_back(io::tensor::from_matrix(name + ".lora_B.weight", t,
                                              {std::uint64_t(s.d), std::uint64_t(s.r)}, B));
  }
  return io::serialize_safetensors(tensors, {{"format", "pt"}});
}

std::int64_t float_output_bytes(const adapter_shape& s) {
  return std::int64_t(s.modules) * (s.d + s.k) * s.r * 4;
}

double copy_floor_seconds(std::int64_t bytes) {
  const std::vector<char> from(static_cast<std::size_t>(bytes), 1);
  return lola_bench::fastest_seconds([&] {
    char* to = static_cast<char*>(std::malloc(from.size()));
    std::memcpy(to, from.data(), from.size());
    benchmark::DoNotOptimize(to);
    benchmark::ClobberMemory();
    std::free(to);
  });
}

void parse_header(benchmark::State& state, adapter_shape s) {
  const auto image = adapter_image(s, io::dtype::F32);
  const auto header = static_cast<std::int64_t>(io::detail::load_le<std::uint64_t>(image.data()));
  // Floor: reading the header's bytes once.
  const double floor = lola_bench::fastest_seconds([&] {
    unsigned sum = 0;
    for (std::int64_t i = 0; i < header; ++i) sum += std::to_integer<unsigned>(image[8 + i]);
    benchmark::DoNotOptimize(sum);
  });
  lola_bench::run_against_floor(state, header, floor, [&] {
    auto view = io::safetensors_view::parse(image.data(), image.size(), "bench");
    benchmark::DoNotOptimize(view.tensors().data());
  });
}

void read_from_memory(benchmark::State& state, adapter_shape s, io::dtype t) {
  const auto image = adapter_image(s, t);
  const double floor = copy_floor_seconds(float_output_bytes(s));
  lola_bench::run_against_floor(state, static_cast<std::int64_t>(image.size()), floor, [&] {
    auto view = io::safetensors_view::parse(image.data(), image.size(), "bench");
    auto a = io::read_peft<float>(view);
    benchmark::DoNotOptimize(a.modules.data());
  });
}

void load_from_file(benchmark::State& state, adapter_shape s) {
  const auto image = adapter_image(s, io::dtype::F32);
  const std::string path = "/tmp/lola_bench_io_" + std::to_string(::getpid()) + ".safetensors";
  io::write_file_atomic(path, image.data(), image.size());
  const double floor = copy_floor_seconds(float_output_bytes(s));
  lola_bench::run_against_floor(state, static_cast<std::int64_t>(image.size()), floor, [&] {
    auto a = io::load_adapter<float>(path);
    benchmark::DoNotOptimize(a.modules.data());
  });
  std::remove(path.c_str());
}

// σ of every module of a BF16 adapter file in double, as `lola inspect` computes them: the file
// opened as an io::adapter_view, its factors read at open (the whole file into an image, checked
// there) or on visit (each module's factors into per-thread buffers as σ reads them), then
// adapter_singular_values. Bytes: the file's size. Floor: reading the file once (pread into a
// buffer allocated and faulted in beforehand), which any reader of the factors must do.
void view_sigma_from_file(benchmark::State& state, adapter_shape s, io::factor_reads reads) {
  const auto image = adapter_image(s, io::dtype::BF16);
  const std::string path = "/tmp/lola_bench_io_view_" + std::to_string(::getpid()) + ".safetensors";
  io::write_file_atomic(path, image.data(), image.size());
  std::vector<std::byte> buffer(image.size());
  const double floor = lola_bench::fastest_seconds([&] {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), 0);
    ::close(fd);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  });
  lola_bench::run_against_floor(state, static_cast<std::int64_t>(image.size()), floor, [&] {
    const auto a = io::adapter_view::open(path, {}, reads);
    auto sigma = lola::adapter_singular_values<double>(a);
    benchmark::DoNotOptimize(sigma.data());
  });
  std::remove(path.c_str());
}

// Writing many tiny tensors: n tensors of 2×2 F32 (a PEFT adapter of n/2 tiny modules) serialized
// in the reference layout, header built, dumped and padded, data packed. Bytes: the image's size.
// Floor: copying those bytes once into newly allocated memory, which a serializer that returns an
// owned image must at least do. Linear in n since json_value objects keep a key index (a header
// built by a linear-search set() took tens of seconds for 40,000 tensors).
void serialize_many(benchmark::State& state, int n) {
  std::vector<io::tensor> tensors;
  const Eigen::MatrixXf values = lola_bench::random_matrix(2, 2, 3);
  for (int i = 0; i < n; ++i)
    tensors.push_back(io::tensor::from_matrix("base_model.model.model.layers." + std::to_string(i / 2) +
                                                  ".mlp.down_proj.lora_" + (i % 2 ? "B" : "A") + ".weight",
                                              io::dtype::F32, {2, 2}, values));
  const auto bytes = static_cast<std::int64_t>(io::serialize_safetensors(tensors).size());
  lola_bench::run_against_floor(state, bytes, copy_floor_seconds(bytes), [&] {
    auto image = io::serialize_safetensors(tensors, {{"format", "pt"}});
    benchmark::DoNotOptimize(image.data());
  });
}

const bool registered = [] {
  for (int n : {10000, 40000})
    benchmark::RegisterBenchmark(("io/serialize_many_tiny_tensors/" + std::to_string(n)).c_str(), serialize_many, n)
        ->Unit(benchmark::kMillisecond);
  for (const auto& s : adapters()) {
    benchmark::RegisterBenchmark(("io/parse_header/" + s.name).c_str(), parse_header, s)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("io/read_peft_f32/" + s.name).c_str(), read_from_memory, s,
                                 io::dtype::F32)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("io/read_peft_bf16/" + s.name).c_str(), read_from_memory, s,
                                 io::dtype::BF16)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("io/load_file_f32/" + s.name).c_str(), load_from_file, s)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("io/view_sigma_bf16_read_at_open/" + s.name).c_str(), view_sigma_from_file, s,
                                 io::factor_reads::at_open)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("io/view_sigma_bf16_read_on_visit/" + s.name).c_str(), view_sigma_from_file, s,
                                 io::factor_reads::on_visit)
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
