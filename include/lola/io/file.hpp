#pragma once
/// @file
/// Whole-file input and output for files that may be hostile, or change while lola uses them.
///
/// Reading (file_bytes, read_text_file). Only a regular file is read. The path is stat'ed first,
/// so a FIFO, device or socket is refused without being opened (opening a device can act on it),
/// then opened with O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC (a FIFO swapped in meanwhile
/// cannot block the open) and fstat'ed: what was opened must be S_ISREG before a byte is read.
/// Symbolic links to regular files are followed (the Hugging Face cache is links to blobs); a loop
/// or a dangling link is an error saying so.
/// The bytes are read into an owned buffer (pread), not mapped: a mapping of a file that another
/// process truncates raises SIGBUS on the next touch of a lost page, which a library cannot handle.
/// The cost is one copy out of the page cache, of the bytes a mapping would fault in, and the
/// file's size in process memory. The result is a snapshot or an error: size, mtime and ctime are
/// compared before and after the read, and an end of file before st_size or data past it is a
/// change too (GNU tar's "file changed as we read it" check). An overwrite in place that keeps the
/// size and falls within one tick of the filesystem's timestamps can escape it, as it would a
/// mapping. The buffer is 64-byte aligned (page aligned from 32 MiB, where it is a huge-page
/// mapping, see detail::byte_buffer), so an element at file offset o is aligned to its size
/// whenever o is (safetensors_view::map relies on that; elements are at most 8 bytes).
///
/// Writing (staged_file, write_file_atomic, write_directory_atomic). An output is written whole
/// under a temporary name in its destination directory, ".<name>.lola-tmp-<pid>-<random>", created
/// with O_CREAT | O_EXCL | O_NOFOLLOW (a planted file or symbolic link at any name is never opened
/// or followed; a taken name is retried), every write() checked (EINTR, short writes, ENOSPC,
/// EFBIG), fsync'ed, and only then renamed onto the destination. A symbolic link at the
/// destination is replaced, never written through. A failure removes the temporary and leaves the
/// destination as it was.
///
/// POSIX; the in-place exchange of a directory uses renameat2 (Linux) or renamex_np (macOS).

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#elif defined(__APPLE__)
#include <stdio.h>
#endif

#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"

namespace lola::io {

/// A run of bytes to write: a file is written from the runs in order, wherever each lives (a
/// safetensors header, then each tensor's data), with no image of the whole file assembled first.
struct byte_run {
  const void* data = nullptr;
  std::size_t size = 0;
};

namespace detail {

/// error_code::io: "<path>: <what>: <strerror(err)>" (the last part only when err is nonzero).
inline error io_error(const std::string& path, const std::string& what, int err) {
  return error(error_code::io, path + ": " + what + (err ? std::string(": ") + std::strerror(err) : ""));
}

/// "a FIFO (named pipe)", "a directory", ...: what a file of this mode is, in messages.
inline const char* file_kind(mode_t mode) noexcept {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

/// The error for a path that stat or open refused with err: a symbolic link loop and a dangling
/// link are named as such.
inline error unreachable_path_error(const std::string& path, int err) {
  struct stat st {};
  if (err == ELOOP) return io_error(path, "a symbolic link loop", err);
  if (err == ENOENT && ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    return error(error_code::io, path + ": a dangling symbolic link (its target does not exist)");
  return io_error(path, "cannot open", err);
}

inline error not_regular_error(const std::string& path, mode_t mode) {
  return error(error_code::io, path + ": is " + file_kind(mode) + ", not a regular file");
}

/// A file descriptor, closed on destruction.
struct unique_fd {
  int fd = -1;
  unique_fd() = default;
  explicit unique_fd(int f) noexcept : fd(f) {}
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// Opens path for reading, which must be a regular file (see the file comment); st receives its
/// fstat. Errors: error_code::io naming the path and what it is.
inline int open_regular_file(const std::string& path, unique_fd& file, struct stat& st) {
  if (::stat(path.c_str(), &st) != 0) throw unreachable_path_error(path, errno);
  if (!S_ISREG(st.st_mode)) throw not_regular_error(path, st.st_mode);
  file.fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (file.fd < 0) throw unreachable_path_error(path, errno);
  if (::fstat(file.fd, &st) != 0) throw io_error(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) throw not_regular_error(path, st.st_mode);
  // O_NONBLOCK only guarded the open; reads of a regular file block (and never return EAGAIN).
  const int flags = ::fcntl(file.fd, F_GETFL);
  if (flags >= 0) ::fcntl(file.fd, F_SETFL, flags & ~O_NONBLOCK);
  return file.fd;
}

/// The size st of the file at path gives, as the byte count of an image of it in memory.
/// Errors: error_code::io, naming path, for a size beyond half the address space.
inline std::size_t image_size(const std::string& path, const struct stat& st) {
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > SIZE_MAX / 2)
    throw error(error_code::io, path + ": " + std::to_string(size) + " bytes, too large to read");
  return static_cast<std::size_t>(size);
}

/// Whether a and b have the same modification time (mtime) and, with `change`, the same status
/// change time (ctime).
inline bool same_timestamp(const struct stat& a, const struct stat& b, bool change = true) noexcept {
#if defined(__APPLE__)
  return a.st_mtimespec.tv_sec == b.st_mtimespec.tv_sec && a.st_mtimespec.tv_nsec == b.st_mtimespec.tv_nsec &&
         (!change || (a.st_ctimespec.tv_sec == b.st_ctimespec.tv_sec && a.st_ctimespec.tv_nsec == b.st_ctimespec.tv_nsec));
#else
  return a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         (!change || (a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec));
#endif
}

/// Owned storage for a file's bytes, 64-byte aligned. From 32 MiB on (where glibc's malloc always
/// maps fresh pages) it is an anonymous mapping advised to use huge pages (MADV_HUGEPAGE):
/// filling 64 MiB of fresh 4 KiB pages costs 16,384 page faults, 4× the time of the copy itself
/// on the machine lola is benchmarked on. Below, malloc reuses pages already faulted in.
class byte_buffer {
 public:
  byte_buffer() = default;
  /// size bytes, uninitialised; error_code::io naming path when they cannot be had.
  byte_buffer(std::size_t size, const std::string& path) : size_(size) {
    if (size == 0) return;
#if defined(MAP_ANONYMOUS)
    if (size >= (std::size_t(32) << 20)) {
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED)
        throw io_error(path, "cannot allocate " + std::to_string(size) + " bytes to read it", errno);
#if defined(MADV_HUGEPAGE)
      ::madvise(p, size, MADV_HUGEPAGE);
#endif
      data_ = static_cast<std::byte*>(p);
      mapped_ = true;
      return;
    }
#endif
    try {
      data_ = static_cast<std::byte*>(::operator new[](size, std::align_val_t(64)));
    } catch (const std::bad_alloc&) {
      throw error(error_code::io, path + ": cannot allocate " + std::to_string(size) + " bytes to read it");
    }
  }
  /// size bytes of zeros that cost no memory until written: an anonymous mapping without huge
  /// pages (a page is allocated at its first write), for an image of a file of which only some
  /// ranges are read (io/adapter_view.hpp's factors read on visit). error_code::io naming path.
  static byte_buffer sparse(std::size_t size, const std::string& path) {
#if defined(MAP_ANONYMOUS)
    byte_buffer b;
    if (size == 0) return b;
#if defined(MAP_NORESERVE)
    constexpr int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
#else
    constexpr int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#endif
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) throw io_error(path, "cannot map " + std::to_string(size) + " bytes to read it", errno);
    b.data_ = static_cast<std::byte*>(p);
    b.size_ = size;
    b.mapped_ = true;
    return b;
#else
    byte_buffer b(size, path);
    std::memset(b.data(), 0, size);
    return b;
#endif
  }
  byte_buffer(const byte_buffer&) = delete;
  byte_buffer& operator=(const byte_buffer&) = delete;
  byte_buffer(byte_buffer&& other) noexcept { swap(other); }
  byte_buffer& operator=(byte_buffer&& other) noexcept {
    byte_buffer gone(std::move(other));
    swap(gone);
    return *this;
  }
  ~byte_buffer() {
    if (!data_) return;
#if defined(MAP_ANONYMOUS)
    if (mapped_) {
      ::munmap(data_, size_);
      return;
    }
#endif
    ::operator delete[](data_, std::align_val_t(64));
  }

  std::byte* data() const noexcept { return data_; }

 private:
  void swap(byte_buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(mapped_, other.mapped_);
  }
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
};

inline std::string parent_directory(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

inline std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

inline std::string join_path(const std::string& dir, std::string_view name) {
  return dir.empty() || dir.back() == '/' ? dir + std::string(name) : dir + "/" + std::string(name);
}

/// A name beside path that no one can predict: "<dir>/.<name>.lola-tmp-<pid>-<16 hex digits>",
/// the name cut so that the whole stays within NAME_MAX (255 bytes).
inline std::string temporary_sibling(const std::string& path) {
  static constexpr char hex[] = "0123456789abcdef";
  thread_local std::mt19937_64 bits{(std::uint64_t(std::random_device{}()) << 32) ^ std::random_device{}() ^
                                    std::uint64_t(::getpid())};
  std::string name = "." + base_name(path).substr(0, 200) + ".lola-tmp-" + std::to_string(::getpid()) + "-";
  std::uint64_t r = bits();
  for (int i = 0; i < 16; ++i, r >>= 4) name.push_back(hex[r & 0xF]);
  return join_path(parent_directory(path), name);
}

enum class rename_mode { replace, no_replace, exchange };

/// rename(2) in the given mode; -1 with errno set on failure, EINVAL or ENOSYS where the system or
/// the filesystem cannot do no_replace or exchange atomically.
inline int rename_path(const std::string& from, const std::string& to, rename_mode mode) {
  if (mode == rename_mode::replace) return ::rename(from.c_str(), to.c_str());
#if defined(__linux__) && defined(SYS_renameat2)
  const unsigned flags = mode == rename_mode::no_replace ? 1u /* RENAME_NOREPLACE */ : 2u /* RENAME_EXCHANGE */;
  return static_cast<int>(::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
#elif defined(__APPLE__)
  return ::renamex_np(from.c_str(), to.c_str(), mode == rename_mode::no_replace ? RENAME_EXCL : RENAME_SWAP);
#else
  errno = ENOSYS;
  return -1;
#endif
}

/// Writes the runs in order by writev, up to 256 runs a call (a file of 20,000 small tensors is 79
/// calls, not 20,000), retrying interrupted and short writes. false with errno set on failure;
/// `done` counts the bytes written either way. A call that makes no progress counts as ENOSPC.
inline bool write_all_runs(int fd, const std::vector<byte_run>& runs, std::size_t& done) {
  constexpr int batch = 256;
  done = 0;
  std::size_t next = 0, offset = 0;  // the first run not wholly written, and its bytes written
  const auto skip_finished = [&] {
    while (next < runs.size() && offset == runs[next].size) {
      ++next;
      offset = 0;
    }
  };
  skip_finished();
  while (next < runs.size()) {
    ::iovec io[batch];
    int count = 0;
    for (std::size_t i = next; i < runs.size() && count < batch; ++i) {
      const std::size_t skip = i == next ? offset : 0;
      if (runs[i].size == skip) continue;
      io[count].iov_base = const_cast<char*>(static_cast<const char*>(runs[i].data)) + skip;
      io[count].iov_len = runs[i].size - skip;
      ++count;
    }
    const ssize_t w = ::writev(fd, io, count);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    if (w == 0) {
      errno = ENOSPC;
      return false;
    }
    done += static_cast<std::size_t>(w);
    for (std::size_t left = static_cast<std::size_t>(w); left > 0;) {
      const std::size_t step = std::min(left, runs[next].size - offset);
      offset += step;
      left -= step;
      skip_finished();
    }
  }
  return true;
}

/// Creates path exclusively (O_CREAT | O_EXCL | O_NOFOLLOW; mode less the umask), writes the runs
/// in order and fsyncs it. Returns 0, or the errno of the step that failed, named in `what`; a
/// failure after the creation removes the file.
inline int create_file_exclusive(const std::string& path, const std::vector<byte_run>& runs, std::string& what,
                                 mode_t mode = 0666) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);
  if (fd < 0) {
    what = "cannot create a temporary file beside it";
    return errno;
  }
  int err = 0;
  std::size_t written = 0, total = 0;
  for (const byte_run& run : runs) total += run.size;
  if (!write_all_runs(fd, runs, written)) {
    err = errno;
    what = "cannot write (" + std::to_string(written) + " of " + std::to_string(total) + " bytes written)";
  } else if (::fsync(fd) != 0) {
    err = errno;
    what = "cannot flush to disk (fsync)";
  }
  if (::close(fd) != 0 && err == 0) {
    err = errno;
    what = "cannot close after writing";
  }
  if (err) ::unlink(path.c_str());
  return err;
}

}  // namespace detail

namespace detail {
/// Reads count bytes of fd from file offset `offset` into out; the count read, short when the file
/// ended first. Errors: error_code::io naming path.
inline std::uint64_t read_at(int fd, std::byte* out, std::uint64_t offset, std::uint64_t count,
                             const std::string& path) {
  std::uint64_t done = 0;
  while (done < count) {
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(count - done, 1u << 30));
    const ssize_t r = ::pread(fd, out + done, chunk, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw io_error(path, "cannot read", errno);
    if (r == 0) break;  // the file shrank
    done += static_cast<std::uint64_t>(r);
  }
  return done;
}

/// Reads bytes [begin, end) of fd into image + begin; the count read, short when the file ended
/// first. A range of 16 MiB or more is read in parts of at least 8 MiB on the default executor's
/// threads: most of a large read's time is the kernel zeroing and filling fresh pages, which
/// threads share (a 34 MB file: 8.5 ms on one thread of the reference VM, 5.8 ms on two, in a
/// process that reads it repeatedly).
inline std::uint64_t read_range(int fd, std::byte* image, std::uint64_t begin, std::uint64_t end,
                                const std::string& path) {
  constexpr std::uint64_t part_bytes = std::uint64_t(8) << 20;
  const std::uint64_t size = end - begin;
  const auto parts = static_cast<index>(std::min<std::uint64_t>(std::max<std::uint64_t>(size / part_bytes, 1),
                                                                static_cast<std::uint64_t>(parallel_threads())));
  if (parts == 1) return read_at(fd, image + begin, begin, size, path);
  std::vector<std::uint64_t> read(static_cast<std::size_t>(parts), 0);
  parallel_for(parts, [&](index part) {
    const std::uint64_t step = size / static_cast<std::uint64_t>(parts);
    const std::uint64_t from = begin + step * static_cast<std::uint64_t>(part);
    const std::uint64_t to = part + 1 == parts ? end : from + step;
    read[static_cast<std::size_t>(part)] = read_at(fd, image + from, from, to - from, path);
  });
  std::uint64_t done = 0;
  for (const auto n : read) done += n;
  return done;
}

}  // namespace detail

/// The bytes of a regular file, read into memory (see the file comment). Move-only.

class file_bytes {
 public:
  file_bytes() = default;
  file_bytes(file_bytes&& other) noexcept
      : path_(std::move(other.path_)), buffer_(std::move(other.buffer_)), size_(std::exchange(other.size_, 0)) {}
  file_bytes& operator=(file_bytes&& other) noexcept {
    path_ = std::move(other.path_);
    buffer_ = std::move(other.buffer_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  /// Reads the whole file at path. Errors (naming path): error_code::io when it cannot be opened,
  /// is not a regular file (a directory, FIFO, device, socket, symbolic link loop or dangling
  /// link), cannot be read, or changed while being read; error_code::invalid_file when it is
  /// larger than max_bytes.
  explicit file_bytes(const std::string& path, std::uint64_t max_bytes = UINT64_MAX) : path_(path) {
    detail::unique_fd file;
    struct stat before {};
    const int fd = detail::open_regular_file(path, file, before);
    const auto size = static_cast<std::uint64_t>(before.st_size);
    if (size > max_bytes)
      throw error(error_code::invalid_file, path + ": " + std::to_string(size) +
                                                " bytes, more than the limit of " + std::to_string(max_bytes) +
                                                " bytes for this kind of file");
    buffer_ = detail::byte_buffer(detail::image_size(path, before), path);
    const std::uint64_t done = detail::read_range(fd, buffer_.data(), 0, size, path);
    char extra = 0;
    ssize_t more = 0;
    do more = ::pread(fd, &extra, 1, static_cast<off_t>(size));
    while (more < 0 && errno == EINTR);
    struct stat after {};
    if (::fstat(fd, &after) != 0) throw detail::io_error(path, "cannot stat", errno);
    if (done != size || more > 0 || after.st_size != before.st_size || !detail::same_timestamp(before, after))
      throw error(error_code::io, path + ": changed while being read (size " + std::to_string(size) + " → " +
                                      std::to_string(after.st_size) +
                                      (done != size ? ", end of file after " + std::to_string(done) + " bytes"
                                       : more > 0   ? ", data past the end"
                                                    : ", modified") +
                                      ")");
    size_ = static_cast<std::size_t>(size);
  }

  const std::byte* data() const noexcept { return buffer_.data(); }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  detail::byte_buffer buffer_;
  std::size_t size_ = 0;
};

/// The whole file as text (for JSON configs); errors as for file_bytes.
inline std::string read_text_file(const std::string& path, std::uint64_t max_bytes = UINT64_MAX) {
  const file_bytes file(path, max_bytes);
  return std::string(reinterpret_cast<const char*>(file.data()), file.size());
}

/// What committing a staged file does where the destination exists.
enum class if_exists {
  replace,  ///< replace it (a symbolic link there is replaced, not followed)
  fail,     ///< error_code::io naming it, nothing changed
};

/// A file written whole under an unpredictable temporary name beside its destination (see the
/// file comment) and fsync'ed; commit() renames it onto the destination. Destroyed uncommitted,
/// it removes the temporary. Staging every output before committing any keeps a failed write
/// (a full disk) from leaving some outputs new and others old.
class staged_file {
 public:
  /// Errors: error_code::io naming path and the system's reason (ENOSPC, EFBIG, EACCES, ...).
  staged_file(std::string path, const void* data, std::size_t size)
      : staged_file(std::move(path), std::vector<byte_run>{{data, size}}) {}
  /// The file made of the runs, in order.
  staged_file(std::string path, const std::vector<byte_run>& runs) : path_(std::move(path)) {
    for (int attempt = 0;; ++attempt) {
      tmp_ = detail::temporary_sibling(path_);
      std::string what;
      const int err = detail::create_file_exclusive(tmp_, runs, what);
      if (err == 0) return;
      if (err == EEXIST && attempt < 100) continue;
      tmp_.clear();
      throw detail::io_error(path_, what, err);
    }
  }
  staged_file(const staged_file&) = delete;
  staged_file& operator=(const staged_file&) = delete;
  ~staged_file() {
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
  }

  /// Renames the temporary onto the destination.
  void commit(if_exists existing = if_exists::replace) {
    int rc = detail::rename_path(tmp_, path_,
                                 existing == if_exists::replace ? detail::rename_mode::replace
                                                                : detail::rename_mode::no_replace);
    if (rc != 0 && existing == if_exists::fail && (errno == EINVAL || errno == ENOSYS)) {
      // No atomic no-replace rename here: a hard link never replaces either.
      rc = ::link(tmp_.c_str(), path_.c_str());
      if (rc == 0) ::unlink(tmp_.c_str());
    }
    if (rc != 0) {
      const int err = errno;
      throw detail::io_error(path_, err == EEXIST ? "already exists (created while lola was writing it)"
                                                  : "cannot rename the temporary file into place",
                             err == EEXIST ? 0 : err);
    }
    tmp_.clear();
  }

  const std::string& temporary() const noexcept { return tmp_; }

 private:
  std::string path_, tmp_;
};

/// Writes bytes to path atomically (a staged_file committed at once): readers see the old file or
/// the new one, never a part; on failure path is untouched and no temporary remains.
inline void write_file_atomic(const std::string& path, const void* data, std::size_t size,
                              if_exists existing = if_exists::replace) {
  staged_file(path, data, size).commit(existing);
}

inline void write_file_atomic(const std::string& path, const std::vector<byte_run>& runs,
                              if_exists existing = if_exists::replace) {
  staged_file(path, runs).commit(existing);
}

inline void write_file_atomic(const std::string& path, std::string_view text,
                              if_exists existing = if_exists::replace) {
  write_file_atomic(path, text.data(), text.size(), existing);
}

namespace detail {

/// Copies the entries of directory `from` into the (new, empty) directory `to`, skipping the names
/// in `skip`: regular files as hard links (copies where the filesystem refuses a link),
/// directories recursively, symbolic links as links with the same target text. Any other entry is
/// an error naming it. `to` is fsync'ed.
inline void carry_directory_entries(const std::string& from, const std::string& to,
                                    const std::vector<std::string>& skip) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(from.c_str()), ::closedir);
  if (!dir) throw io_error(from, "cannot list the directory", errno);
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (!entry) {
      if (errno) throw io_error(from, "cannot list the directory", errno);
      break;
    }
    const std::string name = entry->d_name;
    if (name == "." || name == ".." || std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
    const std::string source = join_path(from, name), target = join_path(to, name);
    struct stat st {};
    if (::lstat(source.c_str(), &st) != 0) throw io_error(source, "cannot stat", errno);
    if (S_ISDIR(st.st_mode)) {
      if (::mkdir(target.c_str(), 0700) != 0) throw io_error(target, "cannot create the directory", errno);
      carry_directory_entries(source, target, {});
      ::chmod(target.c_str(), st.st_mode & 07777);
    } else if (S_ISLNK(st.st_mode)) {
      std::string link(static_cast<std::size_t>(st.st_size) + 1, '\0');
      const ssize_t n = ::readlink(source.c_str(), link.data(), link.size());
      if (n < 0 || static_cast<std::size_t>(n) >= link.size())
        throw io_error(source, "cannot read the link", n < 0 ? errno : 0);
      link.resize(static_cast<std::size_t>(n));
      if (::symlink(link.c_str(), target.c_str()) != 0) throw io_error(target, "cannot create the link", errno);
    } else if (S_ISREG(st.st_mode)) {
      if (::link(source.c_str(), target.c_str()) == 0) continue;
      const file_bytes bytes(source);
      std::string what;
      if (const int err = create_file_exclusive(target, {{bytes.data(), bytes.size()}}, what, 0600))
        throw io_error(target, what, err);
      ::chmod(target.c_str(), st.st_mode & 07777);
    } else {
      throw error(error_code::io, source + ": is " + file_kind(st.st_mode) +
                                      "; only files, directories and symbolic links are carried into the "
                                      "rewritten directory");
    }
  }
  unique_fd d(::open(to.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd >= 0) ::fsync(d.fd);
}

}  // namespace detail

/// Writes the directory `path` whole. fill(dir) writes the new contents into dir, a fresh
/// directory beside path (".<name>.lola-tmp-<pid>-<random>"), replacing any file only by rename
/// (write_file_atomic), never by writing into it: files carried over are shared with the old
/// directory. Then dir takes path's place in one step: renamed onto it when path does not exist,
/// exchanged with it (renameat2 RENAME_EXCHANGE) when it does, and the old contents, now under the
/// temporary name, removed. Readers see the old directory or the new one; any failure before the
/// swap (a full disk included) leaves path as it was and removes the temporary.
/// An existing directory's entries other than `replaced` are carried into the new one first (see
/// detail::carry_directory_entries), so files lola does not write (a README, training arguments)
/// survive a rewrite. A symbolic link at path is replaced by the new directory, not followed (the
/// directory it points to is not modified). Where the filesystem cannot exchange atomically the
/// old directory is renamed aside and the new one into place, a window in which path is absent.
/// Errors: error_code::io naming the path (it exists and is not a directory, ...) and the reason;
/// a lola::error from fill is rethrown with the temporary's name replaced by path.
template <class Fill>
void write_directory_atomic(const std::string& path, const std::vector<std::string>& replaced, Fill&& fill) {
  std::string out = path;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const std::string name = detail::base_name(out);
  if (out == "/" || name.empty() || name == "." || name == "..")
    throw error(error_code::invalid_argument,
                path + ": not a directory name lola can replace (name the directory itself)");
  struct stat link_st {}, st {};
  const bool fresh = ::lstat(out.c_str(), &link_st) != 0;
  if (fresh && errno != ENOENT) throw detail::io_error(out, "cannot stat", errno);
  if (!fresh) {
    if (::stat(out.c_str(), &st) != 0) throw detail::unreachable_path_error(out, errno);
    if (!S_ISDIR(st.st_mode))
      throw error(error_code::io, out + ": exists and is " + detail::file_kind(st.st_mode) + ", not a directory");
  }
  std::string tmp;
  for (int attempt = 0;; ++attempt) {
    tmp = detail::temporary_sibling(out);
    if (::mkdir(tmp.c_str(), 0777) == 0) break;
    const int err = errno;
    if (err == EEXIST && attempt < 100) continue;
    throw detail::io_error(out, "cannot create a temporary directory beside it", err);
  }
  const auto remove_tree = [](const std::string& p) {
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
    return ec;
  };
  try {
    if (!fresh) detail::carry_directory_entries(out, tmp, replaced);
    try {
      fill(static_cast<const std::string&>(tmp));
    } catch (const error& e) {
      // Named as the file it was to become: "<path>/adapter_model.safetensors: cannot write ...".
      std::string message = e.message();
      for (std::size_t at = 0; (at = message.find(tmp, at)) != std::string::npos; at += out.size())
        message.replace(at, tmp.size(), out);
      throw error(e.code(), message);
    }
    if (!fresh) ::chmod(tmp.c_str(), st.st_mode & 07777);
    {
      detail::unique_fd d(::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (d.fd >= 0) ::fsync(d.fd);
    }
    if (fresh) {
      int rc = detail::rename_path(tmp, out, detail::rename_mode::no_replace);
      if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) rc = ::rename(tmp.c_str(), out.c_str());
      if (rc != 0) {
        const int err = errno;
        const bool appeared = err == EEXIST || err == ENOTEMPTY;
        throw detail::io_error(out, appeared ? "appeared while lola was writing it"
                                             : "cannot rename the temporary directory into place",
                               appeared ? 0 : err);
      }
    } else if (detail::rename_path(tmp, out, detail::rename_mode::exchange) != 0) {
      const int err = errno;
      if (err != EINVAL && err != ENOSYS)
        throw detail::io_error(out, "cannot swap the new directory into place", err);
      const std::string aside = detail::temporary_sibling(out);
      if (::rename(out.c_str(), aside.c_str()) != 0)
        throw detail::io_error(out, "cannot move the old directory aside", errno);
      if (::rename(tmp.c_str(), out.c_str()) != 0) {
        const int e = errno;
        ::rename(aside.c_str(), out.c_str());
        throw detail::io_error(out, "cannot rename the temporary directory into place", e);
      }
      tmp = aside;
    }
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  if (fresh) return;
  if (const auto ec = remove_tree(tmp))
    throw error(error_code::io, out + " was written, but its previous contents could not be removed from " +
                                    tmp + ": " + ec.message());
}

}  // namespace lola::io
