#pragma once
/// @file
/// lola::error: the one exception type for anything a caller or a file can get wrong.

#include <cstddef>
#include <stdexcept>
#include <string>

namespace lola {

/// What went wrong, coarsely; the message names the object (file, key, module, shapes).
enum class error_code {
  invalid_argument,  ///< a value outside the function's domain (negative rank, singular G, ...)
  shape_mismatch,    ///< operands whose dimensions do not fit; the message gives both shapes
  invalid_file,      ///< a file that breaks its format's rules
  unsupported,       ///< valid input that lola does not handle (a dtype, a LoRA variant)
  numerical,         ///< a computation that cannot produce a meaningful result
  cuda,              ///< a CUDA, cuBLAS or cuSOLVER status other than success
  io,                ///< the operating system refused a read or a write
};

/// The name of a code, as printed in messages: "shape_mismatch", ...
inline const char* to_string(error_code code) noexcept {
  switch (code) {
    case error_code::invalid_argument: return "invalid_argument";
    case error_code::shape_mismatch: return "shape_mismatch";
    case error_code::invalid_file: return "invalid_file";
    case error_code::unsupported: return "unsupported";
    case error_code::numerical: return "numerical";
    case error_code::cuda: return "cuda";
    case error_code::io: return "io";
  }
  return "unknown";
}

/// The exception lola throws, in release builds too. what() reads "lola: <message>".
class error : public std::runtime_error {
 public:
  error(error_code code, const std::string& message)
      : std::runtime_error(prefix + message), code_(code) {}

  error_code code() const noexcept { return code_; }
  /// The message without the "lola: " prefix, for a caller that wraps it in one naming more
  /// context (a module, an adapter, a file).
  const char* message() const noexcept { return what() + prefix_length; }

 private:
  static constexpr const char* prefix = "lola: ";
  static constexpr std::size_t prefix_length = 6;
  error_code code_;
};

/// e with `context: ` before its message, unless e is an error of reading a file
/// (error_code::invalid_file, io: a factor read on visit), whose message names the file, and the
/// module and tensor, already.
inline error in_context(const std::string& context, const error& e) {
  if (e.code() == error_code::invalid_file || e.code() == error_code::io) return e;
  return error(e.code(), context + ": " + e.message());
}

}  // namespace lola
