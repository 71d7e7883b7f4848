#pragma once
/// @file
/// Adapters whose factors live in the probe backend (probe_backend.hpp): what the whole-adapter
/// algorithms (featurize, GL-net forward) take when a backend's loader hands them its modules. A
/// module offers what io::adapter_module offers the algorithms (name, kind, scale, shape, visit)
/// and nothing of Eigen, so an algorithm that reaches its factors other than through the
/// primitives does not compile for it.

#include <string>

#include "lola/io/adapter.hpp"
#include "support/probe_backend.hpp"

namespace lola_test::probe {

/// B and A row-major, as io::adapter_module holds them (the host kernels pick their path by
/// layout, so only the same layout gives the same bits): each kept as its transpose, column-major.
template <class S>
struct module {
  std::string name;
  lola::io::module_kind kind = lola::io::module_kind::linear;
  double scale = 1;
  matrix<S> B_transposed;  ///< r × d
  matrix<S> A_transposed;  ///< k × r

  index rows() const { return B_transposed.cols(); }
  index cols() const { return A_transposed.rows(); }
  index rank() const { return A_transposed.cols(); }
  template <class F>
  decltype(auto) visit(F&& f) const {
    return f(B_transposed.transpose(), A_transposed.transpose());
  }
};

template <class S>
using adapter = lola::io::basic_adapter<module<S>>;

/// The probe copy of a decoded adapter's modules (factors, names, kinds, scales, format).
template <class S>
adapter<S> copy_of(const lola::io::adapter<S>& a) {
  adapter<S> out;
  out.format = a.format;
  for (const auto& m : a.modules)
    out.modules.push_back({m.name, m.kind, m.scale, copy_of(m.B.transpose()), copy_of(m.A.transpose())});
  return out;
}

}  // namespace lola_test::probe
