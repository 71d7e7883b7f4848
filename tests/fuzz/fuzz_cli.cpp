// libFuzzer target: the lola command line (tools/lola/run.hpp) on arbitrary argument lists, run
// in-process by lola_cli::run with stdout and stderr sent to /dev/null, in a sandbox directory of
// small valid inputs (fuzz_cli_input.hpp: how an input becomes arguments, which inputs are not run
// so that nothing outside the sandbox is touched, and what the sandbox holds).
//
// Contract under test: run() returns 0, 1 or 2 and never calls exit(); every error it expects
// (usage errors, lola::error, out of memory) is mapped to its exit code, so any exception that
// escapes run() is a finding and aborts, as do crashes, hangs and sanitizer reports.
// After a command that changed the sandbox (an output written, an input replaced), the sandbox is
// emptied and written again, so every input runs against the same files. The working directory
// is the sandbox only while run() runs; libFuzzer's own paths (corpus, artifacts) are resolved
// outside it, and scripts/fuzz.sh gives them as absolute paths, since a crash report is written
// from inside run().

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_cli_input.hpp"
#include "run.hpp"

namespace {

struct sandbox {
  std::string dir;
  std::vector<std::string> files;
  std::vector<struct stat> states;
  std::size_t entries = 0;
  std::FILE* null = nullptr;
  int home = -1;  ///< the working directory outside run()

  static std::size_t count_entries(const std::string& dir) {
    std::size_t n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
      ++n;
    return n;
  }

  void write() {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) std::filesystem::remove_all(entry.path(), ec);
    files = lola_fuzz::write_cli_sandbox(dir);
    states.assign(files.size(), {});
    for (std::size_t i = 0; i < files.size(); ++i) ::stat((dir + "/" + files[i]).c_str(), &states[i]);
    entries = count_entries(dir);
  }

  bool changed() const {
    for (std::size_t i = 0; i < files.size(); ++i) {
      struct stat now {};
      if (::stat((dir + "/" + files[i]).c_str(), &now) != 0 || now.st_ino != states[i].st_ino ||
          now.st_size != states[i].st_size || now.st_mtim.tv_sec != states[i].st_mtim.tv_sec ||
          now.st_mtim.tv_nsec != states[i].st_mtim.tv_nsec)
        return true;
    }
    return count_entries(dir) != entries;
  }
};

char sandbox_path[] = "/tmp/lola_fuzz_cli_XXXXXX";  // outlives every static object, for atexit

sandbox& the_sandbox() {
  static sandbox s = [] {
    sandbox made;
    if (!::mkdtemp(sandbox_path)) std::abort();
    made.dir = sandbox_path;
    made.null = std::fopen("/dev/null", "w");
    made.home = ::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!made.null || made.home < 0) std::abort();
    made.write();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(sandbox_path, ec);
    });
    return made;
  }();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  sandbox& box = the_sandbox();
  const auto args = lola_fuzz::cli_arguments(data, size);
  if (!args) return 0;
  std::vector<std::string> storage{"lola"};
  storage.insert(storage.end(), args->begin(), args->end());
  std::vector<char*> argv;
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (::chdir(box.dir.c_str()) != 0) std::abort();
  const int code = lola_cli::run(static_cast<int>(storage.size()), argv.data(), box.null, box.null);
  if (::fchdir(box.home) != 0) std::abort();
  if (code < 0 || code > 2) {
    std::fprintf(stderr, "fuzz_cli: exit code %d outside {0, 1, 2}\n", code);
    std::abort();
  }
  if (box.changed()) box.write();
  return 0;
}
