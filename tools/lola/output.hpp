#pragma once
// The tool's text streams. Every write to the output stream is checked, and finish() flushes it
// and reports a failure as lola::error (error_code::io): a full disk (ENOSPC, /dev/full), a closed
// pipe (EPIPE; the tool ignores SIGPIPE so that a closed pipe is an error, not a signal) or any
// other write error makes the command exit 1 with a message, never 0 with a cut output.
// Messages go to the diagnostic stream as one line each, escaped with io::printable.

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include <lola/core/error.hpp>
#include <lola/io/printable.hpp>

namespace lola_cli {

/// printf into a std::string.
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
inline std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list again;
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, args);
  va_end(args);
  std::string out(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, again);
  va_end(again);
  return out;
}

/// A name from a file or a user, escaped for the terminal (see lola/io/printable.hpp).
inline std::string shown(std::string_view name) { return lola::io::printable(name); }

class streams {
 public:
  streams(std::FILE* out, std::FILE* err) : out_(out), err_(err) { std::clearerr(out_); }

  /// Writes text to the output stream; the first failure is kept for finish().
  void print(std::string_view text) {
    if (text.empty() || failed_) return;
    errno = 0;
    if (std::fwrite(text.data(), 1, text.size(), out_) != text.size()) fail();
  }

  /// Flushes the output stream; throws when any write to it failed.
  void finish() {
    if (!failed_) {
      errno = 0;
      if (std::fflush(out_) != 0 || std::ferror(out_)) fail();
    }
    if (failed_)
      throw lola::error(lola::error_code::io,
                        "cannot write to the standard output" +
                            (error_ ? ": " + std::string(std::strerror(error_)) : std::string()));
  }

  /// One line on the diagnostic stream: the message escaped, then '\n'.
  void message(std::string_view text) const {
    const std::string line = lola::io::printable(text) + "\n";
    std::fwrite(line.data(), 1, line.size(), err_);
    std::fflush(err_);
  }

  /// lola's own multi-line text (the overview) on the diagnostic stream, as it is.
  void text_message(std::string_view text) const {
    std::fwrite(text.data(), 1, text.size(), err_);
    std::fflush(err_);
  }

  std::FILE* err() const { return err_; }

 private:
  void fail() {
    failed_ = true;
    error_ = errno;
  }

  std::FILE* out_;
  std::FILE* err_;
  bool failed_ = false;
  int error_ = 0;
};

}  // namespace lola_cli
