#pragma once
// An output must not overwrite a file an input is read from. Files are compared by identity
// (device and inode, after following symlinks), so another spelling of a path, a symlink or a hard
// link is caught as well as the path itself.
//
// The files of an input adapter PATH: PATH itself; for a directory its adapter_model.safetensors
// and adapter_config.json; for a file the adapter_config.json beside it (read for a PEFT file).
// The files an output OUT replaces: OUT itself; written as a directory, also the two files inside.
// An output is refused (usage error, before any work) when one of its files is one of an input's
// files — except when OUT is the input as a whole (the same directory or the same file) and the
// command replaces that adapter: lola writes the whole output under a temporary name and renames
// it into place, so `lola canonicalize a/ -o a/` either succeeds or leaves a/ as it was. Inputs
// that are read but not replaced (a template, a GL-net's weights, the adapters of `features`) are
// never a valid output.

#include <sys/stat.h>

#include <string>
#include <utility>
#include <vector>

#include <lola/io/load.hpp>

#include "usage_error.hpp"

namespace lola_cli {

namespace detail {

struct file_id {
  dev_t device = 0;
  ino_t inode = 0;
  bool operator==(const file_id& o) const { return device == o.device && inode == o.inode; }
};

inline bool identify(const std::string& path, file_id& id) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  id = {st.st_dev, st.st_ino};
  return true;
}

inline std::string parent_of(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

/// (path, identity) of every existing file among `paths`.
inline std::vector<std::pair<std::string, file_id>> identities(const std::vector<std::string>& paths) {
  std::vector<std::pair<std::string, file_id>> out;
  for (const auto& p : paths) {
    file_id id;
    if (identify(p, id)) out.emplace_back(p, id);
  }
  return out;
}

}  // namespace detail

/// What an input is to the command.
enum class input_role {
  replaced,  ///< the adapter the command transforms; OUT may be this adapter as a whole
  read,      ///< read only (template, weights, features' adapters): never an output
};

struct input_file {
  std::string path;
  input_role role;
  std::string label;  ///< how the message names it: "PATH", "--template", ...
};

/// Throws usage_error when writing OUT (as a directory when `as_directory`) would overwrite a file
/// of one of `inputs` (see the file comment).
inline void check_output_is_not_an_input(const std::string& out, bool as_directory,
                                         const std::vector<input_file>& inputs) {
  std::vector<std::string> out_files{out};
  if (as_directory || lola::io::is_directory(out)) {
    out_files.push_back(out + "/adapter_model.safetensors");
    out_files.push_back(out + "/adapter_config.json");
  }
  const auto written = detail::identities(out_files);
  if (written.empty()) return;  // nothing there yet: nothing to overwrite
  detail::file_id out_id;
  const bool out_exists = detail::identify(out, out_id);
  for (const auto& [path, role, label] : inputs) {
    detail::file_id in_id;
    const bool in_exists = detail::identify(path, in_id);
    if (role == input_role::replaced && in_exists && out_exists && in_id == out_id) continue;  // whole
    std::vector<std::string> read{path};
    if (lola::io::is_directory(path)) {
      read.push_back(path + "/adapter_model.safetensors");
      read.push_back(path + "/adapter_config.json");
    } else {
      read.push_back(detail::parent_of(path) + "/adapter_config.json");
    }
    for (const auto& [in_file, in_file_id] : detail::identities(read))
      for (const auto& [out_file, out_file_id] : written)
        if (in_file_id == out_file_id)
          throw usage_error("the output " + out + " would overwrite " +
                            (in_file == path ? "the input " : "the input's file ") + in_file + " (" +
                            label + " " + path + ")" +
                            (role == input_role::replaced
                                 ? "; write elsewhere, or give the input itself as the output to "
                                   "replace it as a whole"
                                 : "; write elsewhere"));
  }
}

}  // namespace lola_cli
