#pragma once
/// @file
/// The PEFT dialect: adapter_model.safetensors keys and adapter_config.json scaling.
///
/// Keys (the adapter name already stripped by PEFT's save):
///   <module>.lora_A.weight        A, r × in (conv: r × in × kh × kw)
///   <module>.lora_B.weight        B, out × r (conv: out × r × 1 × 1)
///   <module>.lora_embedding_A     A, r × num_embeddings;  <module>.lora_embedding_B  B, dim × r
///   <module>.lora_B.bias          lora_bias, kept with the module
///   <module>.lora_magnitude_vector  DoRA magnitude, kept with the module
/// Scaling (PEFT tuners/lora): s = α / r, or α / √r with use_rslora, where r and α come from
/// rank_pattern / alpha_pattern when a pattern key K matches the module name M, i.e. when
/// re.match(rf"(.*\.)?({K})$", M) — the first matching key in the config's order wins — and from
/// r / lora_alpha otherwise. M is the module's name in the base model: the key prefix without
/// "base_model.model.". The keys are compiled once per config (io/pattern.hpp), so matching
/// every module of an adapter is linear in its names.

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/dialect.hpp"
#include "lola/io/json.hpp"
#include "lola/io/pattern.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

/// A rank_pattern or alpha_pattern: its keys in the config's order with their values, the keys
/// compiled once (pattern_set).
class pattern_values {
 public:
  using entry = std::pair<std::string, double>;

  pattern_values() = default;
  /// `what` names the field in messages ("dir/adapter_config.json: rank_pattern"). Errors are
  /// pattern_set's: a key that is not a regular expression, or one lola does not support.
  pattern_values(std::vector<entry> entries, const std::string& what)
      : entries_(std::move(entries)), keys_(key_list(entries_), what) {}

  const std::vector<entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }

  /// The first entry whose key matches the module's model name (PEFT's get_pattern_key), or
  /// nullptr when none does.
  const entry* match(std::string_view model_name) const {
    const std::size_t i = keys_.find(model_name);
    return i == pattern_set::npos ? nullptr : &entries_[i];
  }

 private:
  static std::vector<std::string> key_list(const std::vector<entry>& entries) {
    std::vector<std::string> keys;
    keys.reserve(entries.size());
    for (const auto& e : entries) keys.push_back(e.first);
    return keys;
  }

  std::vector<entry> entries_;
  pattern_set keys_;
};

namespace detail {

/// PEFT's scale s = α/r, or α/√r with use_rslora (rsLoRA).
inline double peft_scale(double alpha, double rank, bool rslora) {
  return alpha / (rslora ? std::sqrt(rank) : rank);
}

/// The α that gives scale s at rank r under peft_scale: s·r, or s·√r.
inline double peft_alpha(double scale, double rank, bool rslora) {
  return scale * (rslora ? std::sqrt(rank) : rank);
}

}  // namespace detail

/// One module's rank, α and scale under a config; rank_key is the rank_pattern entry that gave r
/// (nullptr: the config's r).
struct peft_scaling {
  double r, alpha, scale;
  const pattern_values::entry* rank_key;
};

/// The scaling-related fields of adapter_config.json.
struct peft_config {
  double r = 8;
  double lora_alpha = 8;
  bool use_rslora = false;
  bool fan_in_fan_out = false;
  pattern_values rank_pattern;   ///< in the config's order
  pattern_values alpha_pattern;  ///< in the config's order

  /// Reads the fields PEFT's LoraConfig gives defaults for, compiling the pattern keys; other
  /// fields are left to the caller. Errors (invalid_file / unsupported) name `source` and the
  /// field or key.
  static peft_config from_json(const json_value& config, const std::string& source) {
    if (!config.is_object())
      throw error(error_code::invalid_file, source + ": adapter_config.json is not a JSON object");
    peft_config c;
    auto number = [&](const char* field, double& out, bool positive) {
      const auto* v = config.find(field);
      if (!v || v->is_null()) return;
      if (!v->is_number() || !std::isfinite(v->as_double()) || (positive && v->as_double() <= 0))
        throw error(error_code::invalid_file, source + ": \"" + field + "\" must be a " +
                                                  (positive ? "positive " : "finite ") + "number");
      out = v->as_double();
    };
    auto flag = [&](const char* field, bool& out) {
      const auto* v = config.find(field);
      if (!v || v->is_null()) return;
      if (!v->is_bool())
        throw error(error_code::invalid_file, source + ": \"" + field + "\" must be true or false");
      out = v->as_bool();
    };
    auto patterns = [&](const char* field, pattern_values& out, bool positive) {
      const auto* v = config.find(field);
      if (!v || v->is_null()) return;
      if (!v->is_object())
        throw error(error_code::invalid_file, source + ": \"" + field + "\" must be an object");
      std::vector<pattern_values::entry> entries;
      entries.reserve(v->members().size());
      for (const auto& [key, value] : v->members()) {
        if (!value.is_number() || !std::isfinite(value.as_double()) ||
            (positive && value.as_double() <= 0))
          throw error(error_code::invalid_file, source + ": " + field + "[" + detail::shown_name(key) +
                                                    "] must be a " + (positive ? "positive " : "finite ") +
                                                    "number");
        entries.emplace_back(key, value.as_double());
      }
      out = pattern_values(std::move(entries), source + ": " + field);
    };
    if (const auto* type = config.find("peft_type"); type && !type->is_null()) {
      if (!type->is_string() || type->as_string() != "LORA")
        throw error(error_code::unsupported,
                    source + ": peft_type is " +
                        printable(type->is_string() ? type->as_string() : type->dump()) +
                        "; lola reads LORA adapters");
    }
    number("r", c.r, true);
    number("lora_alpha", c.lora_alpha, false);
    flag("use_rslora", c.use_rslora);
    flag("fan_in_fan_out", c.fan_in_fan_out);
    patterns("rank_pattern", c.rank_pattern, true);
    patterns("alpha_pattern", c.alpha_pattern, false);
    return c;
  }

  /// PEFT's scaling of the module with this model name (no base_model.model. prefix):
  /// r and α from the first matching rank_pattern / alpha_pattern key, else r / lora_alpha;
  /// s = α / r, or α / √r with use_rslora.
  peft_scaling scaling(std::string_view model_name) const {
    const auto* rank_key = rank_pattern.match(model_name);
    const auto* alpha_key = alpha_pattern.match(model_name);
    const double rank = rank_key ? rank_key->second : r;
    const double alpha = alpha_key ? alpha_key->second : lora_alpha;
    return {rank, alpha, detail::peft_scale(alpha, rank, use_rslora), rank_key};
  }
};

namespace detail {

inline const std::vector<key_rule>& peft_rules() {
  static const std::vector<key_rule> rules = {
      {".lora_A.weight", key_role::A, module_kind::linear},
      {".lora_B.weight", key_role::B, module_kind::linear},
      {".lora_embedding_A", key_role::A, module_kind::embedding},
      {".lora_embedding_B", key_role::B, module_kind::embedding},
      {".lora_B.bias", key_role::extra, module_kind::linear},
      {".lora_magnitude_vector", key_role::extra, module_kind::linear},
      {".lora_magnitude_vector.weight", key_role::extra, module_kind::linear},
  };
  return rules;
}

/// The module's name in the base model, as PEFT matches patterns against it.
inline std::string peft_model_name(const std::string& key_prefix) {
  constexpr std::string_view wrapper = "base_model.model.";
  return key_prefix.rfind(wrapper, 0) == 0 ? key_prefix.substr(wrapper.size()) : key_prefix;
}

/// Python's re.escape: every character except ASCII letters, digits and '_' gets a backslash.
inline std::string regex_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_' || static_cast<unsigned char>(c) >= 0x80;
    if (!plain) out += '\\';
    out += c;
  }
  return out;
}

/// α as written to a config (snap_alpha): a JSON integer when it snapped to one.
inline json_value alpha_value(double alpha) {
  const double snapped = snap_alpha(alpha);
  if (snapped == std::round(snapped) && std::abs(snapped) < 9e15)
    return json_value(static_cast<long long>(snapped));
  return json_value(snapped);
}

/// Pattern entries (module indices, longest name first) that give every module its value under
/// PEFT's first-match rule, where values[i] differs from the default: each such module gets a
/// key of its own full name; a module at the default value that a shorter key would capture gets
/// one too. A module's own name is the longest key that can match it, so longest-first order lets
/// it win over every other matching key. Each round matches every name against the keys once
/// (pattern_set::of_names: linear in the names' bytes); a round adds keys only for modules a
/// shorter key captured, and the rounds stop when one adds none.
inline std::vector<std::size_t> pattern_modules(const std::vector<std::string>& names,
                                                const std::vector<double>& values, double fallback) {
  std::vector<char> listed(names.size(), 0);
  for (std::size_t i = 0; i < names.size(); ++i) listed[i] = values[i] != fallback;
  auto ordered = [&] {
    std::vector<std::size_t> keys;
    for (std::size_t i = 0; i < names.size(); ++i)
      if (listed[i]) keys.push_back(i);
    std::stable_sort(keys.begin(), keys.end(),
                     [&](std::size_t a, std::size_t b) { return names[a].size() > names[b].size(); });
    return keys;
  };
  for (bool changed = true; changed;) {
    changed = false;
    const auto keys = ordered();
    std::vector<std::string> key_names;
    key_names.reserve(keys.size());
    for (std::size_t k : keys) key_names.push_back(names[k]);
    const auto set = pattern_set::of_names(std::move(key_names));
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (listed[i]) continue;
      const std::size_t k = set.find(names[i]);
      if (k != pattern_set::npos && values[keys[k]] != values[i]) listed[i] = 1, changed = true;
    }
  }
  return ordered();
}

}  // namespace detail

/// Reads a PEFT adapter from a validated safetensors image. `config` is adapter_config.json (null
/// or nullptr when there is none: then s = 1, i.e. lora_alpha = r, and a warning says so).
/// Errors: a module missing a factor, ranks or shapes that disagree, a tensor rank that differs
/// from the config's r for that module, a non-floating factor dtype — each naming the module.
/// Into `out`: an adapter<S> (factors decoded) or an adapter_view (factors as stored).
template <class Adapter>
void read_peft_into(Adapter& out, const safetensors_view& file, const json_value* config = nullptr,
                    const std::string& config_source = "adapter_config.json") {
  out.format = adapter_format::peft;
  out.metadata = file.metadata();
  const bool has_config = config && !config->is_null();
  peft_config cfg;
  if (has_config) {
    cfg = peft_config::from_json(*config, config_source);
    out.config = *config;
  }

  std::vector<const tensor_info*> unmatched;
  const auto groups = detail::group_modules(file, detail::peft_rules(), unmatched);
  for (const auto& keys : groups) {
    if (!keys.A && !keys.B) {  // only a bias or magnitude: not a module of its own
      for (const auto* t : keys.extras) unmatched.push_back(t);
      continue;
    }
    auto m = read_module_as(detail::module_tag_of(out), file, keys, "lora_A", "lora_B");
    if (cfg.fan_in_fan_out && m.kind == module_kind::linear) m.transposed = true;
    if (has_config) {
      const auto scaling = cfg.scaling(detail::peft_model_name(m.name));
      if (scaling.r != static_cast<double>(m.rank()))
        throw error(error_code::invalid_file,
                    file.source() + ": module " + detail::shown_name(m.name) + " has rank " +
                        std::to_string(m.rank()) + " but " + config_source + " gives r = " +
                        json_value(scaling.r).dump() +
                        (scaling.rank_key ? " (rank_pattern " + detail::shown_name(scaling.rank_key->first) + ")"
                                          : ""));
      m.scale = scaling.scale;
    }
    out.modules.push_back(std::move(m));
  }
  if (out.modules.empty())
    throw error(error_code::invalid_file,
                file.source() + ": no PEFT LoRA modules (keys ending in .lora_A.weight / .lora_B.weight)");
  if (!has_config)
    out.warnings.push_back(file.source() +
                           ": no adapter_config.json; scaling taken as 1 (lora_alpha = r)");
  for (const auto* t : unmatched) out.passthrough.push_back(tensor::copy_of(file, *t));
  if (!out.passthrough.empty())
    out.warnings.push_back(file.source() + ": " +
                           detail::passthrough_warning(out.passthrough, "not LoRA factors"));
}

/// read_peft_into into an adapter whose factors are decoded to S.
template <class S = float>
adapter<S> read_peft(const safetensors_view& file, const json_value* config = nullptr,
                     const std::string& config_source = "adapter_config.json") {
  adapter<S> out;
  read_peft_into(out, file, config, config_source);
  return out;
}

/// Whether an adapter_config.json is needed to reproduce every module's scale (false when every
/// s is 1 and there was no config to begin with).
template <class Module>
bool peft_needs_config(const basic_adapter<Module>& a) {
  if (!a.config.is_null()) return true;
  return std::any_of(a.modules.begin(), a.modules.end(), [](const auto& m) { return m.scale != 1; });
}

/// adapter_config.json for the adapter's modules: the original config with r and lora_alpha set to
/// the most common rank and α (ties: the smaller), and rank_pattern / alpha_pattern keyed by
/// escaped full module names (detail::pattern_modules says which). α = s·r, or s·√r with use_rslora, so that PEFT's rule
/// reproduces each module's s.
template <class Module>
json_value peft_config_json(const basic_adapter<Module>& a) {
  json_value config = a.config.is_object() ? a.config : json_value::object();
  if (!config.find("peft_type")) config.set("peft_type", "LORA");
  const bool rslora = [&] {
    const auto* v = config.find("use_rslora");
    return v && v->is_bool() && v->as_bool();
  }();
  std::vector<std::pair<double, double>> rank_alpha;  // per module
  for (const auto& m : a.modules) {
    const double r = static_cast<double>(m.rank());
    const json_value alpha = detail::alpha_value(detail::peft_alpha(m.scale, r, rslora));
    rank_alpha.emplace_back(r, alpha.as_double());
  }
  auto most_common = [](std::vector<double> values) {
    std::map<double, int> count;
    for (double v : values) ++count[v];
    double best = values.empty() ? 0 : values.front();
    int best_count = 0;
    for (const auto& [v, c] : count)
      if (c > best_count) best = v, best_count = c;
    return best;
  };
  std::vector<double> ranks, alphas;
  for (const auto& [r, al] : rank_alpha) ranks.push_back(r), alphas.push_back(al);
  const double r0 = a.modules.empty() ? 8 : most_common(ranks);
  const double alpha0 = a.modules.empty() ? 8 : most_common(alphas);
  std::vector<std::string> names;
  for (const auto& m : a.modules) names.push_back(detail::peft_model_name(m.name));
  json_value rank_pattern = json_value::object(), alpha_pattern = json_value::object();
  for (std::size_t i : detail::pattern_modules(names, ranks, r0))
    rank_pattern.set(detail::regex_escape(names[i]), json_value(static_cast<long long>(ranks[i])));
  for (std::size_t i : detail::pattern_modules(names, alphas, alpha0))
    alpha_pattern.set(detail::regex_escape(names[i]), detail::alpha_value(alphas[i]));
  config.set("r", json_value(static_cast<long long>(r0)));
  config.set("lora_alpha", detail::alpha_value(alpha0));
  config.set("rank_pattern", std::move(rank_pattern));
  config.set("alpha_pattern", std::move(alpha_pattern));
  return config;
}

/// The tensors of a PEFT adapter_model.safetensors for the adapter (factors in their file dtypes
/// and shapes, module extras, passthrough tensors); the list refers to the adapter's tensors.
template <class Module>
tensor_list peft_tensor_list(const basic_adapter<Module>& a) {
  tensor_list out;
  for (const auto& m : a.modules) {
    add_factor_tensors(out, m, A_factor_key(adapter_format::peft, m), B_factor_key(adapter_format::peft, m));
    for (const auto& t : m.extras) out.refer(t);
  }
  for (const auto& t : a.passthrough) out.refer(t);
  return out;
}

/// peft_tensor_list's tensors, copied.
template <class Module>
std::vector<tensor> peft_tensors(const basic_adapter<Module>& a) {
  return peft_tensor_list(a).copies();
}

}  // namespace lola::io
