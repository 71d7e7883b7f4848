#pragma once
// The commands of the lola tool, each a function of its parsed options (run.hpp builds the
// command line with CLI11). Computation is in double; factors are written back in the file's
// dtypes. What a command prints on stdout goes through `streams` (checked writes); names taken
// from files and paths given by the user are escaped there with `shown` (lola/io/printable.hpp),
// and every message on stderr is escaped as a whole.

#include <lola/canon/canonical_form.hpp>
#include <lola/canon/canonicalize_adapter.hpp>
#include <lola/canon/o_align.hpp>
#include <lola/core/parallel.hpp>
#include <lola/features/adapter_spectra.hpp>
#include <lola/features/featurize.hpp>
#include <lola/features/spectrum.hpp>
#include <lola/io/adapter_view.hpp>
#include <lola/io/encoded_adapter.hpp>
#include <lola/io/load.hpp>
#include <lola/linalg/low_rank_svd.hpp>
#include <lola/nn/gl_net_weights.hpp>
#include <lola/io/module_lookup.hpp>
#include <lola/ops/merge_adapters.hpp>
#include <lola/ops/resize.hpp>
#include <lola/ops/resize_adapter.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "adapter_paths.hpp"
#include "numbers.hpp"
#include "output.hpp"
#include "same_file.hpp"
#include "usage_error.hpp"

namespace lola_cli {

namespace io = lola::io;
using adapter = io::adapter<double>;
using module = io::adapter_module<double>;

/// The largest value an integer flag takes.
constexpr std::int64_t integer_max = INT64_MAX;
/// The largest --rank of features (svd values per module): 2^30, the cap on the values of the whole
/// feature table (features' max_elements), so a larger R could never be written (one module's
/// block alone would exceed it); refused as a usage error before any adapter is read. resize and
/// merge take any rank up to integer_max (lola::rank_rule holds it exactly).
constexpr std::int64_t svd_length_max = std::int64_t(1) << 30;

/// The value of an integer flag CLI11 has already checked with the same bounds.
inline std::int64_t integer_value(const std::string& name, const std::string& text, std::int64_t low,
                                  std::int64_t high = integer_max) {
  std::string why;
  const auto v = parse_integer(text, low, high, why);
  if (!v) throw usage_error(name + " " + why + ", got \"" + text + "\"");
  return *v;
}

inline double real_value(const std::string& name, const std::string& text) {
  std::string why;
  const auto v = parse_real(text, why);
  if (!v) throw usage_error(name + " " + why + ", got \"" + text + "\"");
  return *v;
}

// Progress on stderr for loops over many items, only when stderr is a terminal.
class progress {
 public:
  progress(const char* what, std::size_t total, std::FILE* err)
      : what_(what), total_(total), err_(err), terminal_(::isatty(::fileno(err)) != 0) {}
  ~progress() {
    if (enabled()) std::fprintf(err_, "\r%s %zu/%zu\n", what_, done_.load(), total_.load());
  }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;
  /// One more item done, of `total` when the count became known only once the work had started.
  void tick(std::size_t total = 0) {
    if (total != 0) total_ = total;
    const std::size_t n = ++done_;
    if (!enabled()) return;
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    if (now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    std::fprintf(err_, "\r%s %zu/%zu", what_, n, total_.load());
  }

 private:
  bool enabled() const { return terminal_ && total_ > 1; }

  const char* what_;
  std::atomic<std::size_t> total_;
  std::FILE* err_;
  bool terminal_;
  std::atomic<std::size_t> done_{0};
  std::mutex mutex_;
  std::chrono::steady_clock::time_point last_{};
};

// Runs f(i) for every module in parallel (OpenMP), with progress; an error from the maths is
// re-thrown naming the adapter and the module.
template <class F>
void for_each_module(const std::string& path, const std::vector<std::string>& names, const char* what,
                     std::FILE* err, F&& f) {
  progress p(what, names.size(), err);
  lola::parallel_for(static_cast<lola::index>(names.size()), [&](lola::index i) {
    try {
      f(static_cast<std::size_t>(i));
    } catch (const lola::error& e) {
      throw lola::in_context(path + ": module \"" + names[static_cast<std::size_t>(i)] + "\"", e);
    }
    p.tick();
  });
}

/// f(), its lola::error re-thrown naming the adapter at path (the library names the module).
template <class F>
decltype(auto) naming_path(const std::string& path, F&& f) {
  try {
    return f();
  } catch (const lola::error& e) {
    throw lola::in_context(path, e);
  }
}

/// A pass over modules on the default executor that ticks p as each module is done.
inline lola::module_pass ticking(progress& p) {
  lola::module_pass pass;
  pass.module_done = [&p](std::size_t) { p.tick(); };
  return pass;
}

template <class Module>
std::vector<std::string> module_names(const io::basic_adapter<Module>& a) {
  std::vector<std::string> names;
  for (const auto& m : a.modules) names.push_back(m.name);
  return names;
}

template <class Module>
void report_warnings(const io::basic_adapter<Module>& a, const streams& s) {
  for (const auto& w : a.warnings) s.message("lola: warning: " + w);
}

inline adapter load(const std::string& path, const streams& s) {
  adapter a = io::load_adapter<double>(path);
  report_warnings(a, s);
  return a;
}

/// Saves in the form of `like` (a directory for a directory input, a file for a file).
template <class Module>
void save(const io::basic_adapter<Module>& a, const std::string& like, const std::string& out) {
  io::save_adapter(a, out, io::is_directory(like) ? io::save_form::directory : io::save_form::file);
}

inline std::string fmt(double v, const char* format_string = "%.4g") {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format_string, v);
  return buffer;
}

// ---------------------------------------------------------------- inspect
struct inspect_options {
  std::string path;
  std::string top = "4";
  bool json = false;
};

/// The last `width` bytes of an escaped (valid UTF-8) name, after "...", cut at a character
/// boundary.
inline std::string fit(const std::string& name, std::size_t width) {
  if (name.size() <= width) return name;
  std::size_t from = name.size() - (width - 3);
  while (from < name.size() && (static_cast<unsigned char>(name[from]) & 0xC0) == 0x80) ++from;
  return "..." + name.substr(from);
}

inline int inspect(const inspect_options& o, streams& s) {
  const auto top = integer_value("--top", o.top, 0);
  // σ from the factors as stored, each read from the file when its module is computed: no decoded
  // copy, no image of the file.
  const auto a = io::adapter_view::open(o.path, {}, io::factor_reads::on_visit);
  report_warnings(a, s);

  std::vector<Eigen::VectorXd> sigma;
  try {
    sigma = lola::adapter_singular_values<double>(a);  // all r per module, zero-padded
  } catch (const lola::error& e) {
    throw lola::in_context(o.path, e);
  }

  if (o.json) {
    io::json_value modules = io::json_value::array();
    for (std::size_t i = 0; i < a.modules.size(); ++i) {
      const auto& m = a.modules[i];
      io::json_value entry = io::json_value::object();
      entry.set("name", m.name);
      entry.set("out_features", static_cast<long long>(m.rows()));
      entry.set("in_features", static_cast<long long>(m.cols()));
      entry.set("rank", static_cast<long long>(m.rank()));
      entry.set("scaling", m.scale);
      entry.set("fro_norm", lola::spectral_summary_from(sigma[i]).frobenius);  // scaled: no overflow
      io::json_value values = io::json_value::array();
      for (lola::index j = 0; j < sigma[i].size(); ++j) values.push_back(sigma[i](j));
      entry.set("singular_values", std::move(values));
      modules.push_back(std::move(entry));
    }
    io::json_value passthrough = io::json_value::array();
    for (const auto& t : a.passthrough) passthrough.push_back(t.name);
    io::json_value out = io::json_value::object();
    out.set("path", o.path);
    out.set("format", io::to_string(a.format));
    out.set("modules", std::move(modules));
    out.set("passthrough", std::move(passthrough));
    s.print(out.dump() + "\n");
    return 0;
  }

  std::vector<std::string> names;
  std::size_t width = 6;
  for (const auto& m : a.modules) {
    names.push_back(shown(m.name));
    width = std::max(width, names.back().size());
  }
  width = std::min<std::size_t>(width, 72);
  const int w = static_cast<int>(width);
  s.print(format("%s: %s adapter, %zu modules, %zu passthrough tensors\n", shown(o.path).c_str(),
                 io::to_string(a.format), a.modules.size(), a.passthrough.size()));
  s.print(format("%-*s  %-13s %5s %9s %10s %10s %8s  %s\n", w, "module", "d x k", "rank", "scale", "||dW||_F",
                 "sigma_1", "eff.rank", "top singular values"));
  double total = 0;  // ‖ΔW‖_F over all modules, accumulated by hypot (no overflow)
  long long parameters = 0;
  for (std::size_t i = 0; i < a.modules.size(); ++i) {
    const auto& m = a.modules[i];
    const auto summary = lola::spectral_summary_from(sigma[i]);
    total = std::hypot(total, summary.frobenius);
    parameters += static_cast<long long>(m.rank()) * (m.rows() + m.cols());
    std::string top_values;
    for (lola::index j = 0; j < std::min<lola::index>(top, sigma[i].size()); ++j)
      top_values += (j ? " " : "") + fmt(sigma[i](j), "%.3e");
    s.print(format("%-*s  %-13s %5ld %9s %10s %10s %8s  %s\n", w, fit(names[i], width).c_str(),
                   (std::to_string(m.rows()) + "x" + std::to_string(m.cols())).c_str(),
                   static_cast<long>(m.rank()), fmt(m.scale).c_str(), fmt(summary.frobenius, "%.4e").c_str(),
                   fmt(summary.spectral, "%.4e").c_str(), fmt(summary.effective_rank, "%.2f").c_str(),
                   top_values.c_str()));
  }
  s.print(format("total: %zu modules, %lld factor parameters, ||dW||_F over all modules %.4e\n",
                 a.modules.size(), parameters, total));
  return 0;
}

// ---------------------------------------------------------------- canonicalize
struct canonicalize_options {
  std::string path, output;
  std::string form = "balanced";
};

/// The view of the adapter at path, its warnings reported. Its factors are read on visit: the
/// edit that replaces them (canonicalize, resize) reads each once, with no image of the file.
inline io::adapter_view open_view(const std::string& path, const streams& s) {
  auto a = io::adapter_view::open(path, {}, io::factor_reads::on_visit);
  report_warnings(a, s);
  return a;
}

inline int canonicalize(const canonicalize_options& o, streams& s) {
  check_output_is_not_an_input(o.output, io::is_directory(o.path), {{o.path, input_role::replaced, "PATH"}});
  const auto form = o.form == "left" ? lola::canonical_form::left : lola::canonical_form::balanced;
  const auto in = open_view(o.path, s);
  const auto result = naming_path(o.path, [&] {
    progress p("canonicalize", in.modules.size(), s.err());
    return lola::canonicalize_adapter(in, form, ticking(p));
  });
  const io::encoded_adapter& out = result.adapter;
  save(out, o.path, o.output);
  std::string line = format("canonicalized %zu modules (%s form) into %s", out.modules.size(), o.form.c_str(),
                            shown(o.output).c_str());
  if (result.degenerate > 0)
    line += format("; %zu with repeated singular values (a rotation of those pairs is left free)", result.degenerate);
  s.print(line + "\n");
  return 0;
}

// ---------------------------------------------------------------- resize
struct resize_options {
  std::string path, output;
  std::optional<std::string> rank, sv_fro, sv_ratio, sv_cumulative;
};

inline int resize(const resize_options& o, streams& s) {
  std::vector<lola::rank_rule> rules;
  auto fraction = [&](const char* option, const std::string& text) {
    const double f = real_value(option, text);
    if (!(f > 0 && f <= 1)) throw usage_error(std::string(option) + " must be in (0, 1], got " + text);
    return f;
  };
  if (o.rank) rules.push_back(lola::rank_rule::fixed(integer_value("--rank", *o.rank, 1)));
  if (o.sv_fro) rules.push_back(lola::rank_rule::sv_fro(fraction("--sv-fro", *o.sv_fro)));
  if (o.sv_cumulative) rules.push_back(lola::rank_rule::sv_cumulative(fraction("--sv-cumulative", *o.sv_cumulative)));
  if (o.sv_ratio) {
    const double x = real_value("--sv-ratio", *o.sv_ratio);
    if (!(x >= 1)) throw usage_error("--sv-ratio must be >= 1, got " + *o.sv_ratio);
    rules.push_back(lola::rank_rule::sv_ratio(x));
  }
  if (rules.size() != 1) throw usage_error("give exactly one of --rank, --sv-fro, --sv-ratio, --sv-cumulative");
  check_output_is_not_an_input(o.output, io::is_directory(o.path), {{o.path, input_role::replaced, "PATH"}});
  const auto in = open_view(o.path, s);
  const auto result = naming_path(o.path, [&] {
    progress p("resize", in.modules.size(), s.err());
    return lola::resize_adapter(in, rules[0], lola::canonical_form::left, ticking(p));
  });
  const io::encoded_adapter& out = result.adapter;
  const std::vector<double>& retained = result.retained_fro_fraction;
  save(out, o.path, o.output);
  std::string text;
  for (std::size_t i = 0; i < in.modules.size(); ++i)
    text += format("%s: rank %ld -> %ld, retained Frobenius fraction %.6f\n", shown(in.modules[i].name).c_str(),
                   static_cast<long>(in.modules[i].rank()), static_cast<long>(out.modules[i].rank()), retained[i]);
  text += format("resized %zu modules into %s\n", in.modules.size(), shown(o.output).c_str());
  s.print(text);
  return 0;
}

// ---------------------------------------------------------------- merge
struct merge_options {
  std::vector<std::string> paths;
  std::string output;
  std::optional<std::string> weights, rank;
};

inline int merge(const merge_options& o, streams& s) {
  const auto& paths = o.paths;
  std::vector<double> weights(paths.size(), 1.0);
  if (o.weights) {
    std::string why;
    const auto parsed = parse_reals(*o.weights, why);
    if (!parsed) throw usage_error("--weights " + why + ", got \"" + *o.weights + "\"");
    weights = *parsed;
    if (weights.size() != paths.size())
      throw usage_error(std::to_string(paths.size()) + " adapters but " + std::to_string(weights.size()) +
                        " --weights");
  }
  const std::int64_t rank = o.rank ? integer_value("--rank", *o.rank, 1) : -1;
  std::vector<input_file> inputs;
  for (const auto& p : paths) inputs.push_back({p, input_role::replaced, "PATH"});
  check_output_is_not_an_input(o.output, io::is_directory(paths[0]), inputs);

  std::vector<adapter> adapters;
  {
    progress loading("load", paths.size(), s.err());
    for (const auto& p : paths) {
      adapters.push_back(load(p, s));
      loading.tick();
    }
  }
  std::vector<const adapter*> sources;
  for (const auto& a : adapters) sources.push_back(&a);
  lola::merge_adapters_options options;
  options.rank = rank;
  options.labels = paths;
  const auto merged = [&] {
    progress p("merge", 0, s.err());
    options.module_done = [&](std::size_t total) { p.tick(total); };
    return lola::merge_adapters(sources, weights, options);
  }();
  for (const auto& w : merged.warnings) s.message("lola: warning: " + w);
  const adapter& result = merged.adapter;
  save(result, paths[0], o.output);
  std::string text;
  for (const auto& m : merged.modules)
    text += format("%s: %zu of %zu adapters, rank %ld, retained Frobenius fraction %.6f\n", shown(m.name).c_str(),
                   m.sources, adapters.size(), static_cast<long>(m.rank), m.retained_fro_fraction);
  text += format("merged %zu adapters (%zu modules) into %s\n", adapters.size(), merged.modules.size(),
                 shown(o.output).c_str());
  s.print(text);
  return 0;
}

// ---------------------------------------------------------------- align
struct align_options {
  std::string path, templ, output;
};

inline int align(const align_options& o, streams& s) {
  check_output_is_not_an_input(o.output, io::is_directory(o.path),
                               {{o.path, input_role::replaced, "PATH"}, {o.templ, input_role::read, "--template"}});
  const adapter templ = load(o.templ, s);
  const io::module_lookup templ_modules(templ);
  adapter a = load(o.path, s);
  std::vector<double> uniqueness(a.modules.size());
  for_each_module(o.path, module_names(a), "align", s.err(), [&](std::size_t i) {
    auto& m = a.modules[i];
    const module* t = templ_modules.find(m.name);
    if (!t) throw lola::error(lola::error_code::invalid_argument, "has no counterpart in the template " + o.templ);
    if (t->rows() != m.rows() || t->cols() != m.cols() || t->rank() != m.rank())
      throw lola::error(lola::error_code::shape_mismatch,
                        "is " + std::to_string(m.rows()) + "x" + std::to_string(m.cols()) + " of rank " +
                            std::to_string(m.rank()) + " but the template's (" + o.templ + ") is " +
                            std::to_string(t->rows()) + "x" + std::to_string(t->cols()) + " of rank " +
                            std::to_string(t->rank()));
    auto r = lola::o_align(m.delta(), t->delta());
    uniqueness[i] = r.min_singular_value;
    m.set_factors(r.aligned.B(), r.aligned.A(), m.scale);
  });
  save(a, o.path, o.output);
  const double worst = uniqueness.empty() ? 1 : *std::min_element(uniqueness.begin(), uniqueness.end());
  s.print(format("aligned %zu modules to %s into %s; smallest sigma_r/sigma_1 of the Procrustes "
                 "matrices %.3e (Q is unique when > 0)\n",
                 a.modules.size(), shown(o.templ).c_str(), shown(o.output).c_str(), worst));
  return 0;
}

// ---------------------------------------------------------------- many adapters
/// How messages name adapter i of a run over many: its index among all the adapters the PATHs
/// stand for (not within a chunk), and its path.
inline std::string adapter_label(std::size_t i, const std::string& path) {
  return "adapter " + std::to_string(i) + " (" + path + ")";
}

/// Adapters read from some of the run's paths, with their indices in the run: decoded
/// (io::adapter<double>) or as the files store them (io::adapter_view).
template <class Adapter = adapter>
struct loaded_adapters {
  std::vector<Adapter> adapters;
  std::vector<std::size_t> index;
};

inline void read_into(std::optional<adapter>& out, const std::string& path, io::factor_reads) {
  out = io::load_adapter<double>(path);
}
inline void read_into(std::optional<io::adapter_view>& out, const std::string& path, io::factor_reads reads) {
  out = io::adapter_view::open(path, {}, reads);
}

/// Reads paths[i] for every i in `which`, in parallel, with progress. A failure is a lola::error
/// naming the adapter's index in the run and its path; with skip_bad the adapter is left out,
/// reported on stderr and added to `skipped` instead. Views read their factors as `reads` says
/// (factor_reads::on_visit: a non-finite factor is an error of the run, not of the read).
template <class Adapter = adapter>
loaded_adapters<Adapter> load_adapters(const std::vector<std::string>& paths, const std::vector<std::size_t>& which,
                                       bool skip_bad, std::vector<skipped_adapter>& skipped, const streams& s,
                                       progress& p, io::factor_reads reads = io::factor_reads::at_open) {
  std::vector<std::optional<Adapter>> out(which.size());
  std::vector<std::optional<std::string>> failure(which.size());
  lola::parallel_for(static_cast<lola::index>(which.size()), [&](lola::index k) {
    const std::size_t item = static_cast<std::size_t>(k), i = which[item];
    try {
      read_into(out[item], paths[i], reads);
    } catch (const lola::error& e) {
      if (!skip_bad) throw lola::error(e.code(), adapter_label(i, paths[i]) + ": " + e.message());
      failure[item] = e.message();
    }
    p.tick();
  });
  loaded_adapters<Adapter> result;
  for (std::size_t item = 0; item < which.size(); ++item) {
    const std::size_t i = which[item];
    if (failure[item]) {
      s.message("lola: warning: skipped " + adapter_label(i, paths[i]) + ": " + *failure[item]);
      skipped.push_back({paths[i], *failure[item]});
      continue;
    }
    report_warnings(*out[item], s);
    result.adapters.push_back(std::move(*out[item]));
    result.index.push_back(i);
  }
  return result;
}

/// Adapters are loaded, processed and released this many at a time (two per thread, at least 8, at
/// most 64), so memory does not grow with the number of PATHs and later chunks reuse the memory of
/// earlier ones: 64 Qwen2-1.5B-like BF16 adapters read as one chunk took 37,700 page faults and
/// 413 ms for `features --kind svd` on one thread, in chunks of 8 6,600 faults and 272 ms.
inline std::size_t adapters_per_chunk() {
  return std::clamp<std::size_t>(2 * static_cast<std::size_t>(lola::parallel_threads()), 8, 64);
}

/// The adapters PATHs stand for; folder entries found bad are reported on stderr when skipped.
inline adapter_paths expand(const std::vector<std::string>& paths, bool skip_bad, const streams& s) {
  adapter_paths found = expand_adapter_paths(paths, skip_bad);
  for (const auto& k : found.skipped) s.message("lola: warning: skipped " + k.path + ": " + k.reason);
  return found;
}

inline io::json_value skipped_json(const std::vector<skipped_adapter>& skipped) {
  io::json_value list = io::json_value::array();
  for (const auto& k : skipped) {
    io::json_value entry = io::json_value::array();
    entry.push_back(k.path);
    entry.push_back(k.reason);
    list.push_back(std::move(entry));
  }
  return list;
}

// ---------------------------------------------------------------- glnet
struct glnet_options {
  std::string weights;
  std::vector<std::string> paths;
  bool json = false, scaled = false, skip_bad = false;
  std::optional<std::string> dropout;
};

inline int glnet(const glnet_options& o, streams& s) {
  lola::nn::gl_net_options options;
  options.fold_scale = o.scaled;
  if (o.dropout) {
    options.dropout = real_value("--dropout", *o.dropout);
    if (!(options.dropout >= 0 && options.dropout < 1))
      throw usage_error("--dropout must be in [0, 1), got " + *o.dropout);
  }
  const auto weights = lola::nn::load_gl_net<double>(o.weights);
  for (const auto& key : weights.ignored_keys)
    s.message("lola: note: " + o.weights + ": \"" + key + "\" is saved by the reference but unused by its forward pass");
  const auto& net = weights.net;
  adapter_paths found = expand(o.paths, o.skip_bad, s);
  const std::vector<std::string>& paths = found.paths;

  // Printed only when every adapter has run, so a failure leaves nothing on stdout.
  io::json_value outputs = io::json_value::array();
  std::string text;
  std::size_t ran = 0;
  progress p("glnet", paths.size(), s.err());
  const std::size_t per_chunk = adapters_per_chunk();
  for (std::size_t first = 0; first < paths.size(); first += per_chunk) {
    std::vector<std::size_t> which;
    for (std::size_t i = first; i < std::min(first + per_chunk, paths.size()); ++i) which.push_back(i);
    const auto chunk = load_adapters<io::adapter_view>(paths, which, o.skip_bad, found.skipped, s, p);
    std::vector<const io::adapter_view*> batch;
    std::vector<std::string> names;
    for (std::size_t k = 0; k < chunk.adapters.size(); ++k) {
      batch.push_back(&chunk.adapters[k]);
      names.push_back(adapter_label(chunk.index[k], paths[chunk.index[k]]));
    }
    if (batch.empty()) continue;
    const lola::nn::matrix<double> y = net.forward(batch, options, names);
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const auto row = y.row(static_cast<lola::index>(k));
      const std::string& path = paths[chunk.index[k]];
      if (o.json) {
        io::json_value values = io::json_value::array();
        for (lola::index j = 0; j < row.size(); ++j) values.push_back(row(j));
        io::json_value entry = io::json_value::object();
        entry.set("path", path);
        entry.set("output", std::move(values));
        outputs.push_back(std::move(entry));
      } else {
        text += shown(path) + ":";
        for (lola::index j = 0; j < row.size(); ++j) text += " " + fmt(row(j), "%.9g");
        text += "\n";
      }
    }
    ran += batch.size();
  }
  if (ran == 0)
    throw lola::error(lola::error_code::invalid_argument,
                      "glnet: every adapter was skipped (" + std::to_string(found.skipped.size()) + "); nothing to run");
  if (o.json) {
    io::json_value out = io::json_value::object();
    out.set("outputs", std::move(outputs));
    if (o.skip_bad) out.set("skipped", skipped_json(found.skipped));
    s.print(out.dump() + "\n");
  } else {
    s.print(text);
  }
  return 0;
}

// ---------------------------------------------------------------- features
struct features_options {
  std::vector<std::string> paths;
  std::string output, kind;
  std::optional<std::string> rank, templ;
  bool scaled = false, skip_bad = false;
};

inline int features(const features_options& o, streams& s) {
  const auto kind = lola::parse_feature_kind(o.kind);
  if (!kind) throw usage_error("--kind must be raw, svd, dense, align or canonical, got \"" + o.kind + "\"");
  if (o.templ.has_value() != (*kind == lola::feature_kind::align))
    throw usage_error(*kind == lola::feature_kind::align ? "--kind align needs --template T"
                                                         : "--template is for --kind align only");
  if (o.rank && *kind != lola::feature_kind::svd) throw usage_error("--rank is for --kind svd only");
  lola::featurize_options<double> options;
  options.kind = *kind;
  options.fold_scale = o.scaled;
  if (o.rank) options.rank = static_cast<lola::index>(integer_value("--rank", *o.rank, 1, svd_length_max));
  adapter_paths found = expand(o.paths, o.skip_bad, s);
  const std::vector<std::string>& paths = found.paths;
  {
    std::vector<input_file> inputs;
    for (const auto& p : paths) inputs.push_back({p, input_role::read, "PATH"});
    if (o.templ) inputs.push_back({*o.templ, input_role::read, "--template"});
    check_output_is_not_an_input(o.output, false, inputs);
  }
  adapter templ;
  if (o.templ) {
    templ = load(*o.templ, s);
    options.templ = &templ;
  }

  // The first adapter that loads fixes the layout (module order, svd lengths). The adapters are
  // read as their files store them: the kernels widen the factors as they read them. Without
  // --skip-bad each factor is read when its module is computed (no image of the files); with it,
  // every factor is read and checked at open, so that a bad adapter is skipped before the run.
  const io::factor_reads reads = o.skip_bad ? io::factor_reads::at_open : io::factor_reads::on_visit;
  progress p("features", paths.size(), s.err());
  std::size_t first_index = 0;
  std::optional<io::adapter_view> first;
  for (;; ++first_index) {
    if (first_index == paths.size())
      throw lola::error(lola::error_code::invalid_argument,
                        "features: every adapter was skipped (" + std::to_string(found.skipped.size()) +
                            "); nothing to featurize");
    auto one = load_adapters<io::adapter_view>(paths, {first_index}, o.skip_bad, found.skipped, s, p, reads);
    if (!one.adapters.empty()) {
      first = std::move(one.adapters.front());
      break;
    }
  }
  // The first adapter fixes the layout and every batch is checked against it (featurize names
  // adapter k of a batch by options.indices[k], its index in the whole run). The table is float32
  // and at most 2^30 values (4 GiB).
  options.labels = {paths[first_index]};
  options.indices = {first_index};
  options.max_elements = std::uint64_t(1) << 30;
  const auto layout = lola::table_layout(*first, options);
  const std::uint64_t F = static_cast<std::uint64_t>(layout.features());
  const std::uint64_t N = paths.size() - first_index;
  lola::require_table_fits(N, layout, options);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> table(static_cast<lola::index>(N),
                                                                              static_cast<lola::index>(F));
  std::vector<std::string> row_paths;  // the path of each row written
  const std::size_t rest = first_index + 1;
  const std::size_t per_chunk = adapters_per_chunk();
  for (std::size_t start = rest; start == rest || start < paths.size(); start += per_chunk) {
    std::vector<std::size_t> which;
    for (std::size_t i = start; i < std::min(start + per_chunk, paths.size()); ++i) which.push_back(i);
    const auto chunk = load_adapters<io::adapter_view>(paths, which, o.skip_bad, found.skipped, s, p, reads);
    std::vector<const io::adapter_view*> batch;
    options.indices.clear();
    options.labels.clear();
    if (start == rest) {  // the first adapter's row, with the first batch
      batch.push_back(&*first);
      options.indices.push_back(first_index);
      options.labels.push_back(paths[first_index]);
    }
    for (std::size_t k = 0; k < chunk.adapters.size(); ++k) {
      batch.push_back(&chunk.adapters[k]);
      options.indices.push_back(chunk.index[k]);
      options.labels.push_back(paths[chunk.index[k]]);
    }
    lola::feature_matrix<double> rows(static_cast<lola::index>(batch.size()), static_cast<lola::index>(F));
    lola::featurize_into(layout, batch, options, rows);
    // The table is float32: a feature beyond its range is an error naming the adapter, never inf.
    for (lola::index k = 0; k < rows.rows(); ++k)
      if (rows.cols() > 0 && !(rows.row(k).cwiseAbs().maxCoeff() <= std::numeric_limits<float>::max()))
        throw lola::error(lola::error_code::numerical,
                          adapter_label(options.indices[static_cast<std::size_t>(k)],
                                        paths[options.indices[static_cast<std::size_t>(k)]]) +
                              ": a feature exceeds the float32 range of the table");
    table.middleRows(static_cast<lola::index>(row_paths.size()), rows.rows()) = rows.template cast<float>();
    for (std::size_t k = 0; k < batch.size(); ++k) row_paths.push_back(paths[options.indices[k]]);
  }

  const std::uint64_t n = row_paths.size();
  io::json_value path_list = io::json_value::array(), modules = io::json_value::array();
  for (const auto& path : row_paths) path_list.push_back(path);
  for (const auto& b : layout.blocks) {
    io::json_value entry = io::json_value::array();
    entry.push_back(b.name);
    entry.push_back(static_cast<long long>(b.offset));
    entry.push_back(static_cast<long long>(b.size));
    modules.push_back(std::move(entry));
  }
  io::metadata_map metadata = {{"kind", lola::to_string(*kind)}, {"paths", path_list.dump()},
                               {"modules", modules.dump()}, {"scaled", o.scaled ? "true" : "false"}};
  if (o.templ) metadata.emplace_back("template", *o.templ);
  if (o.skip_bad) metadata.emplace_back("skipped", skipped_json(found.skipped).dump());
  io::write_safetensors(
      o.output, {io::tensor::from_matrix("features", io::dtype::F32, {n, F}, table.topRows(static_cast<lola::index>(n)))},
      metadata);
  s.print(format("wrote %llu x %llu %s features of %zu adapters (%zu modules) to %s", static_cast<unsigned long long>(n),
                 static_cast<unsigned long long>(F), lola::to_string(*kind), row_paths.size(), layout.blocks.size(),
                 shown(o.output).c_str()) +
          (found.skipped.empty() ? "" : format("; %zu skipped", found.skipped.size())) + "\n");
  return 0;
}

}  // namespace lola_cli
