#pragma once
// Running the `lola` command-line tool from a test (DESIGN.md §5): a fresh temporary directory per
// test, the tool run as a separate process (LOLA_CLI_PATH) with stdout and stderr captured to
// files and a time limit (a hang is a failure, never a stuck test), and the checks every subcommand's outcome is held to (exit code, one line on stderr,
// nothing written on failure).

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lola/io/file.hpp"
#include "support/errors.hpp"
#include "support/file_tree.hpp"
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
using lola_test::temporaries_under;

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

struct run_result {
  int code = -1;           ///< the exit status, -1 when the process did not exit normally
  bool crashed = false;    ///< killed by a signal (abort, segfault, ...), or not started
  bool timed_out = false;  ///< still running after the time limit, then killed
  int signal = 0;          ///< the signal that ended the process, 0 when it exited
  std::string out, err;
  std::string command;
};

/// How to run the tool: where it runs and where its stdout goes.
struct run_options {
  std::string cwd;                  ///< working directory; empty: the test's
  std::string stdout_path;          ///< stdout to this file (/dev/full, ...); empty: a captured log
  bool stdout_closed_pipe = false;  ///< stdout is a pipe whose reading end is already closed
  long file_size_limit = -1;        ///< RLIMIT_FSIZE in bytes (`ulimit -f`); < 0: unchanged
  int timeout_seconds = 60;         ///< then the tool is killed and the test fails: never a hang
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// Runs `lola args...` as a child process (fork and exec, no shell) with stdin from /dev/null and
/// stdout and stderr captured to files, waiting at most options.timeout_seconds: a tool still
/// running then is killed and fails the test, so a hang (a FIFO opened for reading, say) shows up
/// as a failure, not as a stuck test.
inline run_result run_lola(const temp_dir& t, const std::vector<std::string>& args, const run_options& options = {}) {
  static int counter = 0;
  REQUIRE_MESSAGE(exists(LOLA_CLI_PATH), "the lola executable " << LOLA_CLI_PATH << " does not exist");
  const std::string stem = t / ("logs/run" + std::to_string(++counter));
  const std::string out_path = options.stdout_path.empty() ? stem + ".out" : options.stdout_path;
  const std::string err_path = stem + ".err";
  run_result r;
  r.command = "lola";
  for (const auto& a : args) r.command += " " + shell_quote(a);
  if (!options.cwd.empty()) r.command = "(cd " + shell_quote(options.cwd) + " && " + r.command + ")";

  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> storage{LOLA_CLI_PATH};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  int pipe_fds[2] = {-1, -1};
  if (options.stdout_closed_pipe) {
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    ::close(pipe_fds[0]);  // nobody will ever read: a write gets EPIPE (or SIGPIPE)
  }
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = options.stdout_closed_pipe ? pipe_fds[1] : ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(126);
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(126);
    if (options.file_size_limit >= 0) {
      const rlimit limit{static_cast<rlim_t>(options.file_size_limit), static_cast<rlim_t>(options.file_size_limit)};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(126);
    }
    ::signal(SIGXFSZ, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);  // what a shell gives a program: the tool must handle it itself
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (options.stdout_closed_pipe) ::close(pipe_fds[1]);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_seconds);
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    REQUIRE(done == 0);
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK_MESSAGE(!r.timed_out, r.command << " was still running after " << options.timeout_seconds
                                        << " s and was killed");
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r.crashed = r.timed_out || WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) >= 126);
  r.code = WIFEXITED(status) && !r.timed_out ? WEXITSTATUS(status) : -1;
  if (options.stdout_path.empty()) r.out = read_file(out_path);
  r.err = read_file(err_path);
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
