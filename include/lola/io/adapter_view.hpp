#pragma once
/// @file
/// io::adapter_view: an adapter read without decoding its factors. The file is read once, as
/// load_adapter reads it (file_bytes: a snapshot into memory, never a mapping), its header, dialect
/// and config validated by the same readers with the same messages, and each module's B and A
/// exposed as the file stores them (F64, F32, F16 or BF16, row-major) for the algorithms to read
/// in place: the host kernels widen a stored factor to the compute scalar as they read it, block
/// by block in cache (backend/eigen/gram.hpp, thin_product.hpp), so results equal those computed
/// from load_adapter's decoded factors bit for bit. Memory: the file once, where load_adapter<double> of a BF16 adapter holds
/// the file and four times its size in decoded factors.
///
/// Finite input: every factor value is checked finite as stored (a test of the exponent bits, no
/// conversion), and the module's extras as load_adapter checks them; a non-finite value is
/// error_code::invalid_file with the same message. One difference: an F64 factor value beyond
/// float's range is finite as stored and accepted here; computed in float it becomes inf, which
/// the algorithms report as error_code::numerical.
///
/// Reading the factors on visit (factor_reads::on_visit): open() reads only the header, the
/// tensors that are not LoRA factors and the factors of modules smaller than
/// load_options::min_bytes_read_on_visit (16 KiB: below it, a visit's system calls cost more than
/// the copy they save), into a sparse image of the file's size (pages never written cost
/// nothing), and keeps the file open; a visit reads the module's two factors from it into a
/// per-thread buffer that stays in cache, checks them finite there (the same error as at open,
/// raised by the visit) and checks the file unchanged since open (its size, mtime and ctime;
/// error_code::io "changed while being read"), so the results are those of a snapshot or an
/// error, as at open. open() reports every other error (a small module's non-finite factor among
/// them), so where a module's factor read on visit is not finite and a later module's layout is
/// wrong, it reports the later module (read at open, the earlier one comes first). No memory of
/// the file's size is filled, and no separate pass checks the factors: on the reference VM, the
/// 34 MB file image alone cost 5–12 ms of fresh pages against 6.5 ms for `cat` to read the file.
///
/// The owning adapter (io/adapter.hpp) stays for editing and writing.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include <Eigen/Core>

#include "lola/core/error.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/dialect.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/file.hpp"
#include "lola/io/kohya.hpp"
#include "lola/io/load.hpp"
#include "lola/io/peft.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

/// A factor as its file stores it: rows × cols, row-major, little-endian elements of `type` at
/// `data` (inside the file image the adapter_view holds).
struct stored_factor {
  const std::byte* data = nullptr;  ///< null while the factor is read on visit (factor_reads::on_visit)
  io::dtype type = io::dtype::F32;
  index rows = 0, cols = 0;
  const tensor_info* tensor = nullptr;  ///< its entry in the file's header

  std::size_t byte_count() const noexcept {
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * dtype_bits(type) / 8;
  }

  /// Whether the elements can be read in place as T: T is the stored type, the host is
  /// little-endian and data is aligned for T (file_bytes aligns the image; a file can still place
  /// a tensor at an odd offset).
  template <class T>
  bool readable_as() const noexcept {
    return type == dtype_of<T>() && detail::host_is_little_endian() &&
           reinterpret_cast<std::uintptr_t>(data) % alignof(T) == 0;
  }
  /// The factor as an Eigen map of T; readable_as<T>() must hold.
  template <class T>
  Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> map() const {
    return {reinterpret_cast<const T*>(data), rows, cols};
  }
};

/// How adapter_view::open reads the factors (see the file comment).
enum class factor_reads {
  at_open,   ///< the whole file at open, every factor checked there: open() reports every error
  on_visit,  ///< each factor when a visit needs it, checked then; open() reads the rest
};

namespace detail {

/// The open file of an adapter_view whose factors are read on visit, with the sparse image
/// (byte_buffer::sparse) that holds its header and the tensors read at open, and the fstat taken
/// when it was opened. Reads at any time, from any thread, compare the file with that snapshot.
class deferred_file {
 public:
  /// Opens path as file_bytes does (regular files only) and reads and validates its header
  /// (safetensors_view::parse, the same errors).
  deferred_file(const std::string& path, const read_options& options) : path_(path) {
    open_regular_file(path, fd_, snapshot_);
    const std::size_t size = image_size(path, snapshot_);
    image_ = byte_buffer::sparse(size, path);
    // The first 512 bytes (what a diagnosis of a file that is not safetensors looks at), then the
    // rest of a header whose length parse will accept.
    std::uint64_t head = std::min<std::uint64_t>(size, 512);
    read_exactly(0, head, "its header");
    if (size >= 8) {
      const std::uint64_t n = load_le<std::uint64_t>(image_.data());
      if (n <= options.max_header_bytes && n <= size - 8 && 8 + n > head) read_exactly(head, 8 + n - head, "its header");
    }
    view_ = safetensors_view::parse(image_.data(), size, path, options);
  }
  deferred_file(const deferred_file&) = delete;
  deferred_file& operator=(const deferred_file&) = delete;

  const safetensors_view& view() const noexcept { return view_; }

  /// The tensors read on visit (those of view()'s header, any order); the rest are read at open.
  void defer(std::vector<const tensor_info*> tensors) {
    std::sort(tensors.begin(), tensors.end());
    deferred_ = std::move(tensors);
  }
  /// Whether t is read on visit (its bytes in the image are not read).
  bool defers(const tensor_info* t) const noexcept {
    return std::binary_search(deferred_.begin(), deferred_.end(), t);
  }

  /// Reads the tensors into the image, at their places (adjacent ones in one read), and checks
  /// the file unchanged.
  void fill(std::vector<const tensor_info*> tensors) {
    std::sort(tensors.begin(), tensors.end(), [](const tensor_info* a, const tensor_info* b) { return a->begin < b->begin; });
    for (std::size_t i = 0; i < tensors.size();) {
      std::uint64_t begin = tensors[i]->begin, end = tensors[i]->end;
      for (++i; i < tensors.size() && tensors[i]->begin <= end; ++i) end = std::max(end, tensors[i]->end);
      if (end > begin) read_exactly(view_.data_offset() + begin, end - begin, "its tensors");
    }
    require_unchanged();
  }

  /// Tensor t's bytes (t.byte_count(), a factor of module `module`) read into out, checked:
  /// the file unchanged since open (error_code::io), every value finite (error_code::invalid_file,
  /// the message read_module_as gives at open).
  void read(const tensor_info& t, const std::string& module, std::byte* out) const {
    const std::uint64_t n = t.byte_count();
    if (read_at(fd_.fd, out, view_.data_offset() + t.begin, n, path_) != n)
      throw changed("the end of the file came before the end of tensor \"" + t.name + "\"");
    require_unchanged();
    require_finite_stored(t, out, view_.source() + ": module \"" + module + "\"");
  }

 private:
  void read_exactly(std::uint64_t offset, std::uint64_t count, const char* what) {
    if (read_range(fd_.fd, image_.data(), offset, offset + count, path_) != count)
      throw changed(std::string("the end of the file came before the end of ") + what);
  }
  /// The file as it was at open: the same size, mtime and ctime, as file_bytes checks, except
  /// that a ctime changed by the last link's removal (the file replaced by a rename, deleted)
  /// leaves the bytes as they were.
  void require_unchanged() const {
    struct stat now {};
    if (::fstat(fd_.fd, &now) != 0) throw io_error(path_, "cannot stat", errno);
    const bool unlinked = now.st_nlink == 0 && snapshot_.st_nlink > 0;
    if (now.st_size != snapshot_.st_size || !same_timestamp(snapshot_, now, !unlinked))
      throw changed("its size or modification time changed");
  }
  error changed(const std::string& what) const {
    struct stat now {};
    const bool known = ::fstat(fd_.fd, &now) == 0;
    return error(error_code::io, path_ + ": changed while being read (size " + std::to_string(snapshot_.st_size) +
                                     " → " + (known ? std::to_string(now.st_size) : std::string("unknown")) +
                                     ", " + what + ")");
  }

  std::string path_;
  unique_fd fd_;
  struct stat snapshot_ {};
  byte_buffer image_;
  safetensors_view view_;
  std::vector<const tensor_info*> deferred_;  // sorted
};

/// This thread's buffers for the factors of visits that read them: a pair per nesting level (a
/// visit inside a visit takes the next pair), each kept at the largest factor it has held, so
/// that reads land in memory already faulted in and, for factors of a few hundred KiB, in cache.
class visit_buffers {
 public:
  visit_buffers() : level_(depth()++) {}
  ~visit_buffers() { --depth(); }
  visit_buffers(const visit_buffers&) = delete;
  visit_buffers& operator=(const visit_buffers&) = delete;

  /// Buffer `which` (0 or 1) of this level, at least `bytes` long, 64-byte aligned.
  std::byte* get(int which, std::size_t bytes, const std::string& path) {
    auto& levels = pool();
    if (levels.size() <= level_) levels.resize(level_ + 1);
    slot& s = levels[level_][std::size_t(which)];
    if (s.capacity < bytes) {
      s.buffer = byte_buffer(std::max(bytes, s.capacity + s.capacity / 2), path);
      s.capacity = std::max(bytes, s.capacity + s.capacity / 2);
    }
    return s.buffer.data();
  }

 private:
  struct slot {
    byte_buffer buffer;
    std::size_t capacity = 0;
  };
  static std::size_t& depth() {
    thread_local std::size_t d = 0;
    return d;
  }
  static std::vector<std::array<slot, 2>>& pool() {
    thread_local std::vector<std::array<slot, 2>> levels;
    return levels;
  }
  std::size_t level_;
};

}  // namespace detail

/// One LoRA module of an adapter_view: adapter_module's description (io/adapter.hpp) with the
/// factors as stored.
struct module_view {
  std::string name;
  module_kind kind = module_kind::linear;
  stored_factor B;  ///< d × r (PEFT lora_B, kohya lora_up)
  stored_factor A;  ///< r × k (PEFT lora_A, kohya lora_down), conv kernels flattened
  double scale = 1;
  bool transposed = false;
  std::vector<std::uint64_t> B_shape, A_shape;  ///< the shapes in the file
  std::vector<std::string> extras;              ///< keys of the module's other tensors (DoRA, bias)
  /// The file B and A are read from on visit (factor_reads::on_visit); null when they are in the
  /// image (B.data, A.data).
  const detail::deferred_file* deferred = nullptr;

  index rows() const noexcept { return B.rows; }
  index cols() const noexcept { return A.cols; }
  index rank() const noexcept { return A.rows; }

  /// f(B, A) with B and A Eigen maps of the stored scalar T (double, float, Eigen::half or
  /// Eigen::bfloat16) when both factors have that dtype and are readable in place; otherwise
  /// (mixed dtypes, or a tensor at an unaligned offset) f(B, A) over this module's factors decoded
  /// to float, or to double when either is F64, in a buffer that lives for the call. Every call of
  /// f must return the same type. The scale is `scale`: a double, which the caller converts.
  /// Factors read on visit are read (A, then B) into this thread's buffers and checked first (see
  /// the file comment); the maps are valid during the call only.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (!deferred) return visit_stored(B, A, f);
    detail::visit_buffers buffers;
    stored_factor a = A, b = B;
    std::byte* const a_bytes = buffers.get(0, A.byte_count(), deferred->view().source());
    std::byte* const b_bytes = buffers.get(1, B.byte_count(), deferred->view().source());
    deferred->read(*A.tensor, name, a_bytes);
    deferred->read(*B.tensor, name, b_bytes);
    a.data = a_bytes;
    b.data = b_bytes;
    return visit_stored(b, a, f);
  }

  /// Factor f (this module's B or A) as the file stores it, f.byte_count() bytes copied into out:
  /// from the image, or read from the file and checked as a visit reads it.
  void copy_factor(const stored_factor& f, std::byte* out) const {
    if (deferred)
      deferred->read(*f.tensor, name, out);
    else
      std::memcpy(out, f.data, f.byte_count());
  }

 private:
  template <class F>
  static decltype(auto) visit_stored(const stored_factor& B, const stored_factor& A, F& f) {
    if (B.type == A.type) {
      switch (B.type) {
        case dtype::F64:
          if (B.readable_as<double>() && A.readable_as<double>()) return f(B.map<double>(), A.map<double>());
          break;
        case dtype::F32:
          if (B.readable_as<float>() && A.readable_as<float>()) return f(B.map<float>(), A.map<float>());
          break;
        case dtype::F16:
          if (B.readable_as<Eigen::half>() && A.readable_as<Eigen::half>())
            return f(B.map<Eigen::half>(), A.map<Eigen::half>());
          break;
        default:
          if (B.readable_as<Eigen::bfloat16>() && A.readable_as<Eigen::bfloat16>())
            return f(B.map<Eigen::bfloat16>(), A.map<Eigen::bfloat16>());
          break;
      }
    }
    if (B.type == dtype::F64 || A.type == dtype::F64) return visit_decoded<double>(B, A, f);
    return visit_decoded<float>(B, A, f);
  }

  template <class S, class F>
  static decltype(auto) visit_decoded(const stored_factor& B, const stored_factor& A, F& f) {
    using row_major = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    row_major b(B.rows, B.cols), a(A.rows, A.cols);
    decode_elements(B.data, B.type, static_cast<std::size_t>(b.size()), b.data());
    decode_elements(A.data, A.type, static_cast<std::size_t>(a.size()), a.data());
    using map = Eigen::Map<const row_major>;
    return f(map(b.data(), b.rows(), b.cols()), map(a.data(), a.rows(), a.cols()));
  }
};

namespace detail {

/// The stored factor of tensor t read as rows × cols, every value checked finite as stored.
inline stored_factor finite_stored_factor(const safetensors_view& file, const tensor_info& t, index rows,
                                          index cols, const std::string& where) {
  require_finite_stored(t, file.bytes(t), where);
  return {file.bytes(t), t.dtype, rows, cols, &t};
}

/// The reader's tag for module_view: the file the factors are read from on visit, or null (read
/// and checked now).
template <>
struct module_tag<module_view> {
  const deferred_file* deferred = nullptr;
};

inline module_view read_module_as(module_tag<module_view> tag, const safetensors_view& file, const module_keys& keys,
                                  const char* a_name, const char* b_name) {
  const module_layout l = module_layout_of(file, keys, a_name, b_name);
  module_view m;
  m.name = l.name;
  m.kind = l.kind;
  m.transposed = m.kind == module_kind::embedding;
  if (tag.deferred && (tag.deferred->defers(l.A) || tag.deferred->defers(l.B))) {
    m.A = {nullptr, l.A->dtype, l.rank, l.cols, l.A};
    m.B = {nullptr, l.B->dtype, l.rows, l.rank, l.B};
    m.deferred = tag.deferred;
  } else {
    m.A = finite_stored_factor(file, *l.A, l.rank, l.cols, l.where);
    m.B = finite_stored_factor(file, *l.B, l.rows, l.rank, l.where);
  }
  m.A_shape = l.A->shape;
  m.B_shape = l.B->shape;
  for (const tensor_info* t : keys.extras) {
    require_finite_tensor(file, *t, l.where);
    m.extras.push_back(t->name);
  }
  return m;
}

}  // namespace detail

/// An adapter whose modules view the factors in the file image it holds (see the file comment).
/// Move-only; the views stay valid when it moves.
class adapter_view : public basic_adapter<module_view> {
 public:
  /// Reads the adapter at path as load_adapter does (a PEFT directory, or a .safetensors file of
  /// either dialect with a PEFT config beside it when there is one), with the same errors; with
  /// factor_reads::on_visit the errors of non-finite factors come from the visits that read them
  /// (see the file comment).
  static adapter_view open(const std::string& path, const load_options& options = {},
                           factor_reads reads = factor_reads::at_open) {
    adapter_view a;
    const auto files = locate_adapter_files(path);
    if (reads == factor_reads::at_open) {
      a.file_ = safetensors_file::open(files.weights, options.file);
      read_adapter_into(a, a.file_.view(), files.config, options);
      return a;
    }
    a.deferred_ = std::make_unique<detail::deferred_file>(files.weights, options.file);
    const safetensors_view& file = a.deferred_->view();
    // The factors read on visit are those of the modules (the tensors the dialect's rules give the
    // role of A or B) of options.min_bytes_read_on_visit bytes or more; every other tensor (small
    // modules' factors, alphas, DoRA magnitudes, biases, passthrough) is read now, for the reader.
    // A module the reader forms with either factor deferred is read on visit whole.
    std::vector<const tensor_info*> unmatched, now, factors;
    const auto groups = detail::group_modules(
        file, detect_format(file) == adapter_format::kohya ? detail::kohya_rules() : detail::peft_rules(), unmatched);
    for (const auto& g : groups) {
      const std::uint64_t bytes = (g.A ? g.A->byte_count() : 0) + (g.B ? g.B->byte_count() : 0);
      if (bytes < options.min_bytes_read_on_visit) continue;
      for (const tensor_info* t : {g.A, g.B})
        if (t) factors.push_back(t);
    }
    std::sort(factors.begin(), factors.end());
    for (const auto& t : file.tensors())
      if (!std::binary_search(factors.begin(), factors.end(), &t)) now.push_back(&t);
    a.deferred_->defer(factors);
    a.deferred_->fill(now);
    read_adapter_into(a, file, files.config, options);
    // A factor tensor the reader did not take as a module's (kohya's LyCORIS modules, kept as
    // passthrough) was copied from the unread image: read those and read the adapter again.
    std::vector<const tensor_info*> taken;
    for (const module_view& m : a.modules) taken.insert(taken.end(), {m.A.tensor, m.B.tensor});
    std::sort(taken.begin(), taken.end());
    std::vector<const tensor_info*> missed;
    std::set_difference(factors.begin(), factors.end(), taken.begin(), taken.end(), std::back_inserter(missed));
    if (missed.empty()) return a;
    a.deferred_->fill(missed);
    adapter_view again;
    again.deferred_ = std::move(a.deferred_);
    read_adapter_into(again, file, files.config, options);
    return again;
  }

  adapter_view(adapter_view&&) = default;
  adapter_view& operator=(adapter_view&&) = default;

  /// The validated file the modules view. With factor_reads::on_visit its image holds the header
  /// and the tensors that are not factors; the factors' bytes there are zeros (module_view reads
  /// them from the file).
  const safetensors_view& file() const noexcept { return deferred_ ? deferred_->view() : file_.view(); }

  /// The tag the dialect readers read the modules with (detail::module_tag_of).
  detail::module_tag<module_view> reader_tag() const noexcept { return {deferred_.get()}; }

 private:
  adapter_view() = default;
  safetensors_file file_;
  std::unique_ptr<detail::deferred_file> deferred_;
};

}  // namespace lola::io
