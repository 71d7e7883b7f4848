#pragma once
// One input of the fuzz_cli target, shared with its replay test (tests/cli/test_cli.cpp).
//
// Input: the arguments of one `lola` command line (argv[1], argv[2], ...), either
//   - binary form (the input holds a 0 byte): the arguments separated by 0 bytes;
//   - text form (no 0 byte): one argument per line (a final newline ends the last one).
// Inputs of more than max_arguments arguments or max_input_bytes bytes are not run.
//
// Sandbox. The command runs with a fresh directory as its working directory, holding small valid
// inputs the command line can name (see write_cli_sandbox), and may write there. An input any of
// whose arguments contains '/' or ".." is not run: every path it names then lies inside the
// sandbox, so the fuzzer can neither read nor write anything else on the machine (an absolute
// path, a parent directory, "-o ..").

#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "lola/io/adapter.hpp"
#include "lola/io/load.hpp"
#include "lola/nn/gl_net_weights.hpp"

namespace lola_fuzz {

constexpr std::size_t max_arguments = 64;
constexpr std::size_t max_input_bytes = 4096;

/// The arguments of an input, or nullopt when it is not run (see the file comment).
inline std::optional<std::vector<std::string>> cli_arguments(const std::uint8_t* data, std::size_t size) {
  if (size > max_input_bytes) return std::nullopt;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const char separator = text.find('\0') != std::string_view::npos ? '\0' : '\n';
  std::vector<std::string> args;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find(separator, start), text.size());
    args.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (args.size() > max_arguments) return std::nullopt;
  for (const auto& a : args)
    if (a.find('/') != std::string::npos || a.find("..") != std::string::npos) return std::nullopt;
  return args;
}

/// A small PEFT adapter: modules m.a (6×5) and m.b (4×7) of rank 2.
inline lola::io::adapter<double> sandbox_adapter(std::mt19937_64& rng, lola::io::adapter_format format) {
  std::normal_distribution<double> normal;
  lola::io::adapter<double> a;
  a.format = format;
  const bool kohya = format == lola::io::adapter_format::kohya;
  for (const auto& [name, d, k] : {std::tuple{kohya ? "lora_unet_a" : "base_model.model.m.a", 6, 5},
                                   std::tuple{kohya ? "lora_unet_b" : "base_model.model.m.b", 4, 7}}) {
    lola::io::adapter_module<double> m;
    m.name = name;
    m.B = lola::io::adapter_module<double>::matrix::NullaryExpr(d, 2, [&] { return normal(rng); });
    m.A = lola::io::adapter_module<double>::matrix::NullaryExpr(2, k, [&] { return normal(rng); });
    m.scale = 2;
    m.B_shape = {std::uint64_t(d), 2};
    m.A_shape = {2, std::uint64_t(k)};
    a.modules.push_back(std::move(m));
  }
  return a;
}

/// The sandbox's inputs, written into dir (which exists):
///   peft/              a PEFT directory (m.a, m.b)
///   k.safetensors      a kohya file (lora_unet_a, lora_unet_b)
///   set/p1, set/p2.safetensors   a folder of two PEFT adapters, for features and glnet
///   net.safetensors    GL-net weights for the PEFT layout (2 layers, 2 outputs)
/// Returns the files written, relative to dir.
inline std::vector<std::string> write_cli_sandbox(const std::string& dir) {
  namespace io = lola::io;
  std::mt19937_64 rng(12);
  io::save_adapter(sandbox_adapter(rng, io::adapter_format::peft), dir + "/peft", io::save_form::directory);
  io::save_adapter(sandbox_adapter(rng, io::adapter_format::kohya), dir + "/k.safetensors", io::save_form::file);
  ::mkdir((dir + "/set").c_str(), 0755);
  io::save_adapter(sandbox_adapter(rng, io::adapter_format::peft), dir + "/set/p1", io::save_form::directory);
  io::save_adapter(sandbox_adapter(rng, io::adapter_format::peft), dir + "/set/p2.safetensors", io::save_form::file);
  lola::nn::save_gl_net(lola::nn::gl_net<double>::random({6, 4}, {5, 7}, 3, 2, 4, 2, lola::nn::pooling::flatten, rng),
                        dir + "/net.safetensors");
  std::vector<std::string> written;
  for (const char* file : {"peft/adapter_model.safetensors", "peft/adapter_config.json", "k.safetensors",
                           "set/p1/adapter_model.safetensors", "set/p1/adapter_config.json",
                           "set/p2.safetensors", "set/adapter_config.json", "net.safetensors"}) {
    struct stat st {};
    if (::stat((dir + "/" + file).c_str(), &st) == 0) written.push_back(file);
  }
  return written;
}

}  // namespace lola_fuzz
