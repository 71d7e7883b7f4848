#pragma once
// Command-line parsing for the lola tool: positional arguments, options with a value ("-o OUT",
// "--rank 8", "--rank=8") and flags ("--json"). A usage error is a usage_error, which the tool
// reports with exit code 2.

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace lola_cli {

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class arguments {
 public:
  // `with_value`: options that take a value; `flags`: options that do not. Aliases map a short
  // spelling to its long one ("-o" → "--output").
  arguments(const std::vector<std::string>& args, const std::set<std::string>& with_value,
            const std::set<std::string>& flags, const std::map<std::string, std::string>& aliases = {}) {
    for (std::size_t i = 0; i < args.size(); ++i) {
      std::string arg = args[i];
      if (arg.size() < 2 || arg[0] != '-' || arg == "--") {
        positional_.push_back(arg);
        continue;
      }
      std::string value;
      bool has_value = false;
      if (const auto eq = arg.find('='); eq != std::string::npos && arg.rfind("--", 0) == 0) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_value = true;
      }
      if (const auto it = aliases.find(arg); it != aliases.end()) arg = it->second;
      if (flags.count(arg)) {
        if (has_value) throw usage_error(arg + " takes no value");
        flags_.insert(arg);
      } else if (with_value.count(arg)) {
        if (!has_value) {
          if (i + 1 >= args.size()) throw usage_error(arg + " needs a value");
          value = args[++i];
        }
        if (values_.count(arg)) throw usage_error(arg + " given twice");
        values_[arg] = value;
      } else {
        throw usage_error("unknown option " + arg);
      }
    }
  }

  const std::vector<std::string>& positional() const { return positional_; }
  bool flag(const std::string& name) const { return flags_.count(name) > 0; }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  const std::string& value(const std::string& name) const {
    const auto it = values_.find(name);
    if (it == values_.end()) throw usage_error("missing " + name);
    return it->second;
  }

  long integer(const std::string& name, long low) const {
    const std::string& text = value(name);
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || v < low)
      throw usage_error(name + " must be an integer >= " + std::to_string(low) + ", got \"" + text + "\"");
    return v;
  }

  static double number(const std::string& what, const std::string& text) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
      throw usage_error(what + " must be a finite number, got \"" + text + "\"");
    return v;
  }
  double number(const std::string& name) const { return number(name, value(name)); }

  std::vector<double> numbers(const std::string& name) const {
    std::vector<double> out;
    const std::string& text = value(name);
    std::size_t start = 0;
    while (true) {
      const auto comma = text.find(',', start);
      out.push_back(number(name, text.substr(start, comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }

 private:
  std::vector<std::string> positional_;
  std::set<std::string> flags_;
  std::map<std::string, std::string> values_;
};

}  // namespace lola_cli
