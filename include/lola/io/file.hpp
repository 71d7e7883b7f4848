#pragma once
/// @file
/// Whole-file input and output: a read-only mapping (POSIX mmap, or a buffer read with iostreams
/// where mmap is unavailable) and an atomic write (a temporary name in the same directory, then a
/// rename), so a failed write never leaves a half-written file under the requested name.

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOLA_HAS_MMAP 1
#else
#define LOLA_HAS_MMAP 0
#endif

#include "lola/core/error.hpp"

namespace lola::io {

namespace detail {
inline error io_error(const std::string& path, const std::string& what) {
  return error(error_code::io, path + ": " + what + (errno ? std::string(": ") + std::strerror(errno) : ""));
}
}  // namespace detail

/// The bytes of a file, read-only, for as long as the object lives. Move-only.
/// A mapping starts at a page boundary, so an element at file offset o is aligned to its size
/// whenever o is.
class mapped_file {
 public:
  mapped_file() = default;

  /// Maps (or reads) the whole file; error_code::io when it cannot be opened or is a directory.
  explicit mapped_file(const std::string& path) : path_(path) {
#if LOLA_HAS_MMAP
    errno = 0;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw detail::io_error(path, "cannot open");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      throw detail::io_error(path, "cannot stat");
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      errno = 0;
      throw detail::io_error(path, "not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        throw detail::io_error(path, "cannot map");
      }
      data_ = static_cast<const std::byte*>(p);
      mapped_ = true;
    }
    ::close(fd);
#else
    std::ifstream in(path, std::ios::binary);
    if (!in) throw detail::io_error(path, "cannot open");
    buffer_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    data_ = reinterpret_cast<const std::byte*>(buffer_.data());
    size_ = buffer_.size();
#endif
  }

  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& other) noexcept { swap(other); }
  mapped_file& operator=(mapped_file&& other) noexcept {
    if (this != &other) {
      mapped_file gone(std::move(*this));
      swap(other);
    }
    return *this;
  }
  ~mapped_file() {
#if LOLA_HAS_MMAP
    if (mapped_) ::munmap(const_cast<std::byte*>(data_), size_);
#endif
  }

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  void swap(mapped_file& other) noexcept {
    std::swap(path_, other.path_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(mapped_, other.mapped_);
    std::swap(buffer_, other.buffer_);
  }

  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
  std::vector<char> buffer_;
};

/// The whole file as text (for JSON configs); error_code::io when it cannot be read.
inline std::string read_text_file(const std::string& path) {
  const mapped_file file(path);
  return std::string(reinterpret_cast<const char*>(file.data()), file.size());
}

/// Writes bytes to path atomically: to "path.lola-tmp-<pid>" beside it, flushed, then renamed over
/// path. On failure the temporary is removed and path is untouched.
inline void write_file_atomic(const std::string& path, const void* data, std::size_t size) {
#if LOLA_HAS_MMAP
  const std::string tmp = path + ".lola-tmp-" + std::to_string(::getpid());
#else
  const std::string tmp = path + ".lola-tmp";
#endif
  {
    errno = 0;
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw detail::io_error(tmp, "cannot create");
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw detail::io_error(tmp, "cannot write");
    }
  }
  errno = 0;
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    std::remove(tmp.c_str());
    errno = saved;
    throw detail::io_error(path, "cannot rename the temporary file into place");
  }
}

inline void write_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace lola::io
