#pragma once
/// @file
/// safetensors: a validating reader over the bytes of a file, and the writer of the reference
/// layout.
///
/// Layout: [0, 8) the header length N, u64 little-endian; [8, 8 + N) a UTF-8 JSON object; then the
/// data buffer, which every tensor's data_offsets [begin, end) are relative to.
///
/// The reader applies every check of the reference implementation (safetensors/src/tensor.rs,
/// read_metadata), in its order, in release builds, and three of its own:
///   - length < 8; N > max_header_bytes (default 100,000,000); 8 + N past the end of the file;
///   - the header is invalid UTF-8 or invalid JSON (nesting deeper than 128 included), or not an
///     object; __metadata__ is not a string → string map; a tensor entry lacks dtype, shape or
///     data_offsets, or names an unknown dtype; shape or offsets are not unsigned 64-bit integers;
///   - sorted by (begin, end), the tensors must tile the buffer from 0 with no gap or overlap;
///     Π shape · bits must not overflow 64 bits, must be a whole number of bytes, and must equal
///     end − begin; the last end must be the end of the file (no trailing bytes);
///   - lola's own: a duplicate key (tensor name or __metadata__ key) is rejected by name, where the
///     reference keeps the last one and fails later with a misleading offset error; an unknown field
///     in a tensor entry is rejected (the format's JSON schema forbids them; the reference ignores
///     them); a file that fails the first checks is diagnosed when it is recognisably something else
///     (a Git LFS pointer, a zip or pickle checkpoint, an HTML page, GGUF, JSON).
/// Leading and trailing JSON whitespace in the header is accepted, as by the reference.
/// Every error is a lola::error(invalid_file) naming the file, the tensor and the rule.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/file.hpp"
#include "lola/io/json.hpp"
#include "lola/io/printable.hpp"

namespace lola::io {

namespace detail {

/// a·b into out; false (out unchanged) when the product exceeds 2⁶⁴ − 1.
inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
  if (a != 0 && b > UINT64_MAX / a) return false;
  out = a * b;
  return true;
}

/// Π dims over [first, last) (1 for none), or UINT64_MAX when it overflows: a saturated count
/// equals no real size, so a comparison with one fails instead of wrapping.
template <class It>
std::uint64_t saturated_product(It first, It last) noexcept {
  std::uint64_t n = 1;
  for (; first != last; ++first)
    if (!checked_mul(n, *first, n)) return UINT64_MAX;
  return n;
}

/// Π shape, saturated (saturated_product).
inline std::uint64_t element_count(const std::vector<std::uint64_t>& shape) noexcept {
  return saturated_product(shape.begin(), shape.end());
}

}  // namespace detail

/// String → string pairs in file order: the __metadata__ of a safetensors file.
using metadata_map = std::vector<std::pair<std::string, std::string>>;

/// One tensor's header entry. Offsets are relative to the data buffer.
struct tensor_info {
  std::string name;
  io::dtype dtype = io::dtype::F32;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  /// Π shape (1 for a 0-dimensional tensor). Validated not to overflow when read from a file.
  std::uint64_t element_count() const noexcept { return detail::element_count(shape); }
  std::uint64_t byte_count() const noexcept { return end - begin; }
};

/// "[2, 3, 4]"
inline std::string shape_to_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Reader limits.
struct read_options {
  /// The largest header accepted, in bytes. The reference's cap; raise it for files with very many
  /// tensors (safetensors#668: 1.29 M tensors in a 7 GB file).
  std::uint64_t max_header_bytes = 100'000'000;
};

namespace detail {

/// What a file that is not safetensors probably is, as a clause to append to an error, or "".
/// Only files too short for a header, or whose first 8 bytes read as a length of 10^8 or more (the
/// reference's cap), are diagnosed: a real but truncated safetensors file starts with a plausible
/// length whose low byte may look like a signature (0x80 as in a pickle, '{' as in JSON).
inline std::string diagnose_non_safetensors(const std::byte* data, std::size_t size) {
  if (size >= 8 && load_le<std::uint64_t>(data) < 100'000'000) return "";
  const std::string_view head(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 512));
  auto starts_with = [&](std::string_view prefix) { return head.substr(0, prefix.size()) == prefix; };
  std::size_t first = 0;
  while (first < head.size() && (head[first] == ' ' || head[first] == '\t' || head[first] == '\n' ||
                                 head[first] == '\r'))
    ++first;
  std::string lowered(head.substr(first, 16));
  for (auto& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (starts_with("version https://git-lfs"))
    return "; this is a Git LFS pointer file, not the data: fetch the real file (git lfs pull)";
  if (starts_with("PK\x03\x04") || starts_with("PK\x05\x06"))
    return "; this is a zip archive (a PyTorch .bin/.pt checkpoint?), not safetensors";
  if (head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x80 &&
      static_cast<unsigned char>(head[1]) >= 2 && static_cast<unsigned char>(head[1]) <= 5)
    return "; this is a Python pickle (a PyTorch checkpoint?), not safetensors";
  if (starts_with("GGUF")) return "; this is a GGUF file, not safetensors";
  if (lowered.rfind("<!doctype", 0) == 0 || lowered.rfind("<html", 0) == 0 ||
      lowered.rfind("<?xml", 0) == 0)
    return "; this is an HTML/XML page (a failed or redirected download?), not safetensors";
  if (first < head.size() && (head[first] == '{' || head[first] == '['))
    return "; this looks like a JSON document, not safetensors";
  return "";
}

}  // namespace detail

/// A validated view of a complete safetensors image held elsewhere (a file read into memory, a
/// buffer).
/// Cheap to copy; the bytes must outlive it.
class safetensors_view {
 public:
  safetensors_view() = default;

  /// Validates the image; `source` names it in every message (usually the path).
  static safetensors_view parse(const std::byte* data, std::size_t size, std::string source,
                                const read_options& options = {}) {
    safetensors_view view;
    view.source_ = std::move(source);
    view.data_ = data;
    view.size_ = size;
    view.read_header(options);
    return view;
  }

  const std::string& source() const noexcept { return source_; }
  /// The tensors in header order.
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  const metadata_map& metadata() const noexcept { return metadata_; }
  /// Bytes before the data buffer: 8 + N.
  std::uint64_t data_offset() const noexcept { return data_offset_; }

  /// The tensor called name, or nullptr.
  const tensor_info* find(std::string_view name) const noexcept {
    auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                               [&](std::size_t i, std::string_view n) { return tensors_[i].name < n; });
    return it != by_name_.end() && tensors_[*it].name == name ? &tensors_[*it] : nullptr;
  }

  /// The tensor called name; error_code::invalid_argument naming the file when absent.
  const tensor_info& at(std::string_view name) const {
    if (const auto* t = find(name)) return *t;
    throw error(error_code::invalid_argument,
                source_ + ": no tensor \"" + std::string(name) + "\"");
  }

  /// The tensor's bytes (little-endian, row-major), at whatever alignment the file gives them.
  const std::byte* bytes(const tensor_info& t) const noexcept { return data_ + data_offset_ + t.begin; }

  /// The tensor's elements converted to S, as a rows × cols row-major matrix (rows · cols must equal
  /// the element count: a conv kernel r×in×kh×kw is read as r × (in·kh·kw)).
  template <class S>
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> matrix(const tensor_info& t,
                                                                           index rows,
                                                                           index cols) const {
    const std::uint64_t dims[] = {static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols)};
    if (rows < 0 || cols < 0 || detail::saturated_product(dims, dims + 2) != t.element_count())
      throw error(error_code::shape_mismatch,
                  source_ + ": tensor \"" + t.name + "\" of shape " + shape_to_string(t.shape) +
                      " cannot be read as " + std::to_string(rows) + "x" + std::to_string(cols));
    Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(rows, cols);
    decode_elements(bytes(t), t.dtype, static_cast<std::size_t>(t.element_count()), m.data(),
                    source_ + ": tensor \"" + t.name + "\"");
    return m;
  }

  /// The tensor as a matrix: shape[0] × Π shape[1:] (a 0-d tensor is 1×1, a vector n×1).
  template <class S>
  Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> matrix(const tensor_info& t) const {
    const auto [rows, cols] = matrix_shape(t);
    return matrix<S>(t, rows, cols);
  }

  /// A zero-copy row-major view when the tensor's dtype is S's and its address is aligned for S;
  /// nullopt otherwise (then use matrix<S>, which copies). Host byte order must be little-endian.
  template <class S>
  std::optional<Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>>
  map(const tensor_info& t) const {
    const auto* p = bytes(t);
    if (t.dtype != dtype_of<S>() || !detail::host_is_little_endian() ||
        reinterpret_cast<std::uintptr_t>(p) % alignof(S) != 0)
      return std::nullopt;
    const auto [rows, cols] = matrix_shape(t);
    return Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        reinterpret_cast<const S*>(p), rows, cols);
  }

  /// The single value of a one-element tensor (a kohya alpha), converted to double.
  double scalar(const tensor_info& t) const {
    if (t.element_count() != 1)
      throw error(error_code::shape_mismatch, source_ + ": tensor \"" + t.name + "\" of shape " +
                                                  shape_to_string(t.shape) + " is not a scalar");
    double v = 0;
    decode_elements(bytes(t), t.dtype, 1, &v, source_ + ": tensor \"" + t.name + "\"");
    return v;
  }

 private:
  std::pair<index, index> matrix_shape(const tensor_info& t) const {
    if (t.shape.empty()) return {1, 1};
    const std::uint64_t cols = detail::saturated_product(t.shape.begin() + 1, t.shape.end());
    if (t.shape[0] > static_cast<std::uint64_t>(PTRDIFF_MAX) || cols > static_cast<std::uint64_t>(PTRDIFF_MAX))
      throw error(error_code::unsupported, source_ + ": tensor \"" + t.name + "\" of shape " +
                                               shape_to_string(t.shape) + " is too large to index");
    return {static_cast<index>(t.shape[0]), static_cast<index>(cols)};
  }

  [[noreturn]] void fail(const std::string& rule, bool diagnose = false) const {
    throw error(error_code::invalid_file,
                source_ + ": " + rule + (diagnose ? detail::diagnose_non_safetensors(data_, size_) : ""));
  }

  static std::optional<std::uint64_t> unsigned_of(const json_value& v) {
    return v.is_number() ? v.as_uint64() : std::nullopt;
  }

  void read_header(const read_options& options) {
    if (size_ < 8)
      fail("not a safetensors file: " + std::to_string(size_) +
               " bytes, fewer than the 8-byte header length",
           true);
    const std::uint64_t n = detail::load_le<std::uint64_t>(data_);
    if (n > options.max_header_bytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " +
               std::to_string(options.max_header_bytes) + " bytes",
           true);
    if (n > size_ - 8)
      fail("header length " + std::to_string(n) + " runs past the end of the file (" +
               std::to_string(size_) + " bytes)",
           true);
    data_offset_ = 8 + n;
    const std::string_view text(reinterpret_cast<const char*>(data_ + 8), static_cast<std::size_t>(n));
    json_value header;
    try {
      header = parse_json(text, source_ + ": header");
    } catch (const error& e) {
      throw error(error_code::invalid_file,
                  e.message() + detail::diagnose_non_safetensors(data_, size_));
    }
    if (!header.is_object()) fail("the header is not a JSON object", true);

    tensors_.reserve(header.size());
    for (const auto& [key, value] : header.members()) {
      if (key == "__metadata__") {
        read_metadata(value);
        continue;
      }
      tensors_.push_back(read_entry(key, value));
    }
    by_name_.resize(tensors_.size());
    std::iota(by_name_.begin(), by_name_.end(), std::size_t{0});
    std::sort(by_name_.begin(), by_name_.end(),
              [&](std::size_t a, std::size_t b) { return tensors_[a].name < tensors_[b].name; });
    validate_layout();
  }

  void read_metadata(const json_value& value) {
    if (!value.is_object()) fail("__metadata__ is not a JSON object of strings");
    for (const auto& [key, v] : value.members()) {
      if (!v.is_string())
        fail("__metadata__ entry \"" + key + "\" is not a string (metadata must map strings to strings)");
      metadata_.emplace_back(key, v.as_string());
    }
  }

  tensor_info read_entry(const std::string& name, const json_value& value) const {
    // Messages are built only on failure: this runs once per tensor of every file.
    auto where = [&] { return "tensor \"" + name + "\""; };
    if (!value.is_object()) fail(where() + ": the entry is not a JSON object");
    for (const auto& [field, ignored] : value.members()) {
      (void)ignored;
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        fail(where() + ": unknown field \"" + field + "\"");
    }
    tensor_info t;
    t.name = name;
    const auto* dt = value.find("dtype");
    if (!dt) fail(where() + ": missing field \"dtype\"");
    if (!dt->is_string()) fail(where() + ": dtype is not a string");
    const auto parsed = parse_dtype(dt->as_string());
    if (!parsed) fail(where() + ": unknown dtype \"" + dt->as_string() + "\"");
    t.dtype = *parsed;

    const auto* shape = value.find("shape");
    if (!shape) fail(where() + ": missing field \"shape\"");
    if (!shape->is_array()) fail(where() + ": shape is not an array");
    for (const auto& dim : shape->items()) {
      const auto d = unsigned_of(dim);
      if (!d) fail(where() + ": shape entries must be unsigned 64-bit integers");
      t.shape.push_back(*d);
    }
    const auto* offsets = value.find("data_offsets");
    if (!offsets) fail(where() + ": missing field \"data_offsets\"");
    if (!offsets->is_array() || offsets->size() != 2)
      fail(where() + ": data_offsets is not an array of two integers");
    const auto b = unsigned_of(offsets->items()[0]);
    const auto e = unsigned_of(offsets->items()[1]);
    if (!b || !e) fail(where() + ": data_offsets must be unsigned 64-bit integers");
    t.begin = *b;
    t.end = *e;
    return t;
  }

  void validate_layout() const {
    std::vector<std::size_t> order(tensors_.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return std::pair(tensors_[a].begin, tensors_[a].end) < std::pair(tensors_[b].begin, tensors_[b].end);
    });
    std::uint64_t start = 0;
    for (std::size_t i : order) {
      const auto& t = tensors_[i];
      auto where = [&] { return "tensor \"" + t.name + "\""; };
      auto span = [&] {
        return "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ")";
      };
      if (t.begin != start)
        fail(where() + ": " + span() + (t.begin < start ? " overlaps the previous tensor" : " leaves a gap") +
             " (tensors must tile the data buffer from offset 0; the next tensor should begin at " +
             std::to_string(start) + ")");
      if (t.end < t.begin) fail(where() + ": " + span() + " ends before it begins");
      const std::uint64_t elements = t.element_count();
      std::uint64_t bits = 0;
      if (elements == UINT64_MAX)
        fail(where() + ": shape " + shape_to_string(t.shape) + " overflows the element count");
      if (!detail::checked_mul(elements, dtype_bits(t.dtype), bits))
        fail(where() + ": shape " + shape_to_string(t.shape) + " with dtype " +
             std::string(dtype_name(t.dtype)) + " overflows the byte count");
      if (bits % 8 != 0)
        fail(where() + ": " + std::to_string(elements) + " elements of " +
             std::string(dtype_name(t.dtype)) + " are not a whole number of bytes");
      if (t.end - t.begin != bits / 8)
        fail(where() + ": " + span() + " holds " + std::to_string(t.end - t.begin) +
             " bytes but shape " + shape_to_string(t.shape) + " of " +
             std::string(dtype_name(t.dtype)) + " needs " + std::to_string(bits / 8));
      start = t.end;
    }
    const std::uint64_t buffer = size_ - data_offset_;
    if (start != buffer)
      fail("the tensors cover " + std::to_string(start) + " bytes of a data buffer of " +
           std::to_string(buffer) +
           (start < buffer ? " (trailing bytes after the last tensor)"
                           : " (the file is truncated)"));
  }

  std::string source_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t data_offset_ = 0;
  std::vector<tensor_info> tensors_;
  std::vector<std::size_t> by_name_;
  metadata_map metadata_;
};

/// A safetensors file: its bytes (read into memory, see file_bytes) and the validated view over
/// them. Move-only.
class safetensors_file {
 public:
  /// Reads and validates the file at path; error_code::io or invalid_file, naming path.
  static safetensors_file open(const std::string& path, const read_options& options = {}) {
    safetensors_file f;
    f.file_ = file_bytes(path);
    f.view_ = safetensors_view::parse(f.file_.data(), f.file_.size(), path, options);
    return f;
  }

  /// Validates an in-memory image, which the object keeps.
  static safetensors_file from_bytes(std::vector<std::byte> bytes, std::string source,
                                     const read_options& options = {}) {
    safetensors_file f;
    f.bytes_ = std::move(bytes);
    f.view_ = safetensors_view::parse(f.bytes_.data(), f.bytes_.size(), std::move(source), options);
    return f;
  }

  const safetensors_view& view() const noexcept { return view_; }
  const safetensors_view* operator->() const noexcept { return &view_; }

 private:
  file_bytes file_;
  std::vector<std::byte> bytes_;  // a moved vector keeps its buffer, so view_ stays valid
  safetensors_view view_;
};

/// A tensor held in memory, ready to write (or kept from a file untouched).
struct tensor {
  std::string name;
  io::dtype dtype = io::dtype::F32;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> data;  ///< little-endian, row-major, Π shape · bits / 8 bytes

  /// A copy of a tensor of a file.
  static tensor copy_of(const safetensors_view& file, const tensor_info& t) {
    const auto* p = file.bytes(t);
    return {t.name, t.dtype, t.shape, std::vector<std::byte>(p, p + t.byte_count())};
  }

  /// Encodes a matrix's values (read in row-major order) as dtype t with the given shape.
  /// A finite value that t cannot hold (it would round to ±inf: |x| ≥ 65520 for F16, beyond
  /// ≈ 3.39e38 for BF16, beyond FLT_MAX for F32) is error_code::numerical naming the tensor and the
  /// element: lola never turns a finite value into inf. (adapter_module::fit_to_dtypes moves
  /// powers of two between B, A and s first, so factors that fit after rescaling are written.)
  /// NaN and ±inf are encoded as they are: checking values is the caller's business, and every
  /// lola reader of factors and weights rejects them.
  template <class Derived>
  static tensor from_matrix(std::string name, io::dtype t, std::vector<std::uint64_t> shape,
                            const Eigen::DenseBase<Derived>& values) {
    tensor out{std::move(name), t, std::move(shape), {}};
    out.encode(values);
    return out;
  }

  /// Replaces the data with values encoded as this tensor's dtype and shape (from_matrix's rules
  /// and errors), in the buffer the tensor holds when it is large enough. A row-major matrix is
  /// read in place; anything else (a column-major factor, an expression) is evaluated a tile at a
  /// time (at most 2048 values, 256 columns wide) into a row-major buffer that stays in L1 and
  /// encoded from there, row segment by row segment, so no row-major copy of it is made. A
  /// column-major matrix with direct access is transposed into the tile by a loop that reads its
  /// columns contiguously (Eigen's assignment read them across, 1.7 ns a value on the reference VM).
  template <class Derived>
  void encode(const Eigen::DenseBase<Derived>& values) {
    using S = typename Derived::Scalar;
    using X = std::decay_t<decltype(values.derived())>;
    using row_major = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    if (element_count() != static_cast<std::uint64_t>(values.size()))
      throw error(error_code::shape_mismatch, "tensor \"" + name + "\": shape " + shape_to_string(shape) +
                                                  " does not hold " + std::to_string(values.size()) + " values");
    const auto n = static_cast<std::size_t>(values.size());
    const std::size_t width = dtype_bits(dtype) / 8;
    data.resize(n * width);
    const std::string what = "tensor \"" + name + "\"";
    // Encodes count values that are elements [first, first + count) in row-major order.
    const auto encode_span = [&](const S* v, std::size_t first, std::size_t count) {
      const std::size_t overflow = encode_elements(v, count, dtype, data.data() + first * width, what);
      if (overflow == count) return;
      char value[32];
      std::snprintf(value, sizeof value, "%.9g", static_cast<double>(v[overflow]));
      char largest[32];
      std::snprintf(largest, sizeof largest, "%.9g", dtype_max(dtype));
      throw error(error_code::numerical, what + ": element " + std::to_string(first + overflow) + " is " + value +
                                             ", which " + std::string(dtype_name(dtype)) +
                                             " cannot hold (largest finite " + largest +
                                             "); lola does not write it as inf");
    };
    if constexpr (std::is_same_v<X, row_major>) {
      encode_span(values.derived().data(), 0, n);
    } else {
      const index rows = values.rows(), cols = values.cols();
      if (rows == 0 || cols == 0) return;
      const index w = std::min<index>(cols, 256), h = std::max<index>(1, 2048 / w);
      row_major tile(std::min(h, rows), w);
      for (index i = 0; i < rows; i += h) {
        const index th = std::min(h, rows - i);
        for (index c0 = 0; c0 < cols; c0 += w) {
          const index tw = std::min(w, cols - c0);
          if constexpr ((int(X::Flags) & Eigen::DirectAccessBit) && !(int(X::Flags) & Eigen::RowMajorBit) &&
                        X::InnerStrideAtCompileTime == 1) {
            const S* source = values.derived().data() + i + c0 * values.derived().outerStride();
            for (index c = 0; c < tw; ++c, source += values.derived().outerStride())
              for (index t = 0; t < th; ++t) tile(t, c) = source[t];
          } else {
            tile.topLeftCorner(th, tw) = values.derived().block(i, c0, th, tw);
          }
          if (tw == cols)  // whole rows: the tile is one run of the output
            encode_span(tile.data(), static_cast<std::size_t>(i * cols), static_cast<std::size_t>(th * cols));
          else
            for (index t = 0; t < th; ++t)
              encode_span(&tile(t, 0), static_cast<std::size_t>((i + t) * cols + c0), static_cast<std::size_t>(tw));
        }
      }
    }
  }

  /// Π shape, saturated at UINT64_MAX (a tensor built in memory is not validated by a parser).
  std::uint64_t element_count() const noexcept { return detail::element_count(shape); }
};

namespace detail {
/// A safetensors header is UTF-8 JSON, and readers (lola's, the reference's) reject the escapes
/// that would carry other bytes: a name or metadata string that is not UTF-8 is refused on write
/// (invalid_argument naming it), rather than written into a file nobody can read.
inline void require_utf8(std::string_view s, const char* what) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const char* why = nullptr;
    const std::size_t length = utf8_sequence_length(p + i, s.size() - i, why);
    if (length == 0)
      throw error(error_code::invalid_argument, std::string(what) + " \"" + printable(s) +
                                                    "\" is not valid UTF-8 (" + why + " at byte " +
                                                    std::to_string(i) + "); a safetensors header cannot hold it");
    i += length;
  }
}

/// A safetensors file laid out (serialize_safetensors's layout) over tensors held elsewhere: its
/// length and header, here, and each tensor's data where the tensor holds it, in file order. A
/// file is written from runs() with no image of it assembled (which cost a fresh allocation and a
/// copy of every byte: for a 34 MB output, 10–25 ms on the reference VM). The tensors must outlive it.
struct safetensors_layout {
  std::vector<std::byte> head;          ///< the header length (u64 little-endian) and the padded JSON header
  std::vector<const tensor*> in_order;  ///< the tensors in file order

  /// The file as runs of bytes: the head, then the tensors' data. The first run points into this
  /// object, so a temporary's runs would dangle (deleted).
  std::vector<byte_run> runs() && = delete;
  std::vector<byte_run> runs() const& {
    std::vector<byte_run> out{{head.data(), head.size()}};
    for (const tensor* t : in_order)
      if (!t->data.empty()) out.push_back({t->data.data(), t->data.size()});
    return out;
  }
  /// The whole file in one buffer.
  std::vector<std::byte> image() const {
    const std::vector<byte_run> all = runs();
    std::size_t size = 0;
    for (const byte_run& r : all) size += r.size;
    std::vector<std::byte> out(size);
    std::size_t at = 0;
    for (const byte_run& r : all) {
      std::memcpy(out.data() + at, r.data, r.size);
      at += r.size;
    }
    return out;
  }
};

/// serialize_safetensors's layout and checks over tensors held elsewhere (an adapter's, say).
inline safetensors_layout lay_out_tensors(const std::vector<const tensor*>& tensors, const metadata_map& metadata) {
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (tensors[a]->dtype != tensors[b]->dtype) return tensors[a]->dtype > tensors[b]->dtype;
    return tensors[a]->name < tensors[b]->name;
  });
  std::string text = "{";
  if (!metadata.empty()) {
    std::unordered_set<std::string_view> keys;
    text += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!keys.insert(k).second)
        throw error(error_code::invalid_argument, "safetensors metadata: duplicate key \"" + k + "\"");
      detail::require_utf8(k, "safetensors metadata key");
      detail::require_utf8(v, "safetensors metadata value");
      if (text.back() != '{') text += ',';
      detail::append_json_quoted(text, k);
      text += ':';
      detail::append_json_quoted(text, v);
    }
    text += '}';
  }
  std::uint64_t offset = 0;
  std::unordered_set<std::string_view> names;
  names.reserve(tensors.size());
  const auto append_number = [&text](std::uint64_t v) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    text.append(digits, end);
  };
  for (std::size_t i : order) {
    const auto& t = *tensors[i];
    if (t.name == "__metadata__")
      throw error(error_code::invalid_argument, "a tensor cannot be named \"__metadata__\"");
    if (!names.insert(t.name).second)
      throw error(error_code::invalid_argument, "duplicate tensor name \"" + t.name + "\"");
    detail::require_utf8(t.name, "tensor name");
    std::uint64_t bits = 0;
    if (!detail::checked_mul(t.element_count(), dtype_bits(t.dtype), bits) || bits % 8 != 0 ||
        bits / 8 != t.data.size())
      throw error(error_code::invalid_argument,
                  "tensor \"" + t.name + "\": " + std::to_string(t.data.size()) +
                      " bytes do not match shape " + shape_to_string(t.shape) + " of " +
                      std::string(dtype_name(t.dtype)));
    if (text.back() != '{') text += ',';
    detail::append_json_quoted(text, t.name);
    text += ":{\"dtype\":";
    detail::append_json_quoted(text, dtype_name(t.dtype));
    text += ",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d) {
      if (d) text += ',';
      append_number(t.shape[d]);
    }
    text += "],\"data_offsets\":[";
    append_number(offset);
    text += ',';
    append_number(offset + t.data.size());
    text += "]}";
    offset += t.data.size();
  }
  text += '}';
  text.append((8 - text.size() % 8) % 8, ' ');
  safetensors_layout out;
  out.head.resize(8 + text.size());
  detail::store_le(out.head.data(), static_cast<std::uint64_t>(text.size()));
  std::memcpy(out.head.data() + 8, text.data(), text.size());
  out.in_order.reserve(order.size());
  for (std::size_t i : order) out.in_order.push_back(tensors[i]);
  return out;
}

/// The file image of lay_out_tensors.
inline std::vector<std::byte> serialize_tensors(const std::vector<const tensor*>& tensors,
                                                const metadata_map& metadata) {
  return lay_out_tensors(tensors, metadata).image();
}

}  // namespace detail

/// The bytes of a safetensors file in the reference layout: __metadata__ first, then the tensors
/// ordered by dtype (descending, the reference's order, so every tensor is aligned to its element
/// size) and then by name, packed back to back; the header compact JSON ({"dtype", "shape",
/// "data_offsets"} per tensor, as json_value::dump writes it), padded with spaces to a multiple
/// of 8. The header is written directly, not built as a json_value, so time and memory are linear
/// in the tensor count apart from the O(n log n) sort (bench_io: 16 ms for 40,000 tiny tensors,
/// where a json_value header built by a linear-search set() took 3.4 s).
/// Errors (invalid_argument): a duplicate or reserved name, a data size that does not match the
/// shape, a duplicate metadata key.
inline std::vector<std::byte> serialize_safetensors(const std::vector<tensor>& tensors,
                                                    const metadata_map& metadata = {}) {
  std::vector<const tensor*> pointers;
  pointers.reserve(tensors.size());
  for (const auto& t : tensors) pointers.push_back(&t);
  return detail::serialize_tensors(pointers, metadata);
}

/// Writes a safetensors file atomically (see write_file_atomic).
inline void write_safetensors(const std::string& path, const std::vector<tensor>& tensors,
                              const metadata_map& metadata = {}) {
  std::vector<const tensor*> pointers;
  pointers.reserve(tensors.size());
  for (const auto& t : tensors) pointers.push_back(&t);
  const auto layout = detail::lay_out_tensors(pointers, metadata);
  write_file_atomic(path, layout.runs());
}

}  // namespace lola::io
