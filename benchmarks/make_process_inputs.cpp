// Writes the adapters that scripts/bench-process.sh runs the `lola` tool on, with lola's own writer:
//   OUT/llama_bf16/        a Llama-2-7B-like PEFT directory: q/k/v/o of 32 layers, 4096×4096,
//                          r = 16, BF16 factors (the dtype most published adapters use), 34 MB
//   OUT/patterns_<N>/      a PEFT directory of N small modules (64×64) whose ranks cycle through
//                          1…8 and whose alphas cycle through three values, so adapter_config.json
//                          carries a rank_pattern and an alpha_pattern key for most modules — the
//                          config `lola resize --sv-fro` itself writes for a large adapter
//   OUT/qwen_64/a<i>/      64 Qwen2-1.5B-like PEFT directories (q_proj 1536×1536 and v_proj
//                          256×1536 of 28 layers, r = 8, BF16, 2.2 MB each): a LoL dataset in
//                          miniature, for `lola features` over many adapters
// Usage: lola_make_process_inputs OUT N...
#include <lola/io/load.hpp>

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

namespace io = lola::io;
using module = io::adapter_module<float>;

module random_module(std::string name, int d, int k, int r, double scale, io::dtype t,
                     std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  module m;
  m.name = std::move(name);
  m.B = module::matrix(d, r);
  m.A = module::matrix(r, k);
  for (auto* f : {&m.B, &m.A})
    for (Eigen::Index i = 0; i < f->size(); ++i) f->data()[i] = normal(rng) / 64;
  m.scale = scale;
  m.B_dtype = m.A_dtype = t;
  return m;
}

void write_llama(const std::string& dir, std::mt19937_64& rng) {
  io::adapter<float> a;
  for (int layer = 0; layer < 32; ++layer)
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"})
      a.modules.push_back(random_module("base_model.model.model.layers." + std::to_string(layer) +
                                            ".self_attn." + proj,
                                        4096, 4096, 16, 2.0, io::dtype::BF16, rng));
  io::save_adapter(a, dir, io::save_form::directory);
}

void write_patterns(const std::string& dir, int n, std::mt19937_64& rng) {
  io::adapter<float> a;
  for (int i = 0; i < n; ++i) {
    const int r = 1 + i % 8;
    const double alpha = 4.0 * (1 + (i / 8) % 3);
    a.modules.push_back(random_module("base_model.model.model.layers." + std::to_string(i / 8) +
                                          ".mlp.proj_" + std::to_string(i % 8),
                                      64, 64, r, alpha / r, io::dtype::F32, rng));
  }
  io::save_adapter(a, dir, io::save_form::directory);
}

void write_qwen(const std::string& dir, std::mt19937_64& rng) {
  ::mkdir(dir.c_str(), 0777);
  for (int n = 0; n < 64; ++n) {
    io::adapter<float> a;
    for (int layer = 0; layer < 28; ++layer) {
      const std::string prefix = "base_model.model.model.layers." + std::to_string(layer) + ".self_attn.";
      a.modules.push_back(random_module(prefix + "q_proj", 1536, 1536, 8, 2.0, io::dtype::BF16, rng));
      a.modules.push_back(random_module(prefix + "v_proj", 256, 1536, 8, 2.0, io::dtype::BF16, rng));
    }
    char name[16];
    std::snprintf(name, sizeof name, "/a%02d", n);
    io::save_adapter(a, dir + name, io::save_form::directory);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT [N...]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  ::mkdir(out.c_str(), 0777);
  std::mt19937_64 rng(20261201);
  try {
    write_llama(out + "/llama_bf16", rng);
    write_qwen(out + "/qwen_64", rng);
    for (int i = 2; i < argc; ++i)
      write_patterns(out + "/patterns_" + argv[i], std::atoi(argv[i]), rng);
  } catch (const lola::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
