// Writes the fuzzers' seed corpus and dictionaries into the directory given as argv[1]:
//   safetensors/  valid images of every dtype and layout the reader accepts
//   adapter/      small PEFT and kohya adapters (linear, conv, embedding, DoRA, bias, LyCORIS)
//   json/         JSON documents (configs, headers, escapes, number edge cases)
//   peft_config/  adapter_config.json with module names (tests/fuzz/peft_config_input.hpp):
//                 pattern keys literal, escaped and regex, catastrophic, nested, unsupported
//   safetensors.dict, json.dict, peft_config.dict   libFuzzer dictionaries of the formats' tokens
// Every file is produced here with lola's own writer, so no binary blob is kept in the repository.

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/io/dtype.hpp"
#include "lola/io/safetensors.hpp"
#include "lola/nn/gl_net_weights.hpp"

namespace {

namespace io = lola::io;

std::string root;
int written = 0;

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0777) != 0 && errno != EEXIST) {
    std::perror(path.c_str());
    std::exit(1);
  }
}

void write(const std::string& relative, const void* data, std::size_t size) {
  const std::string path = root + "/" + relative;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::fprintf(stderr, "make_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
  ++written;
}

void write(const std::string& relative, const std::vector<std::byte>& bytes) {
  write(relative, bytes.data(), bytes.size());
}

void write_text(const std::string& relative, const std::string& text) { write(relative, text.data(), text.size()); }

/// Deterministic values in [-1, 1) of the given count, as a 1 × n row.
Eigen::RowVectorXd values(std::size_t n, double seed) {
  Eigen::RowVectorXd v(static_cast<Eigen::Index>(n));
  for (Eigen::Index i = 0; i < v.size(); ++i) v(i) = std::sin(seed + 0.7 * static_cast<double>(i));
  return v;
}

std::uint64_t count(const std::vector<std::uint64_t>& shape) {
  std::uint64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

/// A float tensor of the given dtype and shape with deterministic values.
io::tensor math(const std::string& name, io::dtype type, std::vector<std::uint64_t> shape, double seed = 1) {
  const auto n = count(shape);
  return io::tensor::from_matrix(name, type, std::move(shape), values(n, seed));
}

/// A tensor of any dtype holding the bytes 0, 1, 2, ...
io::tensor raw(const std::string& name, io::dtype type, std::vector<std::uint64_t> shape) {
  std::vector<std::byte> data(count(shape) * io::dtype_bits(type) / 8);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 37 + 1);
  return {name, type, std::move(shape), std::move(data)};
}

io::tensor scalar(const std::string& name, io::dtype type, double value) {
  Eigen::Matrix<double, 1, 1> v;
  v(0, 0) = value;
  return io::tensor::from_matrix(name, type, {}, v);
}

std::string le64(std::uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

/// A hand-made image: length, header, data (for layouts lola's writer never produces).
void write_image(const std::string& relative, const std::string& header, const std::string& data) {
  write_text(relative, le64(header.size()) + header + data);
}

void safetensors_seeds() {
  const io::dtype math_types[] = {io::dtype::F64, io::dtype::F32, io::dtype::F16, io::dtype::BF16};
  for (auto t : math_types)
    write("safetensors/" + std::string(io::dtype_name(t)) + ".safetensors",
          io::serialize_safetensors({math("w", t, {2, 3}), math("v", t, {3}, 2), scalar("s", t, 0.5)}));

  std::vector<io::tensor> every;
  for (const auto& entry : io::detail::dtype_table)
    every.push_back(raw("t_" + std::string(entry.name), entry.type, {2, 4}));
  every.push_back(raw("zero_size", io::dtype::F32, {2, 0}));
  every.push_back(raw("zero_d", io::dtype::I64, {}));
  write("safetensors/every_dtype.safetensors", io::serialize_safetensors(every));

  write("safetensors/metadata.safetensors",
        io::serialize_safetensors({math("layer.0.weight", io::dtype::F16, {4, 4})},
                                  {{"format", "pt"}, {"ss_network_dim", "4"}, {"note", "\xc3\xa9\n\"q\""}}));
  write("safetensors/empty.safetensors", io::serialize_safetensors({}));
  write("safetensors/conv.safetensors", io::serialize_safetensors({math("k", io::dtype::F32, {2, 3, 3, 3})}));

  // The reference's fixtures, and layouts other writers produce: unpadded (MLX), unaligned,
  // leading whitespace, header order unlike offset order.
  write_image("safetensors/reference_deserialization.safetensors",
              R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})", std::string(16, '\0'));
  write_image("safetensors/reference_empty_shape.safetensors",
              R"({"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})", std::string(4, '\0'));
  write_image("safetensors/reference_zero_sized.safetensors",
              R"({"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}})", "");
  write_image("safetensors/whitespace.safetensors", "\t\n{}\r ", "");
  write_image("safetensors/unaligned.safetensors",
              R"({"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})",
              std::string("\x07\x00\x00\x80\x3f\x00\x00\x00\x40", 9));
  write_image("safetensors/header_order.safetensors",
              R"({"z":{"dtype":"F16","shape":[1],"data_offsets":[2,4]},"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"__metadata__":{"k":"v"}})",
              std::string("\x80\x3f\x00\x3c", 4));
}

/// PEFT: two linear modules of layer 0, one of layer 1 (rank_pattern "layers\.1\..*" of the fuzz
/// config), a conv module, with ranks that agree with the fuzz config (r = 4, q_proj → 2).
void adapter_seeds() {
  const std::string p = "base_model.model.model.layers.";
  write("adapter/peft_linear_conv.safetensors",
        io::serialize_safetensors(
            {math(p + "0.self_attn.q_proj.lora_A.weight", io::dtype::F32, {2, 8}, 1),
             math(p + "0.self_attn.q_proj.lora_B.weight", io::dtype::F32, {8, 2}, 2),
             math(p + "0.self_attn.v_proj.lora_A.weight", io::dtype::F32, {4, 8}, 3),
             math(p + "0.self_attn.v_proj.lora_B.weight", io::dtype::F32, {6, 4}, 4),
             math(p + "1.mlp.up_proj.lora_A.weight", io::dtype::BF16, {8, 4}, 5),
             math(p + "1.mlp.up_proj.lora_B.weight", io::dtype::BF16, {4, 8}, 6),
             math("base_model.model.unet.conv_in.lora_A.weight", io::dtype::F16, {4, 3, 3, 3}, 7),
             math("base_model.model.unet.conv_in.lora_B.weight", io::dtype::F16, {8, 4, 1, 1}, 8)},
            {{"format", "pt"}}));
  write("adapter/peft_embedding.safetensors",
        io::serialize_safetensors({math("base_model.model.embed_tokens.lora_embedding_A", io::dtype::F32, {4, 10}),
                                   math("base_model.model.embed_tokens.lora_embedding_B", io::dtype::F32, {6, 4}),
                                   math("base_model.model.lm_head.weight", io::dtype::F16, {2, 6})},
                                  {{"format", "pt"}}));
  // DoRA magnitude and lora_B bias (PEFT), dora_scale (kohya).
  write("adapter/peft_dora_bias.safetensors",
        io::serialize_safetensors({math(p + "0.mlp.down_proj.lora_A.weight", io::dtype::F32, {4, 6}),
                                   math(p + "0.mlp.down_proj.lora_B.weight", io::dtype::F32, {5, 4}),
                                   math(p + "0.mlp.down_proj.lora_B.bias", io::dtype::F32, {5}),
                                   math(p + "0.mlp.down_proj.lora_magnitude_vector", io::dtype::F32, {5})},
                                  {{"format", "pt"}}));

  const std::string u = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  write("adapter/kohya.safetensors",
        io::serialize_safetensors(
            {math(u + ".lora_down.weight", io::dtype::F16, {4, 8}), math(u + ".lora_up.weight", io::dtype::F16, {8, 4}),
             scalar(u + ".alpha", io::dtype::F16, 2),
             math("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", io::dtype::F32, {2, 6}),
             math("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", io::dtype::F32, {3, 2}),
             math("lora_unet_conv_in.lora_down.weight", io::dtype::BF16, {4, 3, 3, 3}),
             math("lora_unet_conv_in.lora_up.weight", io::dtype::BF16, {8, 4, 1, 1}),
             scalar("lora_unet_conv_in.alpha", io::dtype::BF16, 1)},
            {{"ss_network_module", "networks.lora"}, {"ss_network_dim", "4"}, {"ss_network_alpha", "2"}}));
  write("adapter/kohya_dora.safetensors",
        io::serialize_safetensors({math(u + ".lora_down.weight", io::dtype::F32, {2, 8}),
                                   math(u + ".lora_up.weight", io::dtype::F32, {8, 2}),
                                   scalar(u + ".alpha", io::dtype::F32, 0),
                                   math(u + ".dora_scale", io::dtype::F32, {1, 8})}));
  write("adapter/lycoris_mixed.safetensors",
        io::serialize_safetensors({math("lora_unet_a.lora_down.weight", io::dtype::F16, {2, 4}),
                                   math("lora_unet_a.lora_up.weight", io::dtype::F16, {4, 2}),
                                   math("lora_unet_b.hada_w1_a", io::dtype::F16, {4, 2}),
                                   math("lora_unet_b.hada_w1_b", io::dtype::F16, {2, 4}),
                                   math("lora_unet_c.lora_down.weight", io::dtype::F16, {2, 4, 3, 3}),
                                   math("lora_unet_c.lora_mid.weight", io::dtype::F16, {2, 2, 3, 3}),
                                   math("lora_unet_c.lora_up.weight", io::dtype::F16, {4, 2, 1, 1})}));
}

void json_seeds() {
  write_text("json/adapter_config.json", R"({
  "peft_type": "LORA",
  "task_type": "CAUSAL_LM",
  "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
  "r": 16,
  "lora_alpha": 32,
  "lora_dropout": 0.05,
  "use_rslora": false,
  "fan_in_fan_out": false,
  "bias": "none",
  "target_modules": ["q_proj", "v_proj"],
  "rank_pattern": {"layers\\.0\\.self_attn\\.q_proj": 8},
  "alpha_pattern": {},
  "modules_to_save": null,
  "init_lora_weights": true
}
)");
  write_text("json/header.json",
             R"({"__metadata__":{"format":"pt"},"a.lora_A.weight":{"dtype":"F32","shape":[4,16],"data_offsets":[0,256]}})");
  write_text("json/numbers.json",
             "[0,-0,1,-1,18446744073709551615,18446744073709551616,-9223372036854775808,1.5,-0.0,1e400,-1e-400,"
             "2.5E+3,1e-7,123456789012345678901234567890,0.1]");
  write_text("json/strings.json",
             R"(["", "\"\\\/\b\f\n\r\t", "\u0000\u001f\u00e9\u4e2d", "\ud83d\ude00", "é中😀", {"": {"k": [null, true, false]}}])");
  write_text("json/nested.json", std::string(40, '[') + "{}" + std::string(40, ']'));
  write_text("json/whitespace.json", " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } } \n");
}

/// A fuzz_peft_config input in its binary form: config \0 name \0 name ...
void write_peft_config(const std::string& relative, const std::string& config, const std::vector<std::string>& names) {
  std::string text = config;
  for (const auto& n : names) text += std::string(1, '\0') + n;
  write_text("peft_config/" + relative, text);
}

void peft_config_seeds() {
  const std::vector<std::string> llama = {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                                          "model.layers.0.self_attn.v_proj", "model.layers.3.mlp.up_proj",
                                          "q_proj", "proj", "a\nb.q_proj", "x.q_proj\n", "lm_head"};
  write_peft_config("patterns.bin", R"json({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": true,
  "rank_pattern": {"model\\.layers\\.0\\.self_attn\\.q_proj": 4, "q_proj": 2, "layers.1.self_attn.q_proj": 6},
  "alpha_pattern": {"layers\\.[0-9]+\\.mlp\\..*": 32, "v_proj|k_proj": 8, "lm_head": 1, "a)|(b": 3}})json",
                    llama);
  const std::string as(3000, 'a');
  write_peft_config("catastrophic.bin",
                    R"json({"rank_pattern": {"(a*)*b": 4, "(a|a)*c": 4, "(.*)*x": 4, "(x+x+)+y": 2}})json",
                    {as, as + "b", as + ".c", "x.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxy"});
  std::string nested;
  for (int i = 0; i < 1000; ++i) nested += '(';
  nested += 'a';
  for (int i = 0; i < 1000; ++i) nested += ")*";
  write_peft_config("nested.bin", R"json({"alpha_pattern": {")json" + nested + R"json(": 2}})json",
                    {"a", "b.aaaa", as});
  write_peft_config(
      "unsupported.bin",
      R"json({"rank_pattern": {"(?=x)": 1, "(a)\\1": 2, "[[:alpha:]]": 3, "a{2000}": 4, "q\\Z": 5, "q{,2}": 6}})json",
      {"a.q", "x.qq"});
}

/// GL-net weights under the reference state_dict names: K = 1 flattened, K = 2 mean-pooled with the
/// keys the reference saves but never uses, K = 3 with h = 1.
void gl_net_seeds() {
  std::mt19937_64 rng(7);
  using lola::nn::gl_net;
  using lola::nn::pooling;
  const auto one = gl_net<float>::random({3, 4}, {5, 2}, 2, 1, 3, 1, pooling::flatten, rng);
  write("gl_net/k1_flatten.safetensors", io::serialize_safetensors(lola::nn::gl_net_tensors(one)));
  const auto two = gl_net<float>::random({2, 3, 2}, {2, 2, 4}, 3, 2, 4, 2, pooling::mean, rng);
  auto tensors = lola::nn::gl_net_tensors(two, io::dtype::BF16);
  tensors.push_back(math("equiv_mlp.norms.0.scale_u", io::dtype::F32, {1, 3, 3, 1}));
  tensors.push_back(math("invariant_head.invariant_outputs.0.x", io::dtype::F32, {2, 3}));
  write("gl_net/k2_mean_ignored.safetensors", io::serialize_safetensors(tensors));
  const auto three = gl_net<double>::random({2}, {3}, 1, 3, 2, 1, pooling::flatten, rng);
  write("gl_net/k3_h1_f64.safetensors", io::serialize_safetensors(lola::nn::gl_net_tensors(three, io::dtype::F64)));
}

void dictionaries() {
  write_text("safetensors.dict",
             "\"\\\"dtype\\\"\"\n\"\\\"shape\\\"\"\n\"\\\"data_offsets\\\"\"\n\"\\\"__metadata__\\\"\"\n"
             "\"\\\"F32\\\"\"\n\"\\\"F16\\\"\"\n\"\\\"BF16\\\"\"\n\"\\\"F64\\\"\"\n\"\\\"I32\\\"\"\n\"\\\"U8\\\"\"\n"
             "\"\\\"F4\\\"\"\n\"\\\"F6_E2M3\\\"\"\n\"\\\"F8_E4M3\\\"\"\n\"\\\"BOOL\\\"\"\n"
             "\".lora_A.weight\"\n\".lora_B.weight\"\n\".lora_down.weight\"\n\".lora_up.weight\"\n\".alpha\"\n"
             "\".lora_embedding_A\"\n\".lora_embedding_B\"\n\".lora_magnitude_vector\"\n\".lora_B.bias\"\n"
             "\".dora_scale\"\n\".hada_w1_a\"\n\".lokr_w1\"\n\".lora_mid.weight\"\n\"base_model.model.\"\n"
             "\"18446744073709551615\"\n\"9223372036854775807\"\n\"[]\"\n\"{}\"\n\"[0,0]\"\n"
             "\"version https://git-lfs\"\n\"PK\\x03\\x04\"\n\"\\x80\\x02\"\n\"<!DOCTYPE html>\"\n\"GGUF\"\n"
             "\"equiv_mlp.first_layer.\"\n\".w_1\"\n\".w_2\"\n\"equiv_mlp.equivariant_layers_u.\"\n\"equiv_mlp.equivariant_layers_v.\"\n\"equiv_mlp.norms.\"\n\".scale_u\"\n"
             "\"invariant_head.linear1.weight\"\n\"invariant_head.linear1.bias\"\n\"invariant_head.ln1.weight\"\n\"invariant_head.ln1.bias\"\n\"invariant_head.linear2.weight\"\n\"invariant_head.linear2.bias\"\n\"invariant_head.invariant_outputs.\"\n");
  write_text("json.dict",
             "\"true\"\n\"false\"\n\"null\"\n\"\\\\u\"\n\"\\\\ud83d\\\\ude00\"\n\"\\\\udc00\"\n\"1e400\"\n\"-0\"\n"
             "\"0.5e-3\"\n\"18446744073709551616\"\n\"{\\\"\\\":\"\n\"[[\"\n\"]]\"\n\"\\xc3\\xa9\"\n\"\\xed\\xa0\\x80\"\n");
  // Pattern syntax, Python's and RE2's, and the config's fields; \\ in a key is one backslash
  // of the regular expression escaped for JSON.
  write_text("peft_config.dict",
             "\"\\\"rank_pattern\\\"\"\n\"\\\"alpha_pattern\\\"\"\n\"\\\"r\\\"\"\n\"\\\"lora_alpha\\\"\"\n"
             "\"\\\"use_rslora\\\"\"\n\"\\x00\"\n\"\\\\\\\\.\"\n\".*\"\n\"(?:\"\n\"(?=\"\n\"(?P<n>\"\n"
             "\"\\\\\\\\1\"\n\"\\\\\\\\Z\"\n\"\\\\\\\\d\"\n\"{,\"\n\"{1000}\"\n\"[:alpha:]\"\n\"[^\"\n\")*\"\n\"|\"\n"
             "\"*+\"\n\"(?i)\"\n\"q_proj\"\n\"model.layers.\"\n\"self_attn\"\n\"\\x0A\"\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIRECTORY\n", argv[0]);
    return 2;
  }
  root = argv[1];
  make_dir(root);
  for (const char* sub : {"safetensors", "adapter", "json", "gl_net", "peft_config"}) make_dir(root + "/" + sub);
  safetensors_seeds();
  adapter_seeds();
  json_seeds();
  gl_net_seeds();
  peft_config_seeds();
  dictionaries();
  std::printf("make_seeds: wrote %d files under %s\n", written, root.c_str());
  return 0;
}
