#pragma once
// A fresh directory under /tmp for tests that write files, removed with everything in it when the
// object goes out of scope.

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace lola_test {

struct temp_dir {
  std::string path;

  /// mkdtemp("/tmp/<prefix>_XXXXXX").
  explicit temp_dir(std::string_view prefix = "lola_test") {
    std::string pattern = "/tmp/" + std::string(prefix) + "_XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  /// The path of `name` inside the directory.
  std::string operator/(std::string_view name) const { return path + "/" + std::string(name); }
  std::string file(std::string_view name) const { return *this / name; }

  /// The names directly inside the directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

}  // namespace lola_test
