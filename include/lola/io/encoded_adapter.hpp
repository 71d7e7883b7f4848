#pragma once
/// @file
/// io::encoded_adapter: an adapter whose factors are held encoded as its file stores them (F64,
/// F32, F16 or BF16 bytes), for editing an io::adapter_view without a decoded copy. copy_of()
/// copies the view's tensors once, frame_of() all but the factors (for an edit that replaces them:
/// the factors are then read once, by the edit); encoded_module::set_factors() encodes a module's
/// new factors into their file dtypes, moving powers of two between B, A and s where they would not
/// fit, as adapter_module::set_factors does; save_adapter() (io/load.hpp) writes it as it writes an
/// adapter, referring to the encoded bytes rather than copying them.
///
/// Memory: the file's bytes once more, where load_adapter<double> of a BF16 file holds four times
/// its size in factors, and editing it as many again. The factors computed per module (in double,
/// say) live only while set_factors encodes them.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/core/error.hpp"
#include "lola/core/shape.hpp"
#include "lola/io/adapter.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/safetensors.hpp"

namespace lola::io {

/// One LoRA module of an encoded_adapter: ΔW = scale · B · A with B (d × r) and A (r × k) held as
/// tensors in their file dtypes and shapes, named by their keys in the adapter's dialect.
class encoded_module {
 public:
  std::string name;
  module_kind kind = module_kind::linear;
  double scale = 1;
  bool transposed = false;
  std::vector<tensor> extras;  ///< the DoRA magnitude, the lora_B bias: written back as they are

  index rows() const noexcept { return rows_; }
  index cols() const noexcept { return cols_; }
  index rank() const noexcept { return rank_; }
  const tensor& B() const noexcept { return B_; }
  const tensor& A() const noexcept { return A_; }

  /// Whether B and A hold their bytes (encoded_adapter::frame_of leaves them to be set).
  bool has_factors() const noexcept {
    const auto holds = [](const tensor& t) { return t.data.size() == t.element_count() * dtype_bits(t.dtype) / 8; };
    return holds(B_) && holds(A_);
  }

  /// B and A set to m's factors as the file stores them (read from it for factors read on visit,
  /// and checked as a visit checks them); m is the module this one was copied or framed from.
  void copy_factors_of(const module_view& m) {
    for (auto [t, f] : {std::pair<tensor*, const stored_factor*>{&A_, &m.A}, {&B_, &m.B}}) {
      t->data.resize(f->byte_count());
      m.copy_factor(*f, t->data.data());
    }
  }

  /// Replaces the factors with new_B (d × r') and new_A (r' × k), Eigen matrices or expressions of
  /// float or double, and the scale; the file shapes follow the new rank (dimension 0 of A,
  /// dimension 1 of B; conv kernels stay 4-D). The factors are fitted to the dtypes
  /// (detail::fit_to_dtypes) as they are encoded, with no copy of them. Errors name the module:
  /// shape_mismatch when d or k changes or the ranks disagree; numerical for non-finite values, or
  /// factors no power of two makes fit.
  template <class MB, class MA>
  void set_factors(const Eigen::MatrixBase<MB>& new_B, const Eigen::MatrixBase<MA>& new_A, double new_scale) {
    const std::string where = "module \"" + name + "\"";
    if (new_B.rows() != rows_ || new_A.cols() != cols_ || new_B.cols() != new_A.rows())
      throw error(error_code::shape_mismatch, where + " is " + shape_string(rows_, cols_) + ": new factors " +
                                                  shape_string(new_B.rows(), new_B.cols()) + " and " +
                                                  shape_string(new_A.rows(), new_A.cols()) + " do not replace B and A");
    const detail::dtype_fit fit = detail::fit_to_dtypes(new_B, new_A, new_scale, B_.dtype, A_.dtype, where);
    set_rank(B_.shape, 1, new_B.cols());
    set_rank(A_.shape, 0, new_A.rows());
    B_.shape = detail::factor_file_shape(B_.shape, new_B.rows(), new_B.cols(), 1);
    A_.shape = detail::factor_file_shape(A_.shape, new_A.rows(), new_A.cols(), 0);
    // Encoding cannot fail now: every value is finite and within its dtype's range.
    encode_times_power_of_two(B_, new_B, fit.B_exponent);
    encode_times_power_of_two(A_, new_A, fit.A_exponent);
    rank_ = new_A.rows();
    scale = fit.scale;
  }

 private:
  friend class encoded_adapter;

  template <class X>
  static void encode_times_power_of_two(tensor& t, const Eigen::MatrixBase<X>& x, int e) {
    if (e == 0)
      t.encode(x);
    else
      t.encode(detail::times_power_of_two(x, e));
  }

  static void set_rank(std::vector<std::uint64_t>& shape, std::size_t dim, index rank) {
    if (shape.size() > dim) shape[dim] = static_cast<std::uint64_t>(rank);
  }

  tensor B_, A_;
  index rows_ = 0, cols_ = 0, rank_ = 0;
};

/// An adapter with encoded_module modules: what surrounds them (passthrough tensors, metadata,
/// config, dialect) as basic_adapter holds it.
class encoded_adapter : public basic_adapter<encoded_module> {
 public:
  /// The adapter the view reads, every tensor copied as the file stores it: saved unchanged, it
  /// writes the tensors the view's file holds under the keys load_adapter's save would give them.
  static encoded_adapter copy_of(const adapter_view& view) {
    encoded_adapter out = frame_of(view);
    for (std::size_t i = 0; i < view.modules.size(); ++i) out.modules[i].copy_factors_of(view.modules[i]);
    return out;
  }

  /// copy_of without the factors' bytes: each module's B and A have their keys, dtypes and file
  /// shapes and no data, for an edit that sets them (encoded_module::set_factors, or
  /// copy_factors_of where it keeps them). What ops/edit_modules.hpp starts from, so that factors
  /// read on visit are read once, by the edit.
  static encoded_adapter frame_of(const adapter_view& view) {
    encoded_adapter out;
    out.format = view.format;
    out.passthrough = view.passthrough;
    out.metadata = view.metadata;
    out.config = view.config;
    out.warnings = view.warnings;
    out.modules.reserve(view.modules.size());
    const safetensors_view& file = view.file();
    for (const module_view& m : view.modules) {
      encoded_module e;
      e.name = m.name;
      e.kind = m.kind;
      e.scale = m.scale;
      e.transposed = m.transposed;
      e.rows_ = m.rows();
      e.cols_ = m.cols();
      e.rank_ = m.rank();
      e.A_ = {A_factor_key(view.format, m), m.A.type, m.A_shape, {}};
      e.B_ = {B_factor_key(view.format, m), m.B.type, m.B_shape, {}};
      for (const std::string& key : m.extras) e.extras.push_back(tensor::copy_of(file, file.at(key)));
      out.modules.push_back(std::move(e));
    }
    return out;
  }
};

/// Adds m's factors to `out` under the keys given: referred to when the module's tensors carry
/// those keys (as encoded_adapter::copy_of names them), copied under the keys otherwise.
inline void add_factor_tensors(tensor_list& out, const encoded_module& m, std::string A_key, std::string B_key) {
  const auto add = [&](const tensor& t, std::string key) {
    if (t.name == key) {
      out.refer(t);
    } else {
      tensor renamed = t;
      renamed.name = std::move(key);
      out.own(std::move(renamed));
    }
  };
  add(m.A(), std::move(A_key));
  add(m.B(), std::move(B_key));
}

}  // namespace lola::io
