#pragma once
// The lola command line: a CLI11 App per command (inspect, canonicalize, ...), chosen by the first
// argument, and run(), which parses a command line, runs the command and maps every outcome to an
// exit code:
//   0  success (and --help, --version);
//   1  invalid input: a file, folder or adapter lola cannot use, or an output it cannot write
//      (standard output included); one line on stderr, from lola::error;
//   2  usage error: the command line itself is wrong; one line on stderr naming the subcommand,
//      with a hint to run --help.
// Each command's help is generated from its option definitions, after its usage line and the
// paragraph that describes it. `--` ends the options (what follows is positional, so a file named
// "-o" or "--json" can be given), -h / --help is a flag only (never taken from an option's value or
// from after `--`), and --help wins over any other error on the line. Each command is its own
// top-level App rather than a CLI11 subcommand: in CLI11 2.1 a `--` inside a subcommand whose
// positionals are already satisfied ends the subcommand instead of its options, so
// `lola merge a -o out -- -b` would fail; and a word naming another command is then simply an
// argument (a file called "inspect").
// Every message is one line with names escaped (lola/io/printable.hpp), so a file cannot forge
// lines or drive the terminal. run() never calls exit(); it ignores SIGPIPE (a closed pipe on
// stdout is then EPIPE, exit 1) and SIGXFSZ (a file size limit is then EFBIG from the write,
// reported by the writer, not a signal that kills the process).

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <lola/version.hpp>

#include "commands.hpp"

namespace lola_cli {

namespace detail {

constexpr const char* overview_head = "lola — LoRA adapters from their factors\n\nUsage: lola <command> [options]\n";

constexpr const char* overview_tail =
    R"(PATH is a PEFT directory (adapter_config.json + adapter_model.safetensors) or a .safetensors
file (PEFT or kohya; a PEFT file takes its scaling from an adapter_config.json beside it).
OUT takes PATH's form: a directory for a directory, a file for a file. An OUT that is one of the
inputs' files is refused, unless it is the input adapter itself, which is then replaced whole.
Exit codes: 0 success, 1 invalid input (one line on stderr), 2 usage error.
Run 'lola <command> --help' for a command's options.
)";

/// Help pages: the usage line first, then the command's description, then its arguments as CLI11
/// formats them from their definitions.
class help_format : public CLI::Formatter {
 public:
  help_format() { column_width(22); }

  std::string make_help(const CLI::App* app, std::string name, CLI::AppFormatMode mode) const override {
    return make_usage(app, name) + "\n" + app->get_footer() + "\n" + make_positionals(app) +
           make_groups(app, mode);
  }
};

/// CLI11 check for an integer flag in [low, high] (numbers.hpp).
inline CLI::Validator integer_check(std::int64_t low, std::int64_t high = integer_max) {
  return CLI::Validator(
      [low, high](std::string& text) {
        std::string why;
        return parse_integer(text, low, high, why) ? std::string() : why + ", got \"" + text + "\"";
      },
      "");
}

/// CLI11 check for a finite real flag.
inline CLI::Validator real_check() {
  return CLI::Validator(
      [](std::string& text) {
        std::string why;
        return parse_real(text, why) ? std::string() : why + ", got \"" + text + "\"";
      },
      "");
}

/// CLI11 check for a comma-separated list of finite reals.
inline CLI::Validator reals_check() {
  return CLI::Validator(
      [](std::string& text) {
        std::string why;
        return parse_reals(text, why) ? std::string() : why + ", got \"" + text + "\"";
      },
      "");
}

inline CLI::Validator one_of(std::vector<std::string> values) {
  return CLI::Validator(
      [values](std::string& text) {
        if (std::find(values.begin(), values.end(), text) != values.end()) return std::string();
        std::string list;
        for (std::size_t i = 0; i < values.size(); ++i)
          list += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + values[i];
        return "must be " + list + ", got \"" + text + "\"";
      },
      "");
}

/// The parsed options of every command; the command's App binds to its own.
struct parsed {
  inspect_options inspect;
  canonicalize_options canonicalize;
  resize_options resize;
  merge_options merge;
  align_options align;
  glnet_options glnet;
  features_options features;
};

/// The commands, with the one-line summary the overview lists.
struct command_summary {
  const char* name;
  const char* summary;
};
constexpr command_summary commands[] = {
    {"inspect", "per-module shapes, ranks, scales, norms and singular values"},
    {"canonicalize", "write the canonical (GL(r)-invariant) factors of every module"},
    {"resize", "truncate every module to a fixed or spectrum-chosen rank"},
    {"merge", "the weighted sum of several adapters, module by module"},
    {"align", "O-Align every module to a template adapter"},
    {"glnet", "run a GL-net (LoL reference weights) on adapters"},
    {"features", "an N x F feature matrix of many adapters, for learning on LoRAs"},
};

inline bool is_command(const std::string& name) {
  for (const auto& c : commands)
    if (name == c.name) return true;
  return false;
}

/// `lola --help`: the commands and what PATH and OUT are.
inline std::string overview() {
  std::string out = std::string(overview_head) + "\nCommands:\n";
  for (const auto& c : commands) out += format("  %-13s %s\n", c.name, c.summary);
  out += "\nOptions:\n  -h, --help    this overview\n  --version     the version of lola\n\n";
  return out + overview_tail;
}

/// An optional option whose value is kept as text (checked by `check` when given, converted by
/// the command).
inline CLI::Option* text_option(CLI::App* sub, const char* names, std::optional<std::string>& into,
                                const char* value_name, const char* help) {
  return sub->add_option_function<std::string>(names, [&into](const std::string& v) { into = v; }, help)
      ->type_name(value_name);
}
inline CLI::Option* text_option(CLI::App* sub, const char* names, std::optional<std::string>& into,
                                const char* value_name, const char* help, CLI::Validator check) {
  return text_option(sub, names, into, value_name, help)->check(std::move(check));
}

/// The App of command `name` (one of `commands`), bound to p: usage, the description of what
/// the command computes, then its arguments.
inline std::unique_ptr<CLI::App> make_command(const std::string& name, parsed& p) {
  std::string summary;
  for (const auto& c : commands)
    if (name == c.name) summary = c.summary;
  auto app = std::make_unique<CLI::App>(summary, "lola " + name);
  auto command = [&](const char* which, const char* description) -> CLI::App* {
    if (name != which) return nullptr;
    app->footer(description);
    return app.get();
  };
  app->formatter(std::make_shared<help_format>());
  app->set_help_flag("-h,--help", "print this help and exit");
  app->option_defaults()->disable_flag_override();
  const char* path_help = "a PEFT directory or a .safetensors file";
  const char* out_help = "where to write (OUT takes PATH's form)";

  if (CLI::App* sub = command("inspect",
          "A table per module: name, d x k, rank, scale s, ||dW||_F, sigma_1, entropy effective\n"
          "rank and the top K singular values of dW = s*B*A, then totals. Names taken from the\n"
          "file are shown with control characters, invalid UTF-8 and '\\' escaped (\\xNN, \\\\).")) {
    sub->add_option("PATH", p.inspect.path, path_help)->required()->type_name("");
    sub->add_flag("--json", p.inspect.json,
                  "print one JSON object instead: {\"path\", \"format\", \"modules\": [{\"name\",\n"
                  "\"out_features\", \"in_features\", \"rank\", \"scaling\", \"fro_norm\",\n"
                  "\"singular_values\"}], \"passthrough\": [names]}, all r singular values,\n"
                  "modules in file order");
    sub->add_option("--top", p.inspect.top, "singular values per row of the table (default 4)")
        ->type_name("K")
        ->check(integer_check(0));
  }
  if (CLI::App* sub = command("canonicalize",
          "Writes every module's canonical factors, the same for every (B G, G^-1 A): U*sqrt(S),\n"
          "sqrt(S)*V^T (balanced, the default) or U*S, V^T (left); the sign of each singular pair is\n"
          "fixed so that the largest entry of U's column is positive. Same dialect, factor dtypes and\n"
          "scaling: s*B'*A' = s*B*A.")) {
    sub->add_option("PATH", p.canonicalize.path, path_help)->required()->type_name("");
    sub->add_option("-o,--output", p.canonicalize.output, out_help)->required()->type_name("OUT");
    sub->add_option("--form", p.canonicalize.form, "balanced (the default) or left")
        ->type_name("F")
        ->check(one_of({"balanced", "left"}));
  }
  if (CLI::App* sub = command("resize",
          "Truncates every module to its best approximation of the chosen rank, keeping the scale\n"
          "(alpha is rewritten as s*r'), and prints the retained Frobenius fraction per module.\n"
          "Give exactly one of --rank, --sv-fro, --sv-cumulative, --sv-ratio.")) {
    sub->add_option("PATH", p.resize.path, path_help)->required()->type_name("");
    sub->add_option("-o,--output", p.resize.output, out_help)->required()->type_name("OUT");
    text_option(sub, "--rank", p.resize.rank, "K", "rank K (at most the module's numerical rank)",
                integer_check(1));
    text_option(sub, "--sv-fro", p.resize.sv_fro, "F", "smallest k with ||dW_k||_F >= F*||dW||_F, F in (0, 1]",
                real_check());
    text_option(sub, "--sv-cumulative", p.resize.sv_cumulative, "F",
                "smallest k with sigma_1 + ... + sigma_k >= F*(sum of sigma), F in (0, 1]", real_check());
    text_option(sub, "--sv-ratio", p.resize.sv_ratio, "X", "every sigma_i > sigma_1 / X, X >= 1", real_check());
  }
  if (CLI::App* sub = command("merge",
          "The weighted sum  sum_i w_i * s_i * B_i * A_i  of every module (matched by name; a module\n"
          "missing from an adapter counts as zero), exact by factor concatenation, then re-compressed\n"
          "to its best rank-K approximation from the stacked factors (never a dense SVD). The result\n"
          "has scale 1, in the first adapter's dialect and form; prints the retained Frobenius\n"
          "fraction per module.")) {
    sub->add_option("PATH", p.merge.paths, path_help)->required()->type_name("");
    sub->add_option("-o,--output", p.merge.output, out_help)->required()->type_name("OUT");
    text_option(sub, "--weights", p.merge.weights, "W", "comma-separated weights, one per PATH (default all 1)",
                reals_check());
    text_option(sub, "--rank", p.merge.rank, "K", "the output rank (default: the largest input rank of the module)",
                integer_check(1));
  }
  if (CLI::App* sub = command("align",
          "O-Align (Learning on LoRAs): for every module, the Q in O(r) minimising\n"
          "||B Q - B_t||_F^2 + ||A^T Q - A_t^T||_F^2 against the template's module of the same\n"
          "name, and the aligned factors (B Q, Q^T A); dW is unchanged.")) {
    sub->add_option("PATH", p.align.path, path_help)->required()->type_name("");
    sub->add_option("--template", p.align.templ, "the template adapter (same module names, shapes and ranks)")
        ->required()
        ->type_name("T");
    sub->add_option("-o,--output", p.align.output, out_help)->required()->type_name("OUT");
  }
  const char* many_paths =
      "adapters; a directory without adapter_model.safetensors stands for\n"
      "its entries, in name order: its subdirectories (each must hold\n"
      "adapter_model.safetensors) and its .safetensors files (each must be\n"
      "a regular file); hidden entries and other files are ignored";
  const char* skip_bad_help =
      "skip every adapter that cannot be read and every bad folder entry,\n"
      "reporting each on stderr and in the output, instead of stopping";
  if (CLI::App* sub = command("glnet",
          "Runs the GL-net whose weights WEIGHTS holds (a .safetensors state_dict of the LoL reference\n"
          "GLInvariantMLP) on every adapter and prints one output vector per adapter. Modules are\n"
          "matched to the network's in lexicographic key order, as the reference loader sees them;\n"
          "every adapter needs the network's module count and shapes. Errors name an adapter by its\n"
          "index among all the adapters of the run and its path.")) {
    sub->add_option("WEIGHTS", p.glnet.weights, "the GL-net weights (.safetensors)")->required()->type_name("");
    sub->add_option("PATH", p.glnet.paths, many_paths)->required()->type_name("");
    sub->add_flag("--json", p.glnet.json,
                  "print {\"outputs\": [{\"path\", \"output\": [...]}, ...]} (and \"skipped\":\n"
                  "[[path, reason], ...] with --skip-bad)");
    sub->add_flag("--scaled", p.glnet.scaled, "fold each module's scale s into U = s*B (the reference ignores s)");
    text_option(sub, "--dropout", p.glnet.dropout, "P",
                "the EquivDropout p in [0, 1) the model was trained with (LLM models with K >= 2 layers)",
                real_check());
    sub->add_flag("--skip-bad", p.glnet.skip_bad, skip_bad_help);
  }
  if (CLI::App* sub = command("features",
          "Writes the N x F feature matrix of N adapters with one module layout as the float32 tensor\n"
          "\"features\" of OUT, one row per adapter, with the adapter paths, the kind and the module\n"
          "layout in its __metadata__ (\"paths\", \"kind\", \"modules\": [[name, offset, size], ...], and\n"
          "\"skipped\": [[path, reason], ...] with --skip-bad). Modules are laid out in lexicographic\n"
          "key order (as the LoL reference code numbers them); every adapter needs the same module\n"
          "names and shapes. Errors name an adapter by its index among all the adapters of the run\n"
          "and its path. Kinds:\n"
          "  raw        B and A^T of every module, flattened row-major (not invariant)\n"
          "  svd        the singular values of every module, padded or truncated to R (GL-invariant)\n"
          "  dense      dW = B*A flattened (GL-invariant; d*k features per module, size-guarded)\n"
          "  align      the factors O-Aligned to the template T (O(r)-invariant)\n"
          "  canonical  the balanced canonical factors (GL-invariant up to degeneracy)")) {
    sub->add_option("PATH", p.features.paths, many_paths)->required()->type_name("");
    sub->add_option("--kind", p.features.kind, "raw, svd, dense, align or canonical")
        ->required()
        ->type_name("KIND")
        ->check(one_of({"raw", "svd", "dense", "align", "canonical"}));
    text_option(sub, "--rank", p.features.rank, "R",
                "svd: the number of singular values per module (default: the first adapter's rank)",
                integer_check(1, svd_length_max));
    text_option(sub, "--template", p.features.templ, "T", "align: the template adapter");
    sub->add_flag("--scaled", p.features.scaled, "fold each module's scale s into U = s*B (the reference ignores s)");
    sub->add_option("-o,--output", p.features.output, "the .safetensors file to write")->required()->type_name("OUT");
    sub->add_flag("--skip-bad", p.features.skip_bad, skip_bad_help);
  }
  return app;
}

inline int dispatch(const std::string& name, const parsed& p, streams& s) {
  if (name == "inspect") return inspect(p.inspect, s);
  if (name == "canonicalize") return canonicalize(p.canonicalize, s);
  if (name == "resize") return resize(p.resize, s);
  if (name == "merge") return merge(p.merge, s);
  if (name == "align") return align(p.align, s);
  if (name == "glnet") return glnet(p.glnet, s);
  return features(p.features, s);
}

/// Prints text on the output stream and returns `code`, or 1 when the output cannot be written.
inline int print_and_return(streams& s, const std::string& text, int code) {
  try {
    s.print(text);
    s.finish();
  } catch (const lola::error& e) {
    s.message(e.what());
    return 1;
  }
  return code;
}

}  // namespace detail

/// Runs `lola argv[1] ...` writing to out and err; returns the exit code (see the file comment).
inline int run(int argc, char** argv, std::FILE* out = stdout, std::FILE* err = stderr) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGXFSZ, SIG_IGN);
  streams s(out, err);
  if (argc < 2) {
    s.text_message(detail::overview());  // lola's own text
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--version") return detail::print_and_return(s, std::string("lola ") + lola::version_string + "\n", 0);
  if (name == "-h" || name == "--help" || name == "help") return detail::print_and_return(s, detail::overview(), 0);
  if (!detail::is_command(name)) {
    s.message("lola: unknown " + std::string(name.rfind('-', 0) == 0 ? "option" : "command") + " \"" + name +
              "\"; run 'lola --help'");
    return 2;
  }

  detail::parsed options;
  const auto app = detail::make_command(name, options);
  try {
    app->parse(argc - 1, argv + 1);  // argv[1], the command, stands where a program name would
  } catch (const CLI::Success&) {   // --help
    return detail::print_and_return(s, app->help(), 0);
  } catch (const CLI::ParseError& e) {
    if (app->get_help_ptr()->count() > 0) return detail::print_and_return(s, app->help(), 0);  // --help wins
    s.message("lola " + name + ": " + e.what() + "; run 'lola " + name + " --help'");
    return 2;
  }
  try {
    const int code = detail::dispatch(name, options, s);
    s.finish();
    return code;
  } catch (const usage_error& e) {
    s.message("lola " + name + ": " + e.what() + "; run 'lola " + name + " --help'");
    return 2;
  } catch (const lola::error& e) {
    s.message(e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    s.message("lola: out of memory");
    return 1;
  }
}

}  // namespace lola_cli
