// Writes small example adapters for the demo and the command-line tests, with lola's own writer:
//   OUT_DIR/peft/            a PEFT directory: 4 attention projections of a 2-layer 256-wide model,
//                            r = 8, lora_alpha = 16, F32, one module at r = 4 via rank_pattern
//   OUT_DIR/kohya.safetensors  a kohya file: 3 modules (one 3x3 conv), F16 factors, alpha 4 in BF16
// Factors have decaying spectra in arbitrary GL(r) coordinates, like trained adapters.
#include <lola/core/random.hpp>
#include <lola/io/file.hpp>
#include <lola/io/json.hpp>
#include <lola/io/safetensors.hpp>

#include <Eigen/LU>

#include <sys/stat.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

namespace io = lola::io;
using matrix = Eigen::MatrixXd;

// B (d×r) and A (r×k) with σᵢ(B·A) = 1/i, then moved by a random G of condition 20.
std::pair<matrix, matrix> random_factors(int d, int k, int r, std::mt19937_64& rng) {
  const matrix U = lola::random_stiefel<double>(d, r, rng);
  const matrix V = lola::random_stiefel<double>(k, r, rng);
  Eigen::VectorXd sigma(r);
  for (int i = 0; i < r; ++i) sigma(i) = 1.0 / (i + 1);
  const matrix G = lola::random_gl<double>(r, 20.0, rng);
  return {U * sigma.asDiagonal() * G, G.partialPivLu().solve(V.transpose())};
}

void write_peft(const std::string& dir, std::mt19937_64& rng) {
  ::mkdir(dir.c_str(), 0777);
  std::vector<io::tensor> tensors;
  for (int layer = 0; layer < 2; ++layer)
    for (const char* proj : {"q_proj", "v_proj"}) {
      const std::string name = "base_model.model.model.layers." + std::to_string(layer) +
                               ".self_attn." + proj;
      const int r = (layer == 1 && std::string(proj) == "v_proj") ? 4 : 8;
      const int d = std::string(proj) == "q_proj" ? 256 : 64;
      auto [B, A] = random_factors(d, 256, r, rng);
      tensors.push_back(io::tensor::from_matrix(name + ".lora_A.weight", io::dtype::F32,
                                                {std::uint64_t(r), 256}, A));
      tensors.push_back(io::tensor::from_matrix(name + ".lora_B.weight", io::dtype::F32,
                                                {std::uint64_t(d), std::uint64_t(r)}, B));
    }
  io::write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  io::json_value config = io::json_value::object();
  config.set("peft_type", "LORA");
  config.set("base_model_name_or_path", "example/tiny-llama");
  config.set("r", 8);
  config.set("lora_alpha", 16);
  io::json_value ranks = io::json_value::object();
  ranks.set("layers.1.self_attn.v_proj", 4);
  config.set("rank_pattern", std::move(ranks));
  config.set("target_modules", io::json_value::array());
  config.find("target_modules")->push_back("q_proj");
  config.find("target_modules")->push_back("v_proj");
  io::write_file_atomic(dir + "/adapter_config.json", config.dump(2) + "\n");
}

void write_kohya(const std::string& path, std::mt19937_64& rng) {
  std::vector<io::tensor> tensors;
  auto add = [&](const std::string& name, int d, int k, int r, std::vector<std::uint64_t> down,
                 std::vector<std::uint64_t> up) {
    auto [B, A] = random_factors(d, k, r, rng);
    tensors.push_back(io::tensor::from_matrix(name + ".lora_down.weight", io::dtype::F16, down, A));
    tensors.push_back(io::tensor::from_matrix(name + ".lora_up.weight", io::dtype::F16, up, B));
    Eigen::Matrix<double, 1, 1> alpha;
    alpha(0, 0) = 4;
    tensors.push_back(io::tensor::from_matrix(name + ".alpha", io::dtype::BF16, {}, alpha));
  };
  add("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320, 320, 8, {8, 320},
      {320, 8});
  add("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", 320, 768, 8, {8, 768},
      {320, 8});
  add("lora_unet_down_blocks_0_resnets_0_conv1", 320, 320 * 9, 8, {8, 320, 3, 3}, {320, 8, 1, 1});
  io::write_safetensors(path, tensors, {{"ss_network_dim", "8"}, {"ss_network_alpha", "4"}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  ::mkdir(out.c_str(), 0777);
  std::mt19937_64 rng(2026);
  try {
    write_peft(out + "/peft", rng);
    write_kohya(out + "/kohya.safetensors", rng);
  } catch (const lola::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::printf("wrote %s/peft/ and %s/kohya.safetensors\n", out.c_str(), out.c_str());
  return 0;
}
