// lola: inspect, canonicalize, resize, merge and align LoRA adapters (PEFT directories and
// .safetensors files in the PEFT or kohya dialect), from their factors.
//
// Exit codes: 0 success, 1 invalid input (one line on stderr), 2 usage error.
// Computation is in double; factors are written back in the file's dtypes.
#include <lola/canon/canonical_form.hpp>
#include <lola/canon/o_align.hpp>
#include <lola/core/parallel.hpp>
#include <lola/features/featurize.hpp>
#include <lola/features/spectrum.hpp>
#include <lola/io/load.hpp>
#include <lola/linalg/low_rank_svd.hpp>
#include <lola/nn/gl_net_weights.hpp>
#include <lola/ops/combine.hpp>
#include <lola/ops/resize.hpp>
#include <lola/version.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "arguments.hpp"

namespace {

using lola_cli::arguments;
using lola_cli::usage_error;
namespace io = lola::io;
using adapter = io::adapter<double>;
using module = io::adapter_module<double>;
using matrix = module::matrix;

constexpr const char* overview = R"(lola — LoRA adapters from their factors

Usage: lola <command> [options]

Commands:
  inspect       per-module shapes, ranks, scales, norms and singular values
  canonicalize  write the canonical (GL(r)-invariant) factors of every module
  resize        truncate every module to a fixed or spectrum-chosen rank
  merge         the weighted sum of several adapters, module by module
  align         O-Align every module to a template adapter
  glnet         run a GL-net (LoL reference weights) on adapters
  features      an N x F feature matrix of many adapters, for learning on LoRAs

PATH is a PEFT directory (adapter_config.json + adapter_model.safetensors) or a .safetensors
file (PEFT or kohya; a PEFT file takes its scaling from an adapter_config.json beside it).
OUT takes PATH's form: a directory for a directory, a file for a file.
Run 'lola <command> --help' for a command's options.
)";

const std::map<std::string, std::string> help_texts = {
    {"inspect", R"(Usage: lola inspect PATH [--json] [--top K]

A table per module: name, d x k, rank, scale s, ||dW||_F, sigma_1, entropy effective rank and the
top K singular values of dW = s*B*A (default K = 4), then totals.
  --json    print one JSON object instead: {"path", "format", "modules": [{"name",
            "out_features", "in_features", "rank", "scaling", "fro_norm", "singular_values"}],
            "passthrough": [names]}, all r singular values, modules in file order
  --top K   singular values per row of the table
)"},
    {"canonicalize", R"(Usage: lola canonicalize PATH -o OUT [--form balanced|left]

Writes every module's canonical factors, the same for every (B G, G^-1 A): U*sqrt(S), sqrt(S)*V^T
(balanced, the default) or U*S, V^T (left); the sign of each singular pair is fixed so that the
largest entry of U's column is positive. Same dialect, factor dtypes and scaling: s*B'*A' = s*B*A.
  -o, --output OUT   where to write
  --form F           balanced or left
)"},
    {"resize", R"(Usage: lola resize PATH -o OUT (--rank K | --sv-fro F | --sv-ratio X | --sv-cumulative F)

Truncates every module to its best approximation of the chosen rank, keeping the scale (alpha is
rewritten as s*r'), and prints the retained Frobenius fraction per module.
  --rank K           rank K (at most the module's numerical rank)
  --sv-fro F         smallest k with ||dW_k||_F >= F*||dW||_F
  --sv-cumulative F  smallest k with sigma_1 + ... + sigma_k >= F*(sum of sigma)
  --sv-ratio X       every sigma_i > sigma_1 / X
  -o, --output OUT   where to write
)"},
    {"merge", R"(Usage: lola merge PATH... [--weights w1,w2,...] [--rank K] -o OUT

The weighted sum  sum_i w_i * s_i * B_i * A_i  of every module (matched by name; a module missing
from an adapter counts as zero), exact by factor concatenation, then re-compressed to its best
rank-K approximation from the stacked factors (never a dense SVD). The result has scale 1, in the
first adapter's dialect and form; prints the retained Frobenius fraction per module.
  --weights W   comma-separated weights, one per PATH (default all 1)
  --rank K      the output rank (default: the largest input rank of the module)
  -o, --output OUT
)"},
    {"glnet", R"(Usage: lola glnet WEIGHTS PATH... [--json] [--scaled] [--dropout P]

Runs the GL-net whose weights WEIGHTS holds (a .safetensors state_dict of the LoL reference
GLInvariantMLP) on every adapter and prints one output vector per adapter. Modules are matched to
the network's in lexicographic key order, as the reference loader sees them; every adapter needs
the network's module count and shapes. A PATH that is a directory of adapters (PEFT directories or
.safetensors files) stands for all of them, in name order.
  --json        print {"outputs": [{"path", "output": [...]}, ...]}
  --scaled      fold each module's scale s into U = s*B (the reference ignores s)
  --dropout P   the EquivDropout p the model was trained with (LLM models with K >= 2 layers)
)"},
    {"features", R"(Usage: lola features PATH... --kind raw|svd|dense|align|canonical [--rank R]
                      [--template T] [--scaled] -o OUT.safetensors

Writes the N x F feature matrix of N adapters with one module layout as the float32 tensor
"features" of OUT, one row per adapter, with the adapter paths, the kind and the module layout in
its __metadata__ ("paths", "kind", "modules": [[name, offset, size], ...]). Modules are laid out in
lexicographic key order (as the LoL reference code numbers them); every adapter needs the same
module names and shapes. A PATH that is a directory of adapters stands for all of them.
  --kind raw        B and A^T of every module, flattened row-major (not invariant)
  --kind svd        the singular values of every module, padded or truncated to R (GL-invariant)
  --kind dense      dW = B*A flattened (GL-invariant; d*k features per module, size-guarded)
  --kind align      the factors O-Aligned to the template T (O(r)-invariant)
  --kind canonical  the balanced canonical factors (GL-invariant up to degeneracy)
  --rank R          svd: the number of singular values per module (default: the first adapter's rank)
  --template T      align: the template adapter
  --scaled          fold each module's scale s into U = s*B (the reference ignores s)
  -o, --output OUT  the .safetensors file to write
)"},
    {"align", R"(Usage: lola align PATH --template T -o OUT

O-Align (Learning on LoRAs): for every module, the Q in O(r) minimising
||B Q - B_t||_F^2 + ||A^T Q - A_t^T||_F^2 against the template's module of the same name, and the
aligned factors (B Q, Q^T A); dW is unchanged.
  --template T       the template adapter (same module names, shapes and ranks)
  -o, --output OUT
)"},
};

// Progress on stderr for loops over many modules, only when stderr is a terminal.
class progress {
 public:
  progress(const char* what, std::size_t total)
      : what_(what), total_(total), enabled_(total > 1 && ::isatty(2)) {}
  ~progress() {
    if (enabled_) std::fprintf(stderr, "\r%s %zu/%zu\n", what_, done_.load(), total_);
  }
  void tick() {
    const std::size_t n = ++done_;
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    if (now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    std::fprintf(stderr, "\r%s %zu/%zu", what_, n, total_);
  }

 private:
  const char* what_;
  std::size_t total_;
  bool enabled_;
  std::atomic<std::size_t> done_{0};
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
};

// Runs f(i) for every module of `a` in parallel (OpenMP), with progress; an error from the maths
// is re-thrown naming the adapter and the module.
template <class F>
void for_each_module(const std::string& path, const std::vector<std::string>& names, const char* what,
                     F&& f) {
  progress p(what, names.size());
  lola::parallel_for(static_cast<lola::index>(names.size()), [&](lola::index i) {
    try {
      f(static_cast<std::size_t>(i));
    } catch (const lola::error& e) {
      throw lola::error(e.code(), path + ": module \"" + names[static_cast<std::size_t>(i)] +
                                      "\": " + std::string(e.what()).substr(6));
    }
    p.tick();
  });
}

std::vector<std::string> module_names(const adapter& a) {
  std::vector<std::string> names;
  for (const auto& m : a.modules) names.push_back(m.name);
  return names;
}

adapter load(const std::string& path) {
  adapter a = io::load_adapter<double>(path);
  for (const auto& w : a.warnings) std::fprintf(stderr, "lola: warning: %s\n", w.c_str());
  return a;
}

void save(const adapter& a, const std::string& like, const std::string& out) {
  io::save_adapter(a, out,
                   io::detail::path_is_directory(like) ? io::save_form::directory : io::save_form::file);
}

std::string fmt(double v, const char* format = "%.4g") {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, v);
  return buffer;
}

const std::string& single_path(const arguments& args, const char* command) {
  if (args.positional().size() != 1)
    throw usage_error(std::string(command) + " takes one PATH, got " +
                      std::to_string(args.positional().size()));
  return args.positional()[0];
}

// ---------------------------------------------------------------- inspect
int inspect(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--top"}, {"--json"});
  const std::string& path = single_path(args, "inspect");
  const long top = args.has("--top") ? args.integer("--top", 0) : 4;
  const adapter a = load(path);

  std::vector<Eigen::VectorXd> sigma(a.modules.size());
  for_each_module(path, module_names(a), "inspect", [&](std::size_t i) {
    const auto& m = a.modules[i];
    sigma[i] = lola::singular_values(m.delta(), m.rank());  // all r, zero-padded
  });

  if (args.flag("--json")) {
    io::json_value modules = io::json_value::array();
    for (std::size_t i = 0; i < a.modules.size(); ++i) {
      const auto& m = a.modules[i];
      io::json_value entry = io::json_value::object();
      entry.set("name", m.name);
      entry.set("out_features", static_cast<long long>(m.rows()));
      entry.set("in_features", static_cast<long long>(m.cols()));
      entry.set("rank", static_cast<long long>(m.rank()));
      entry.set("scaling", m.scale);
      entry.set("fro_norm", sigma[i].norm());
      io::json_value values = io::json_value::array();
      for (lola::index j = 0; j < sigma[i].size(); ++j) values.push_back(sigma[i](j));
      entry.set("singular_values", std::move(values));
      modules.push_back(std::move(entry));
    }
    io::json_value passthrough = io::json_value::array();
    for (const auto& t : a.passthrough) passthrough.push_back(t.name);
    io::json_value out = io::json_value::object();
    out.set("path", path);
    out.set("format", io::to_string(a.format));
    out.set("modules", std::move(modules));
    out.set("passthrough", std::move(passthrough));
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }

  std::size_t width = 6;
  for (const auto& m : a.modules) width = std::max(width, m.name.size());
  width = std::min<std::size_t>(width, 72);
  std::printf("%s: %s adapter, %zu modules, %zu passthrough tensors\n", path.c_str(),
              io::to_string(a.format), a.modules.size(), a.passthrough.size());
  std::printf("%-*s  %-13s %5s %9s %10s %10s %8s  %s\n", static_cast<int>(width), "module", "d x k",
              "rank", "scale", "||dW||_F", "sigma_1", "eff.rank", "top singular values");
  double total_sq = 0;
  long long parameters = 0;
  for (std::size_t i = 0; i < a.modules.size(); ++i) {
    const auto& m = a.modules[i];
    const auto summary = lola::spectral_summary_from(sigma[i]);
    total_sq += summary.frobenius * summary.frobenius;
    parameters += static_cast<long long>(m.rank()) * (m.rows() + m.cols());
    std::string name = m.name.size() > width ? "..." + m.name.substr(m.name.size() - width + 3) : m.name;
    std::string top_values;
    for (lola::index j = 0; j < std::min<lola::index>(top, sigma[i].size()); ++j)
      top_values += (j ? " " : "") + fmt(sigma[i](j), "%.3e");
    std::printf("%-*s  %-13s %5ld %9s %10s %10s %8s  %s\n", static_cast<int>(width), name.c_str(),
                (std::to_string(m.rows()) + "x" + std::to_string(m.cols())).c_str(),
                static_cast<long>(m.rank()), fmt(m.scale).c_str(), fmt(summary.frobenius, "%.4e").c_str(),
                fmt(summary.spectral, "%.4e").c_str(), fmt(summary.effective_rank, "%.2f").c_str(),
                top_values.c_str());
  }
  std::printf("total: %zu modules, %lld factor parameters, ||dW||_F over all modules %.4e\n",
              a.modules.size(), parameters, std::sqrt(total_sq));
  return 0;
}

// ---------------------------------------------------------------- canonicalize
int canonicalize(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--output", "--form"}, {}, {{"-o", "--output"}});
  const std::string& path = single_path(args, "canonicalize");
  const std::string& out = args.value("--output");
  const std::string form_name = args.has("--form") ? args.value("--form") : "balanced";
  if (form_name != "balanced" && form_name != "left")
    throw usage_error("--form must be balanced or left, got \"" + form_name + "\"");
  const auto form = form_name == "left" ? lola::canonical_form::left : lola::canonical_form::balanced;
  adapter a = load(path);
  std::atomic<int> degenerate{0};
  for_each_module(path, module_names(a), "canonicalize", [&](std::size_t i) {
    auto& m = a.modules[i];
    auto c = lola::canonicalize(m.delta(), form);
    degenerate += c.degenerate;
    m.set_factors(c.factors.B(), c.factors.A(), m.scale);
  });
  save(a, path, out);
  std::printf("canonicalized %zu modules (%s form) into %s", a.modules.size(), form_name.c_str(), out.c_str());
  if (degenerate > 0)
    std::printf("; %d with repeated singular values (a rotation of those pairs is left free)",
                degenerate.load());
  std::printf("\n");
  return 0;
}

// ---------------------------------------------------------------- resize
int resize(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--output", "--rank", "--sv-fro", "--sv-ratio", "--sv-cumulative"}, {},
                       {{"-o", "--output"}});
  const std::string& path = single_path(args, "resize");
  const std::string& out = args.value("--output");
  std::vector<lola::rank_rule> rules;
  auto fraction = [&](const char* option) {
    const double f = args.number(option);
    if (!(f > 0 && f <= 1)) throw usage_error(std::string(option) + " must be in (0, 1], got " + args.value(option));
    return f;
  };
  if (args.has("--rank")) rules.push_back(lola::rank_rule::fixed(args.integer("--rank", 1)));
  if (args.has("--sv-fro")) rules.push_back(lola::rank_rule::sv_fro(fraction("--sv-fro")));
  if (args.has("--sv-cumulative"))
    rules.push_back(lola::rank_rule::sv_cumulative(fraction("--sv-cumulative")));
  if (args.has("--sv-ratio")) {
    const double x = args.number("--sv-ratio");
    if (!(x >= 1)) throw usage_error("--sv-ratio must be >= 1, got " + args.value("--sv-ratio"));
    rules.push_back(lola::rank_rule::sv_ratio(x));
  }
  if (rules.size() != 1)
    throw usage_error("give exactly one of --rank, --sv-fro, --sv-ratio, --sv-cumulative");
  adapter a = load(path);
  std::vector<lola::index> old_rank(a.modules.size());
  std::vector<double> retained(a.modules.size());
  for_each_module(path, module_names(a), "resize", [&](std::size_t i) {
    auto& m = a.modules[i];
    old_rank[i] = m.rank();
    auto r = lola::resize(m.delta(), rules[0]);
    retained[i] = r.retained_fro_fraction;
    m.set_factors(r.factors.B(), r.factors.A(), m.scale);
  });
  save(a, path, out);
  for (std::size_t i = 0; i < a.modules.size(); ++i)
    std::printf("%s: rank %ld -> %ld, retained Frobenius fraction %.6f\n", a.modules[i].name.c_str(),
                static_cast<long>(old_rank[i]), static_cast<long>(a.modules[i].rank()), retained[i]);
  std::printf("resized %zu modules into %s\n", a.modules.size(), out.c_str());
  return 0;
}

// ---------------------------------------------------------------- merge
int merge(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--output", "--weights", "--rank"}, {}, {{"-o", "--output"}});
  const auto& paths = args.positional();
  if (paths.empty()) throw usage_error("merge needs at least one PATH");
  const std::string& out = args.value("--output");
  std::vector<double> weights(paths.size(), 1.0);
  if (args.has("--weights")) {
    weights = args.numbers("--weights");
    if (weights.size() != paths.size())
      throw usage_error(std::to_string(paths.size()) + " adapters but " + std::to_string(weights.size()) +
                        " weights");
  }
  const long rank = args.has("--rank") ? args.integer("--rank", 1) : -1;

  std::vector<adapter> inputs;
  {
    progress loading("load", paths.size());
    for (const auto& p : paths) {
      inputs.push_back(load(p));
      loading.tick();
    }
  }
  for (std::size_t i = 1; i < inputs.size(); ++i)
    if (inputs[i].format != inputs[0].format)
      throw lola::error(lola::error_code::unsupported,
                        paths[i] + " is a " + io::to_string(inputs[i].format) + " adapter but " +
                            paths[0] + " is " + io::to_string(inputs[0].format) +
                            "; module names of different dialects do not match");

  // Every module name, in the first adapter's order, then new names in later adapters' order.
  std::vector<std::string> names;
  std::map<std::string, std::vector<std::pair<const module*, double>>> parts;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    for (const auto& m : inputs[i].modules) {
      auto& list = parts[m.name];
      if (list.empty()) names.push_back(m.name);
      list.emplace_back(&m, weights[i]);
    }

  adapter result;
  result.format = inputs[0].format;
  result.metadata = inputs[0].metadata;
  result.config = inputs[0].config;
  result.passthrough = inputs[0].passthrough;
  for (std::size_t i = 1; i < inputs.size(); ++i)
    if (!inputs[i].passthrough.empty())
      std::fprintf(stderr, "lola: warning: %zu passthrough tensors of %s are not carried into the merge "
                           "(the first adapter's are)\n",
                   inputs[i].passthrough.size(), paths[i].c_str());
  result.modules.resize(names.size());
  std::vector<double> retained(names.size(), 1.0);
  for_each_module("merge", names, "merge", [&](std::size_t n) {
    const auto& list = parts.at(names[n]);
    const module& first = *list.front().first;
    std::vector<decltype(first.delta())> deltas;
    std::vector<double> w;
    lola::index max_rank = 0;
    for (const auto& [m, weight] : list) {
      if (m->rows() != first.rows() || m->cols() != first.cols() || m->kind != first.kind)
        throw lola::error(lola::error_code::shape_mismatch,
                          "is " + std::to_string(first.rows()) + "x" +
                              std::to_string(first.cols()) + " in one adapter and " +
                              std::to_string(m->rows()) + "x" + std::to_string(m->cols()) + " in another");
      if (!m->extras.empty())
        throw lola::error(lola::error_code::unsupported,
                          "carries " + m->extras.front().name +
                              " (DoRA magnitude or LoRA bias), which a weighted sum of dW does not define");
      deltas.push_back(m->delta());
      w.push_back(weight);
      max_rank = std::max(max_rank, m->rank());
    }
    const lola::index k = rank > 0 ? rank : max_rank;
    auto sum = lola::combine(deltas, w, lola::combination::weighted_sum);
    module merged = first;
    merged.extras.clear();
    if (sum.rank() <= k) {
      merged.set_factors(sum.B(), sum.A(), 1.0);
    } else {
      auto r = lola::resize(sum, lola::rank_rule::fixed(k));
      retained[n] = r.retained_fro_fraction;
      merged.set_factors(r.factors.B(), r.factors.A(), 1.0);
    }
    result.modules[n] = std::move(merged);
  });
  save(result, paths[0], out);
  for (std::size_t n = 0; n < names.size(); ++n)
    std::printf("%s: %zu of %zu adapters, rank %ld, retained Frobenius fraction %.6f\n", names[n].c_str(),
                parts.at(names[n]).size(), inputs.size(), static_cast<long>(result.modules[n].rank()),
                retained[n]);
  std::printf("merged %zu adapters (%zu modules) into %s\n", inputs.size(), names.size(), out.c_str());
  return 0;
}

// ---------------------------------------------------------------- align
int align(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--output", "--template"}, {}, {{"-o", "--output"}});
  const std::string& path = single_path(args, "align");
  const std::string& out = args.value("--output");
  const adapter templ = load(args.value("--template"));
  adapter a = load(path);
  std::vector<double> uniqueness(a.modules.size());
  for_each_module(path, module_names(a), "align", [&](std::size_t i) {
    auto& m = a.modules[i];
    const module* t = templ.find(m.name);
    if (!t)
      throw lola::error(lola::error_code::invalid_argument,
                        "has no counterpart in the template " + args.value("--template"));
    if (t->rows() != m.rows() || t->cols() != m.cols() || t->rank() != m.rank())
      throw lola::error(lola::error_code::shape_mismatch,
                        "is " + std::to_string(m.rows()) + "x" + std::to_string(m.cols()) + " of rank " +
                            std::to_string(m.rank()) + " but the template's is " +
                            std::to_string(t->rows()) + "x" + std::to_string(t->cols()) + " of rank " +
                            std::to_string(t->rank()));
    auto r = lola::o_align(m.delta(), t->delta());
    uniqueness[i] = r.min_singular_value;
    m.set_factors(r.aligned.B(), r.aligned.A(), m.scale);
  });
  save(a, path, out);
  const double worst = uniqueness.empty() ? 1 : *std::min_element(uniqueness.begin(), uniqueness.end());
  std::printf("aligned %zu modules to %s into %s; smallest sigma_r/sigma_1 of the Procrustes "
              "matrices %.3e (Q is unique when > 0)\n",
              a.modules.size(), args.value("--template").c_str(), out.c_str(), worst);
  return 0;
}

// ---------------------------------------------------------------- many adapters
// A PATH that is a directory without adapter_model.safetensors stands for the adapters in it: its
// subdirectories that hold adapter_model.safetensors and its .safetensors files, in name order.
std::vector<std::string> expand_adapter_paths(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const auto& path : paths) {
    std::error_code ec;
    if (!fs::is_directory(path, ec) || fs::exists(fs::path(path) / "adapter_model.safetensors", ec)) {
      out.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      const fs::path& p = entry.path();
      std::error_code entry_ec;
      if ((fs::is_directory(p, entry_ec) && fs::exists(p / "adapter_model.safetensors", entry_ec)) ||
          (fs::is_regular_file(p, entry_ec) && p.extension() == ".safetensors"))
        found.push_back(p.string());
    }
    if (ec)
      throw lola::error(lola::error_code::io, path + ": cannot list the directory: " + ec.message());
    if (found.empty())
      throw lola::error(lola::error_code::invalid_argument,
                        path + ": a directory with no adapters (no adapter_model.safetensors in it or "
                               "in its subdirectories, no .safetensors files)");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

// Loads paths[first, first + count) in parallel (an error names its path), with progress.
std::vector<adapter> load_chunk(const std::vector<std::string>& paths, std::size_t first, std::size_t count,
                                progress& p) {
  std::vector<adapter> out(count);
  lola::parallel_for(static_cast<lola::index>(count), [&](lola::index i) {
    const std::string& path = paths[first + static_cast<std::size_t>(i)];
    out[static_cast<std::size_t>(i)] = io::load_adapter<double>(path);
    p.tick();
  });
  for (const auto& a : out)
    for (const auto& w : a.warnings) std::fprintf(stderr, "lola: warning: %s\n", w.c_str());
  return out;
}

// Adapters are loaded, processed and released this many at a time, so memory does not grow with
// the number of PATHs.
constexpr std::size_t adapters_per_chunk = 64;

// ---------------------------------------------------------------- glnet
int glnet(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--dropout"}, {"--json", "--scaled"});
  if (args.positional().size() < 2) throw usage_error("glnet needs WEIGHTS and at least one PATH");
  lola::nn::gl_net_options options;
  options.fold_scale = args.flag("--scaled");
  if (args.has("--dropout")) {
    options.dropout = args.number("--dropout");
    if (!(options.dropout >= 0 && options.dropout < 1))
      throw usage_error("--dropout must be in [0, 1), got " + args.value("--dropout"));
  }
  const std::string& weights_path = args.positional()[0];
  const auto weights = lola::nn::load_gl_net<double>(weights_path);
  for (const auto& key : weights.ignored_keys)
    std::fprintf(stderr, "lola: note: %s: \"%s\" is saved by the reference but unused by its forward pass\n",
                 weights_path.c_str(), key.c_str());
  const auto& net = weights.net;
  const std::vector<std::string> paths =
      expand_adapter_paths({args.positional().begin() + 1, args.positional().end()});

  // Printed only when every adapter has run, so a failure leaves nothing on stdout.
  io::json_value outputs = io::json_value::array();
  std::string text;
  progress p("glnet", paths.size());
  for (std::size_t first = 0; first < paths.size(); first += adapters_per_chunk) {
    const std::size_t count = std::min(adapters_per_chunk, paths.size() - first);
    const std::vector<adapter> chunk = load_chunk(paths, first, count, p);
    std::vector<const adapter*> batch;
    for (const auto& a : chunk) batch.push_back(&a);
    const lola::nn::matrix<double> y =
        net.forward(batch, options, {paths.begin() + static_cast<std::ptrdiff_t>(first),
                                     paths.begin() + static_cast<std::ptrdiff_t>(first + count)});
    for (std::size_t i = 0; i < count; ++i) {
      const auto row = y.row(static_cast<lola::index>(i));
      if (args.flag("--json")) {
        io::json_value values = io::json_value::array();
        for (lola::index k = 0; k < row.size(); ++k) values.push_back(row(k));
        io::json_value entry = io::json_value::object();
        entry.set("path", paths[first + i]);
        entry.set("output", std::move(values));
        outputs.push_back(std::move(entry));
      } else {
        text += paths[first + i] + ":";
        for (lola::index k = 0; k < row.size(); ++k) text += " " + fmt(row(k), "%.9g");
        text += "\n";
      }
    }
  }
  if (args.flag("--json")) {
    io::json_value out = io::json_value::object();
    out.set("outputs", std::move(outputs));
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::fputs(text.c_str(), stdout);
  }
  return 0;
}

// ---------------------------------------------------------------- features
int features(const std::vector<std::string>& argv) {
  const arguments args(argv, {"--output", "--kind", "--rank", "--template"}, {"--scaled"}, {{"-o", "--output"}});
  if (args.positional().empty()) throw usage_error("features needs at least one PATH");
  const std::string& out = args.value("--output");
  const auto kind = lola::parse_feature_kind(args.value("--kind"));
  if (!kind) throw usage_error("--kind must be raw, svd, dense, align or canonical, got \"" + args.value("--kind") + "\"");
  if (args.has("--template") != (*kind == lola::feature_kind::align))
    throw usage_error(*kind == lola::feature_kind::align ? "--kind align needs --template T"
                                                         : "--template is for --kind align only");
  if (args.has("--rank") && *kind != lola::feature_kind::svd) throw usage_error("--rank is for --kind svd only");
  lola::featurize_options<double> options;
  options.kind = *kind;
  options.fold_scale = args.flag("--scaled");
  if (args.has("--rank")) options.rank = args.integer("--rank", 1);
  adapter templ;
  if (args.has("--template")) {
    templ = load(args.value("--template"));
    options.templ = &templ;
  }
  const std::vector<std::string> paths = expand_adapter_paths(args.positional());

  // Every chunk is featurized after the first adapter, which fixes the layout (module order, svd
  // lengths) and against which every other adapter is checked; its extra row is dropped.
  progress p("features", paths.size());
  const std::vector<adapter> first_only = load_chunk(paths, 0, 1, p);
  const adapter& first = first_only.front();
  const std::vector<lola::feature_block> layout = lola::feature_layout(first, options);
  const std::uint64_t F = layout.empty() ? 0 : static_cast<std::uint64_t>(layout.back().offset + layout.back().size);
  const std::uint64_t N = paths.size(), max_elements = std::uint64_t(1) << 30;
  if (F > 0 && N > max_elements / F)
    throw lola::error(lola::error_code::invalid_argument,
                      std::to_string(N) + " adapters x " + std::to_string(F) + " " + lola::to_string(*kind) +
                          " features exceed the limit of " + std::to_string(max_elements) +
                          " values (4 GiB of float32); use fewer adapters per file");
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> table(static_cast<lola::index>(N),
                                                                              static_cast<lola::index>(F));
  for (std::size_t start = 0; start < paths.size(); start += adapters_per_chunk) {
    const std::size_t count = std::min(adapters_per_chunk, paths.size() - start);
    const std::size_t fresh = start == 0 ? 1 : start;  // paths[0] is loaded already
    const std::vector<adapter> chunk = load_chunk(paths, fresh, start + count - fresh, p);
    std::vector<const adapter*> batch{&first};
    options.labels = {paths[0]};
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      batch.push_back(&chunk[i]);
      options.labels.push_back(paths[fresh + i]);
    }
    const auto rows = lola::featurize(batch, options);  // 1 + chunk.size() rows; the last `count` are this chunk's
    table.middleRows(static_cast<lola::index>(start), static_cast<lola::index>(count)) =
        rows.bottomRows(static_cast<lola::index>(count)).template cast<float>();
  }

  io::json_value path_list = io::json_value::array(), modules = io::json_value::array();
  for (const auto& path : paths) path_list.push_back(path);
  for (const auto& b : layout) {
    io::json_value entry = io::json_value::array();
    entry.push_back(b.name);
    entry.push_back(static_cast<long long>(b.offset));
    entry.push_back(static_cast<long long>(b.size));
    modules.push_back(std::move(entry));
  }
  io::metadata_map metadata = {{"kind", lola::to_string(*kind)}, {"paths", path_list.dump()}, {"modules", modules.dump()},
                               {"scaled", args.flag("--scaled") ? "true" : "false"}};
  if (args.has("--template")) metadata.emplace_back("template", args.value("--template"));
  io::write_safetensors(out, {io::tensor::from_matrix("features", io::dtype::F32, {N, F}, table)}, metadata);
  std::printf("wrote %llu x %llu %s features of %zu adapters (%zu modules) to %s\n",
              static_cast<unsigned long long>(N), static_cast<unsigned long long>(F), lola::to_string(*kind),
              paths.size(), layout.size(), out.c_str());
  return 0;
}

const std::map<std::string, std::function<int(const std::vector<std::string>&)>> commands = {
    {"inspect", inspect}, {"canonicalize", canonicalize}, {"resize", resize},
    {"merge", merge},     {"align", align},               {"glnet", glnet},
    {"features", features},
};

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(overview, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::printf("lola %s\n", lola::version_string);
    return 0;
  }
  const auto command = commands.find(args[0]);
  if (command == commands.end()) {
    std::fprintf(stderr, "lola: unknown command \"%s\"; run 'lola --help'\n", args[0].c_str());
    return 2;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end() ||
      std::find(rest.begin(), rest.end(), "-h") != rest.end()) {
    std::fputs(help_texts.at(args[0]).c_str(), stdout);
    return 0;
  }
  try {
    return command->second(rest);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "lola %s: %s; run 'lola %s --help'\n", args[0].c_str(), e.what(), args[0].c_str());
    return 2;
  } catch (const lola::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lola: out of memory\n");
    return 1;
  }
}
