#pragma once
// The adapters a list of PATHs stands for (features, glnet). A PATH that is a directory without an
// adapter_model.safetensors entry is a folder of adapters and stands for its entries, in byte
// order of their names:
//   - an entry whose name starts with '.' (hidden: .git, lola's own .x.lola-tmp-* temporaries) or
//     contains ".lola-tmp" is not an adapter and is ignored, as is an entry whose name does not
//     end in ".safetensors" and which is not a directory (README.md, adapter_config.json, ...);
//   - a subdirectory (or a symlink to one) is an adapter when it holds adapter_model.safetensors,
//     and a bad entry otherwise;
//   - a name ending in ".safetensors" is an adapter when it is (or links to) a regular file, and a
//     bad entry when it is a FIFO, socket or device, a dangling symlink or a symlink loop.
// Entries are only lstat()ed and stat()ed here, never opened, so a FIFO cannot block the listing.
// A bad entry is a lola::error naming it, or, when skip_bad is set, a reported skip: its path and
// the reason are returned in `skipped`, in listing order. Nothing is dropped silently.
// A PATH that is not a folder of adapters is passed on unchanged: loading it reports its errors.

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <lola/core/error.hpp>

namespace lola_cli {

struct skipped_adapter {
  std::string path;
  std::string reason;
};

struct adapter_paths {
  std::vector<std::string> paths;       ///< the adapters, in order
  std::vector<skipped_adapter> skipped;  ///< bad folder entries passed over (skip_bad only)
};

namespace detail {

inline std::string file_type_name(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a directory";
  return "not a regular file";
}

/// Whether the folder entry at `path` (named `name`) is an adapter: "" when it is, "-" when it is
/// not meant as one (ignored), otherwise why it is a bad entry.
inline std::string classify_entry(const std::string& path, const std::string& name) {
  if (name.empty() || name[0] == '.' || name.find(".lola-tmp") != std::string::npos) return "-";
  const bool safetensors_name =
      name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
  struct stat link {};
  if (::lstat(path.c_str(), &link) != 0) return std::string("cannot be examined: ") + std::strerror(errno);
  struct stat target = link;
  if (S_ISLNK(link.st_mode) && ::stat(path.c_str(), &target) != 0) {
    if (!safetensors_name) return "-";  // a link that cannot be a directory or an adapter file by name
    if (errno == ELOOP) return "a symlink loop";
    if (errno == ENOENT) return "a dangling symlink";
    return std::string("a symlink that cannot be followed: ") + std::strerror(errno);
  }
  if (S_ISDIR(target.st_mode)) {
    struct stat weights {};
    const std::string inner = path + "/adapter_model.safetensors";
    if (::lstat(inner.c_str(), &weights) == 0) return "";
    if (errno == ENOENT)
      return "a subdirectory without adapter_model.safetensors" +
             std::string(::lstat((path + "/adapter_model.bin").c_str(), &weights) == 0
                             ? " (it holds adapter_model.bin, a pickle lola does not read)"
                             : "");
    return std::string("a subdirectory that cannot be examined: ") + std::strerror(errno);
  }
  if (!safetensors_name) return "-";
  if (S_ISREG(target.st_mode)) return "";
  return file_type_name(target.st_mode) + ", not a regular file";
}

}  // namespace detail

/// The adapters `paths` stand for (see the file comment).
inline adapter_paths expand_adapter_paths(const std::vector<std::string>& paths, bool skip_bad) {
  namespace fs = std::filesystem;
  adapter_paths out;
  for (const auto& path : paths) {
    struct stat st {};
    struct stat weights {};
    const std::string inner = path + "/adapter_model.safetensors";
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || ::lstat(inner.c_str(), &weights) == 0) {
      out.paths.push_back(path);
      continue;
    }
    std::vector<std::string> names;
    std::error_code ec;
    fs::directory_iterator it(path, ec);
    for (; !ec && it != fs::directory_iterator(); it.increment(ec)) names.push_back(it->path().filename().string());
    if (ec)
      throw lola::error(lola::error_code::io, path + ": cannot list the directory: " + ec.message());
    std::sort(names.begin(), names.end());
    const std::string dir = path.empty() || path.back() == '/' ? path : path + "/";
    std::size_t found = 0;
    for (const auto& name : names) {
      const std::string entry = dir + name;
      const std::string verdict = detail::classify_entry(entry, name);
      if (verdict == "-") continue;
      if (verdict.empty()) {
        out.paths.push_back(entry);
        ++found;
        continue;
      }
      if (!skip_bad)
        throw lola::error(lola::error_code::invalid_file,
                          entry + ": " + verdict + "; an entry of a folder of adapters must be an adapter "
                                                   "(--skip-bad skips and reports such entries)");
      out.skipped.push_back({entry, verdict});
      ++found;
    }
    if (found == 0)
      throw lola::error(lola::error_code::invalid_argument,
                        path + ": a directory with no adapters (no adapter_model.safetensors in it or "
                               "in its subdirectories, no .safetensors files)");
  }
  return out;
}

}  // namespace lola_cli
