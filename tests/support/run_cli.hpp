#pragma once
// Running the `lola` command-line tool from a test (DESIGN.md §5): a fresh temporary directory per
// test, the tool run as a separate process (LOLA_CLI_PATH) with stdout and stderr captured to
// files, and the checks every subcommand's outcome is held to (exit code, one line on stderr,
// nothing written on failure).

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "lola/io/file.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#ifndef LOLA_CLI_PATH
#error "define LOLA_CLI_PATH as the path of the lola executable, a string literal"
#endif

namespace lola_test::cli {

// ------------------------------------------------------------------ files and processes

/// A fresh directory under /tmp, removed with everything in it at the end of the scope. The
/// tool's captured stdout / stderr go to its "logs" subdirectory.
struct temp_dir : lola_test::temp_dir {
  temp_dir() : lola_test::temp_dir("lola_cli") { std::filesystem::create_directory(path + "/logs"); }
};

inline bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::symlink_status(path, ec));
}

using lola_test::contains;

inline bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

inline std::string read_file(const std::string& path) {
  if (!exists(path)) return "";
  return lola::io::read_text_file(path);
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  lola::io::write_file_atomic(path, bytes);
}

/// Every path under root (recursively) whose name contains ".lola-tmp-".
inline std::vector<std::string> temporaries_under(const std::string& root) {
  std::vector<std::string> found;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    if (contains(it->path().filename().string(), ".lola-tmp")) found.push_back(it->path().string());
  return found;
}

struct run_result {
  int code = -1;         ///< the exit status, -1 when the process did not exit normally
  bool crashed = false;  ///< killed by a signal (abort, segfault, ...)
  std::string out, err;
  std::string command;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// Runs `lola args...` with stdout and stderr captured to files and stdin from /dev/null. `exec`
/// makes the shell replace itself by the tool, so a signal that kills the tool shows in the status.
inline run_result run_lola(const temp_dir& t, const std::vector<std::string>& args) {
  static int counter = 0;
  REQUIRE_MESSAGE(exists(LOLA_CLI_PATH), "the lola executable " << LOLA_CLI_PATH << " does not exist");
  const std::string stem = t / ("logs/run" + std::to_string(++counter));
  run_result r;
  r.command = "lola";
  for (const auto& a : args) r.command += " " + a;
  std::string cmd = "exec " + shell_quote(LOLA_CLI_PATH);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " </dev/null >" + shell_quote(stem + ".out") + " 2>" + shell_quote(stem + ".err");
  const int status = std::system(cmd.c_str());
  REQUIRE(status != -1);
  r.crashed = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) >= 126);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(stem + ".out");
  r.err = read_file(stem + ".err");
  return r;
}

inline std::size_t line_count(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

/// The lines of text (without their '\n').
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

inline std::vector<std::string> tokens_of(const std::string& line) {
  std::vector<std::string> tokens;
  std::istringstream in(line);
  for (std::string t; in >> t;) tokens.push_back(t);
  return tokens;
}

/// Success: exit 0, no crash.
inline void check_ok(const run_result& r) {
  INFO(r.command);
  INFO("stderr: " << r.err);
  CHECK_FALSE(r.crashed);
  REQUIRE(r.code == 0);
}

/// Invalid input: exit 1, exactly one line on stderr starting "lola: " and naming every string of
/// `mentions`, nothing on stdout, no crash.
inline void check_invalid_input(const run_result& r, const std::vector<std::string>& mentions) {
  INFO(r.command);
  INFO("stderr: " << r.err);
  CHECK_FALSE(r.crashed);
  CHECK(r.code == 1);
  CHECK(line_count(r.err) == 1);
  CHECK((!r.err.empty() && r.err.back() == '\n'));
  CHECK(starts_with(r.err, "lola: "));
  for (const auto& m : mentions) CHECK_MESSAGE(contains(r.err, m), "stderr should mention " << m);
  CHECK(r.out.empty());
}

/// Usage error: exit 2, exactly one line on stderr, naming every string of `mentions`, nothing on
/// stdout. The line starts "lola: " (unknown command) or "lola <command>: " (the tool names the
/// subcommand whose usage was wrong).
inline void check_usage_error(const run_result& r, const std::string& command,
                       const std::vector<std::string>& mentions) {
  INFO(r.command);
  INFO("stderr: " << r.err);
  CHECK_FALSE(r.crashed);
  CHECK(r.code == 2);
  CHECK(line_count(r.err) == 1);
  CHECK((starts_with(r.err, "lola: ") ||
         (!command.empty() && starts_with(r.err, "lola " + command + ": "))));
  for (const auto& m : mentions) CHECK_MESSAGE(contains(r.err, m), "stderr should mention " << m);
  CHECK(r.out.empty());
}

/// After a failing command: the output path does not exist and no temporary is left anywhere in
/// the test's directory.
inline void check_no_output(const temp_dir& t, const std::string& out) {
  INFO("output " << out);
  CHECK_FALSE(exists(out));
  const auto tmp = temporaries_under(t.path);
  CHECK_MESSAGE(tmp.empty(), "left behind: " << (tmp.empty() ? "" : tmp.front()));
}

}  // namespace lola_test::cli
