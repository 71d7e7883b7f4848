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
/// The owning adapter (io/adapter.hpp) stays for editing and writing.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/core/error.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/dialect.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/load.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

/// A factor as its file stores it: rows × cols, row-major, little-endian elements of `type` at
/// `data` (inside the file image the adapter_view holds).
struct stored_factor {
  const std::byte* data = nullptr;
  io::dtype type = io::dtype::F32;
  index rows = 0, cols = 0;

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

  index rows() const noexcept { return B.rows; }
  index cols() const noexcept { return A.cols; }
  index rank() const noexcept { return A.rows; }

  /// f(B, A) with B and A Eigen maps of the stored scalar T (double, float, Eigen::half or
  /// Eigen::bfloat16) when both factors have that dtype and are readable in place; otherwise
  /// (mixed dtypes, or a tensor at an unaligned offset) f(B, A) over this module's factors decoded
  /// to float, or to double when either is F64, in a buffer that lives for the call. Every call of
  /// f must return the same type. The scale is `scale`: a double, which the caller converts.
  template <class F>
  decltype(auto) visit(F&& f) const {
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
    if (B.type == dtype::F64 || A.type == dtype::F64) return visit_decoded<double>(f);
    return visit_decoded<float>(f);
  }

 private:
  template <class S, class F>
  decltype(auto) visit_decoded(F& f) const {
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
  const auto n = static_cast<std::size_t>(t.element_count());
  const std::size_t bad = first_non_finite_stored(file.bytes(t), t.dtype, n, where + ": tensor \"" + t.name + "\"");
  if (bad < n) throw non_finite_error(file, t, bad, where);
  return {file.bytes(t), t.dtype, rows, cols};
}

inline module_view read_module_as(module_tag<module_view>, const safetensors_view& file, const module_keys& keys,
                                  const char* a_name, const char* b_name) {
  const module_layout l = module_layout_of(file, keys, a_name, b_name);
  module_view m;
  m.name = l.name;
  m.kind = l.kind;
  m.transposed = m.kind == module_kind::embedding;
  m.A = finite_stored_factor(file, *l.A, l.rank, l.cols, l.where);
  m.B = finite_stored_factor(file, *l.B, l.rows, l.rank, l.where);
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
  /// either dialect with a PEFT config beside it when there is one), with the same errors.
  static adapter_view open(const std::string& path, const load_options& options = {}) {
    adapter_view a;
    const auto files = locate_adapter_files(path);
    a.file_ = safetensors_file::open(files.weights, options.file);
    read_adapter_into(a, a.file_.view(), files.config, options);
    return a;
  }

  adapter_view(adapter_view&&) = default;
  adapter_view& operator=(adapter_view&&) = default;

  /// The validated file the modules view.
  const safetensors_view& file() const noexcept { return file_.view(); }

 private:
  adapter_view() = default;
  safetensors_file file_;
};

}  // namespace lola::io
