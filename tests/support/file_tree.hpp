#pragma once
// Files as the tests see them, read and written with iostreams and lstat (independent of lola's
// readers and writers under test): a file's bytes, a whole tree as a map that two states of a
// folder can be compared by, and the temporaries lola may have left.

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace lola_test {

/// The bytes at path ("" for a file that cannot be opened).
inline std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Replaces the file at path with `bytes`.
inline void put_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) throw std::runtime_error("cannot write " + path);
}

/// Every entry under root, by path relative to it: "file <mode> <bytes>", "link <target>",
/// "dir <mode>" or "special". Equal maps mean byte-identical trees, modes and links included.
inline std::map<std::string, std::string> tree(const std::string& root) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const std::string p = it->path().string();
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) throw std::runtime_error("cannot lstat " + p);
    const std::string rel = p.substr(root.size()), mode = std::to_string(st.st_mode & 07777);
    if (S_ISLNK(st.st_mode))
      out[rel] = "link " + fs::read_symlink(p).string();
    else if (S_ISDIR(st.st_mode))
      out[rel] = "dir " + mode;
    else if (S_ISREG(st.st_mode))
      out[rel] = "file " + mode + " " + bytes_of(p);
    else
      out[rel] = "special";
  }
  return out;
}

/// Every path under root (recursively) whose name contains ".lola-tmp", the mark of lola's
/// temporary files and folders.
inline std::vector<std::string> temporaries_under(const std::string& root) {
  namespace fs = std::filesystem;
  std::vector<std::string> found;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->path().filename().string().find(".lola-tmp") != std::string::npos) found.push_back(it->path().string());
  return found;
}

}  // namespace lola_test
