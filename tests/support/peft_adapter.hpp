#pragma once
// Small PEFT adapters on disk for the tests of files and folders: q_proj modules with F32 factors,
// written by lola's own safetensors writer (whose format the io tests check separately).

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/io/file.hpp"
#include "lola/io/safetensors.hpp"

namespace lola_test {

/// `modules` modules named base_model.model.model.layers.<m>.self_attn.q_proj, B d×r and A r×k,
/// entries uniform in [−1, 1] drawn from `seed`.
inline std::vector<lola::io::tensor> random_peft_tensors(int modules, int d, int k, int r, unsigned seed) {
  namespace io = lola::io;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const auto random = [&](int rows, int cols) {
    Eigen::MatrixXf x(rows, cols);
    for (float& v : x.reshaped()) v = uniform(rng);
    return x;
  };
  std::vector<io::tensor> out;
  for (int m = 0; m < modules; ++m) {
    const std::string name = "base_model.model.model.layers." + std::to_string(m) + ".self_attn.q_proj";
    out.push_back(io::tensor::from_matrix(name + ".lora_A.weight", io::dtype::F32,
                                          {std::uint64_t(r), std::uint64_t(k)}, random(r, k)));
    out.push_back(io::tensor::from_matrix(name + ".lora_B.weight", io::dtype::F32,
                                          {std::uint64_t(d), std::uint64_t(r)}, random(d, r)));
  }
  return out;
}

/// adapter_config.json for the adapters of random_peft_tensors with r = 4: scale alpha/r = 2.
inline const std::string peft_config_text =
    R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})" "\n";

/// A PEFT folder at dir (created): adapter_model.safetensors with `modules` rank-4 modules d×k, and
/// adapter_config.json.
inline void write_peft_dir(const std::string& dir, int modules, int d, int k, unsigned seed = 7) {
  std::filesystem::create_directories(dir);
  lola::io::write_safetensors(dir + "/adapter_model.safetensors", random_peft_tensors(modules, d, k, 4, seed));
  lola::io::write_file_atomic(dir + "/adapter_config.json", peft_config_text);
}

}  // namespace lola_test
