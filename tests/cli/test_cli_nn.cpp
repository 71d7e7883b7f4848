// `lola glnet` and `lola features` end to end: adapters and GL-net weights written by the test into a
// fresh directory, the tool run as a separate process, its outputs compared with the library
// (nn::gl_net::forward, lola::featurize) on the same files, and every usage and input error checked.
//
// Tolerance: the tool and the library compute in double from the same stored values, through the
// same code; only the blocking of a batch (which adapters share a GEMM) may change the order of
// a sum. Each output is a few GEMMs, a LayerNorm and a GEMM away from the inputs, with inner
// dimensions n ≤ 2·10³ here, so the two agree to about n·ε·(‖W‖·‖x‖ scale) ≈ 1e-12 relative; the
// tests allow 1e-9 relative, and check that what they tell apart (two adapters, --scaled, --dropout)
// differs by far more.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <Eigen/LU>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#include "lola/core/random.hpp"
#include "lola/features/featurize.hpp"
#include "lola/io/load.hpp"
#include "lola/nn/gl_net_weights.hpp"
#pragma GCC diagnostic pop

#include "support/adapter_module.hpp"
#include "support/run_cli.hpp"
#include "support/test_support.hpp"

namespace io = lola::io;
namespace nn = lola::nn;

namespace {

using namespace lola_test::cli;
using md = Eigen::MatrixXd;
using loaded = io::adapter<double>;

// Two modules whose key order ("m.a-b.lora_A.weight" < "m.a.lora_A.weight") differs from both
// their name order and the order they are written in, so a tool that numbered modules any other
// way would feed them to the wrong weights (their shapes differ, so it would fail loudly).
const char* const name_a = "base_model.model.m.a";
const char* const name_ab = "base_model.model.m.a-b";
constexpr Eigen::Index d_a = 12, k_a = 10, d_ab = 9, k_ab = 14;

/// A PEFT adapter with modules m.a (d_a×k_a) and m.a-b (d_ab×k_ab) of rank r, factors of dtype t.
loaded make_adapter(std::mt19937_64& rng, Eigen::Index r, double alpha, io::dtype t = io::dtype::F64) {
  loaded a;
  a.format = io::adapter_format::peft;
  for (const auto& [name, d, k] : {std::tuple{name_a, d_a, k_a}, std::tuple{name_ab, d_ab, k_ab}})
    a.modules.push_back(lola_test::make_module<double>(name, lola_test::gaussian<double>(d, r, rng),
                                                       lola_test::gaussian<double>(r, k, rng),
                                                       alpha / static_cast<double>(r), t));
  return a;
}

/// A GL-net for that layout: module 0 is m.a-b, module 1 is m.a (key order).
nn::gl_net<double> make_net(std::mt19937_64& rng, Eigen::Index K, nn::pooling p) {
  return nn::gl_net<double>::random({d_ab, d_a}, {k_ab, k_a}, 5, K, 7, 3, p, rng);
}

/// t/set/aNN, adapter i of a folder of many: two digits, so the folder's order is i's.
std::string set_member(const temp_dir& t, int i) {
  char name[32];
  std::snprintf(name, sizeof name, "set/a%02d", i);
  return t / name;
}

io::json_value parse(const std::string& text) { return io::parse_json(text, "lola's stdout"); }

/// The "output" vectors of `lola glnet --json`, in order, with their paths.
std::vector<std::pair<std::string, Eigen::VectorXd>> glnet_outputs(const std::string& out) {
  std::vector<std::pair<std::string, Eigen::VectorXd>> result;
  const auto json = parse(out);
  for (const auto& entry : json.find("outputs")->items()) {
    const auto& values = entry.find("output")->items();
    Eigen::VectorXd v(static_cast<Eigen::Index>(values.size()));
    for (std::size_t i = 0; i < values.size(); ++i) v(static_cast<Eigen::Index>(i)) = values[i].as_double();
    result.emplace_back(entry.find("path")->as_string(), v);
  }
  return result;
}

double relative_gap(const Eigen::VectorXd& x, const Eigen::VectorXd& y) {
  return (x - y).norm() / std::max(1.0, y.norm());
}

constexpr double agree = 1e-9;  // see the file comment

}  // namespace

TEST_CASE("glnet: outputs equal the library's forward on the same files, in key order, for each option") {
  temp_dir t;
  std::mt19937_64 rng(501);
  std::filesystem::create_directories(t / "set");
  const std::vector<std::string> paths = {t / "set/a1", t / "set/a2", t / "set/b.safetensors"};
  io::save_adapter(make_adapter(rng, 3, 6), paths[0], io::save_form::directory);
  io::save_adapter(make_adapter(rng, 4, 8, io::dtype::F32), paths[1], io::save_form::directory);
  io::save_adapter(make_adapter(rng, 2, 2, io::dtype::BF16), paths[2], io::save_form::file);
  std::vector<loaded> adapters;
  for (const auto& p : paths) adapters.push_back(io::load_adapter<double>(p));
  std::vector<const loaded*> batch;
  for (const auto& a : adapters) batch.push_back(&a);

  for (Eigen::Index K : {1, 2}) {
    for (auto pool : {nn::pooling::flatten, nn::pooling::mean}) {
      INFO("K = " << K << ", pooling " << nn::to_string(pool));
      const std::string weights = t / ("net_" + std::to_string(K) + nn::to_string(pool) + ".safetensors");
      nn::save_gl_net(make_net(rng, K, pool), weights);  // F32, as PyTorch saves it
      const auto net = nn::load_gl_net<double>(weights).net;

      struct variant {
        std::vector<std::string> flags;
        nn::gl_net_options options;
      };
      nn::gl_net_options scaled, dropout;
      scaled.fold_scale = true;
      dropout.dropout = 0.25;
      std::vector<variant> variants = {{{}, {}}, {{"--scaled"}, scaled}};
      if (K > 1) variants.push_back({{"--dropout", "0.25"}, dropout});
      std::vector<Eigen::MatrixXd> seen;
      for (const auto& v : variants) {
        std::vector<std::string> args = {"glnet", weights, t / "set", "--json"};  // the directory: all three
        args.insert(args.end(), v.flags.begin(), v.flags.end());
        const auto r = run_lola(t, args);
        check_ok(r);
        const auto outputs = glnet_outputs(r.out);
        const Eigen::MatrixXd expected = net.forward(batch, v.options);
        REQUIRE(outputs.size() == paths.size());
        for (std::size_t i = 0; i < paths.size(); ++i) {
          CHECK(outputs[i].first == paths[i]);  // name order within the directory
          CHECK(relative_gap(outputs[i].second, expected.row(static_cast<Eigen::Index>(i)).transpose()) <= agree);
        }
        seen.push_back(expected);
      }
      // The options and the adapters matter by far more than the tolerance, so the checks above
      // could tell a tool that ignored them.
      for (std::size_t a = 1; a < seen.size(); ++a)
        CHECK((seen[a] - seen[0]).norm() > 1e3 * agree * seen[0].norm());
      CHECK((seen[0].row(0) - seen[0].row(1)).norm() > 1e3 * agree * seen[0].row(0).norm());
    }
  }

  // The text form: one line per adapter, "PATH: y1 y2 y3".
  const std::string weights = t / "net_1flatten.safetensors";
  const auto r = run_lola(t, {"glnet", weights, paths[0], paths[2]});
  check_ok(r);
  const auto lines = lines_of(r.out);
  REQUIRE(lines.size() == 2);
  CHECK(starts_with(lines[0], paths[0] + ": "));
  CHECK(starts_with(lines[1], paths[2] + ": "));
  CHECK(tokens_of(lines[0]).size() == 4);
}

TEST_CASE("glnet: the output is the same for every (B G, G^-1 A), and changes with B alone") {
  temp_dir t;
  std::mt19937_64 rng(502);
  const loaded a = make_adapter(rng, 4, 4);
  loaded moved = a, broken = a;
  for (std::size_t j = 0; j < a.modules.size(); ++j) {
    const md G = lola::random_gl<double>(4, 100.0, rng);
    moved.modules[j].B = a.modules[j].B * G;
    moved.modules[j].A = G.partialPivLu().solve(a.modules[j].A);
    broken.modules[j].B = a.modules[j].B * G;  // A left alone: a different ΔW
  }
  io::save_adapter(a, t / "a", io::save_form::directory);
  io::save_adapter(moved, t / "moved", io::save_form::directory);
  io::save_adapter(broken, t / "broken", io::save_form::directory);
  nn::save_gl_net(make_net(rng, 2, nn::pooling::flatten), t / "net.safetensors");
  const auto r = run_lola(t, {"glnet", t / "net.safetensors", t / "a", t / "moved", t / "broken", "--json"});
  check_ok(r);
  const auto y = glnet_outputs(r.out);
  REQUIRE(y.size() == 3);
  // cond(G) = 100 amplifies the F64 storage rounding of the factors by at most 100 in ΔW, so the
  // outputs agree to ~1e-14·100 relative; 1e-9 leaves room and the broken adapter is far outside.
  CHECK(relative_gap(y[1].second, y[0].second) <= agree);
  CHECK(relative_gap(y[2].second, y[0].second) > 1e-3);
}

TEST_CASE("glnet: bad weights, mismatched adapters and usage errors") {
  temp_dir t;
  std::mt19937_64 rng(503);
  io::save_adapter(make_adapter(rng, 3, 3), t / "a", io::save_form::directory);
  const auto net = make_net(rng, 2, nn::pooling::flatten);
  nn::save_gl_net(net, t / "net.safetensors");

  SUBCASE("a weights file without a key") {
    auto tensors = nn::gl_net_tensors(net);
    tensors.erase(tensors.begin() + 1);  // equiv_mlp.first_layer.0.w_2
    io::write_safetensors(t / "missing.safetensors", tensors);
    check_invalid_input(run_lola(t, {"glnet", t / "missing.safetensors", t / "a"}),
                        {"missing.safetensors", "equiv_mlp.first_layer.0.w_2"});
  }
  SUBCASE("a weights file with a key GL-net does not know") {
    auto tensors = nn::gl_net_tensors(net);
    tensors.push_back(io::tensor::from_matrix("invariant_head.linear3.weight", io::dtype::F32, {1, 1},
                                              Eigen::MatrixXd::Ones(1, 1)));
    io::write_safetensors(t / "extra.safetensors", tensors);
    check_invalid_input(run_lola(t, {"glnet", t / "extra.safetensors", t / "a"}), {"invariant_head.linear3.weight"});
  }
  SUBCASE("weights that are not safetensors") {
    write_bytes(t / "net.pt", std::string("\x80\x02}q\x00.", 6) + std::string(64, 'x'));
    check_invalid_input(run_lola(t, {"glnet", t / "net.pt", t / "a"}), {"net.pt"});
  }
  SUBCASE("an adapter whose module shapes differ from the network's") {
    loaded other = make_adapter(rng, 3, 3);
    other.modules[0].B = lola_test::gaussian<double>(d_a + 1, 3, rng);
    other.modules[0].B_shape = {std::uint64_t(d_a + 1), 3};
    io::save_adapter(other, t / "other", io::save_form::directory);
    check_invalid_input(run_lola(t, {"glnet", t / "net.safetensors", t / "a", t / "other"}),
                        {t / "other", name_a});
  }
  SUBCASE("a mismatched adapter after the first 64: nothing on stdout, the later chunk's error") {
    std::filesystem::create_directories(t / "many");
    const loaded good = io::load_adapter<double>(t / "a");
    for (int i = 0; i < 64; ++i) io::save_adapter(good, t / ("many/a" + std::to_string(100 + i)), io::save_form::directory);
    loaded other = make_adapter(rng, 3, 3);
    other.modules[1].A = lola_test::gaussian<double>(3, k_ab + 2, rng);
    other.modules[1].A_shape = {3, std::uint64_t(k_ab + 2)};
    io::save_adapter(other, t / "many/z", io::save_form::directory);
    // Named by its index among all the adapters of the run (64), not within its chunk (the tool
    // loads at most 64 at a time, so it is never the first of the run's first chunk).
    check_invalid_input(run_lola(t, {"glnet", t / "net.safetensors", t / "many"}),
                        {"adapter 64 (" + t / "many/z" + ")", name_ab});
  }
  SUBCASE("an empty directory") {
    std::filesystem::create_directories(t / "empty");
    check_invalid_input(run_lola(t, {"glnet", t / "net.safetensors", t / "empty"}), {"empty", "no adapters"});
  }
  SUBCASE("usage") {
    check_usage_error(run_lola(t, {"glnet", t / "net.safetensors"}), "glnet", {"PATH"});
    check_usage_error(run_lola(t, {"glnet", t / "net.safetensors", t / "a", "--dropout", "1"}), "glnet",
                      {"--dropout"});
    check_usage_error(run_lola(t, {"glnet", t / "net.safetensors", t / "a", "--bogus"}), "glnet", {"--bogus"});
    for (const char* bad : {" 0.5", "0.5x", "nan", "-inf", ""})
      check_usage_error(run_lola(t, {"glnet", t / "net.safetensors", t / "a", "--dropout", bad}), "glnet",
                        {"--dropout"});
  }
}

TEST_CASE("features: every kind equals lola::featurize, across chunks of adapters, with its metadata") {
  temp_dir t;
  std::mt19937_64 rng(504);
  // 70 adapters: more than the at most 64 the tool loads at a time, so a later chunk is checked
  // against the first adapter's layout too.
  std::filesystem::create_directories(t / "set");
  std::vector<std::string> paths;
  for (int i = 0; i < 70; ++i) {
    paths.push_back(set_member(t, i));
    io::save_adapter(make_adapter(rng, 3, 3 + i), paths.back(), io::save_form::directory);
  }
  io::save_adapter(make_adapter(rng, 3, 1), t / "template", io::save_form::directory);
  std::vector<loaded> adapters;
  for (const auto& p : paths) adapters.push_back(io::load_adapter<double>(p));
  std::vector<const loaded*> batch;
  for (const auto& a : adapters) batch.push_back(&a);
  const loaded templ = io::load_adapter<double>(t / "template");

  for (const char* kind : {"raw", "svd", "dense", "align", "canonical"}) {
    INFO("kind " << kind);
    lola::featurize_options<double> options;
    options.kind = *lola::parse_feature_kind(kind);
    std::vector<std::string> args = {"features", t / "set", "--kind", kind, "-o", t / (std::string(kind) + ".safetensors")};
    if (options.kind == lola::feature_kind::align) {
      args.insert(args.end(), {"--template", t / "template"});
      options.templ = &templ;
    }
    if (options.kind == lola::feature_kind::svd) {
      args.insert(args.end(), {"--rank", "5", "--scaled"});
      options.rank = 5;
      options.fold_scale = true;
    }
    check_ok(run_lola(t, args));
    const auto file = io::safetensors_file::open(args[5]);
    const auto& info = file->at("features");
    CHECK(info.dtype == io::dtype::F32);
    const auto got = file->matrix<double>(info);
    const Eigen::MatrixXd expected = lola::featurize(batch, options).cast<float>().cast<double>();
    REQUIRE(got.rows() == expected.rows());
    REQUIRE(got.cols() == expected.cols());
    // Both are the library's double features rounded once to float: equal up to one float
    // rounding of a value that may differ in its last double bits (1e-9 relative covers it).
    CHECK((got - expected).norm() <= agree * expected.norm());

    // __metadata__: the kind, every path in order, the module layout in key order.
    std::string paths_json, modules_json;
    for (const auto& [k, v] : file->metadata()) {
      if (k == "kind") CHECK(v == kind);
      if (k == "paths") paths_json = v;
      if (k == "modules") modules_json = v;
    }
    const auto listed = io::parse_json(paths_json, "paths").items();
    REQUIRE(listed.size() == paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) CHECK(listed[i].as_string() == paths[i]);
    const auto layout = io::parse_json(modules_json, "modules").items();
    REQUIRE(layout.size() == 2);
    CHECK(layout[0].items()[0].as_string() == name_ab);
    CHECK(layout[1].items()[0].as_string() == name_a);
    CHECK(layout[1].items()[1].as_uint64() == layout[0].items()[2].as_uint64());  // offset = previous size
  }
}

TEST_CASE("features: mismatched adapters are invalid input, option misuse a usage error") {
  temp_dir t;
  std::mt19937_64 rng(505);
  io::save_adapter(make_adapter(rng, 3, 3), t / "a", io::save_form::directory);
  loaded renamed = make_adapter(rng, 3, 3);
  renamed.modules[1].name = "base_model.model.m.c";
  io::save_adapter(renamed, t / "renamed", io::save_form::directory);
  const std::string out = t / "f.safetensors";
  auto r = run_lola(t, {"features", t / "a", t / "renamed", "--kind", "svd", "-o", out});
  check_invalid_input(r, {"renamed"});
  check_no_output(t, out);
  check_usage_error(run_lola(t, {"features", t / "a", "--kind", "bogus", "-o", out}), "features", {"--kind"});
  check_usage_error(run_lola(t, {"features", t / "a", "--kind", "align", "-o", out}), "features", {"--template"});
  check_usage_error(run_lola(t, {"features", t / "a", "--kind", "raw", "--rank", "2", "-o", out}), "features",
                    {"--rank"});
  check_usage_error(run_lola(t, {"features", t / "a", "--kind", "svd"}), "features", {"--output"});
  check_no_output(t, out);
}

TEST_CASE("features: an error after the first 64 adapters names the adapter's index in the run and its path") {
  temp_dir t;
  std::mt19937_64 rng(506);
  std::filesystem::create_directories(t / "set");
  std::vector<std::string> paths;
  for (int i = 0; i < 70; ++i) {
    paths.push_back(set_member(t, i));
    loaded a = make_adapter(rng, 3, 3);
    if (i == 67) a.modules[1].name = "base_model.model.m.c";  // a layout the first adapter lacks
    io::save_adapter(a, paths.back(), io::save_form::directory);
  }
  const std::string out = t / "f.safetensors";
  // Loaded in chunks (of at most 64) after the first adapter: index 67 is not the 67th of its
  // chunk, which featurize, seeing one chunk at a time, would number it by; the tool names it 67.
  auto r = run_lola(t, {"features", t / "set", "--kind", "svd", "-o", out});
  check_invalid_input(r, {"adapter 67 (" + paths[67] + ")", "base_model.model.m.c"});
  // No other index, whatever 67's position within its chunk; adapter 0 is named as the one that
  // fixes the layout ("…, which adapter 0 (…) lacks").
  CHECK(contains(r.err, "which adapter 0 (" + paths[0] + ") lacks"));
  for (int i = 1; i < 70; ++i)
    if (i != 67) CHECK_FALSE(contains(r.err, "adapter " + std::to_string(i) + " ("));
  check_no_output(t, out);
  // A load failure in a later chunk: index and path as well.
  write_bytes(paths[66] + "/adapter_model.safetensors", "garbage");
  r = run_lola(t, {"features", t / "set", "--kind", "svd", "-o", out});
  check_invalid_input(r, {"adapter 66 (" + paths[66] + ")"});
  // With 66 skipped, the chunk's run indices have a gap (…, 65, 67, …): the layout error still
  // names 67 with its path, not the batch position or an index shifted by the gap.
  r = run_lola(t, {"features", t / "set", "--kind", "svd", "-o", out, "--skip-bad"});
  INFO("stderr: " << r.err);
  CHECK(r.code == 1);
  const auto err = lines_of(r.err);  // the skip warning for 66, then the error
  REQUIRE(err.size() == 2);
  CHECK(contains(err[0], "skipped adapter 66 (" + paths[66] + ")"));
  CHECK(contains(err[1], "adapter 67 (" + paths[67] + ") has module 'base_model.model.m.c'"));
  CHECK_FALSE(contains(r.err, "adapter 66 (" + paths[67]));
  check_no_output(t, out);
}

TEST_CASE("glnet --skip-bad: bad adapters are skipped, reported, and listed in the JSON output") {
  temp_dir t;
  std::mt19937_64 rng(507);
  std::filesystem::create_directories(t / "set");
  io::save_adapter(make_adapter(rng, 3, 3), t / "set/a1", io::save_form::directory);
  io::save_adapter(make_adapter(rng, 2, 2), t / "set/a3", io::save_form::directory);
  write_bytes(t / "set/a2.safetensors", "not an adapter");          // fails to load
  std::filesystem::create_directories(t / "set/empty");             // a bad folder entry
  std::filesystem::create_symlink("gone.safetensors", t / "set/x.safetensors");  // dangling
  nn::save_gl_net(make_net(rng, 1, nn::pooling::flatten), t / "net.safetensors");

  check_invalid_input(run_lola(t, {"glnet", t / "net.safetensors", t / "set", "--json"}), {t / "set/empty"});
  const auto r = run_lola(t, {"glnet", t / "net.safetensors", t / "set", "--json", "--skip-bad"});
  check_ok(r);
  CHECK(lines_of(r.err).size() == 3);
  const auto outputs = glnet_outputs(r.out);
  REQUIRE(outputs.size() == 2);
  CHECK(outputs[0].first == t / "set/a1");
  CHECK(outputs[1].first == t / "set/a3");
  std::vector<std::string> skipped;
  const io::json_value json = parse(r.out);
  for (const auto& entry : json.find("skipped")->items()) {
    skipped.push_back(entry.items().at(0).as_string());
    CHECK_FALSE(entry.items().at(1).as_string().empty());
  }
  CHECK(skipped == std::vector<std::string>{t / "set/empty", t / "set/x.safetensors", t / "set/a2.safetensors"});
}
