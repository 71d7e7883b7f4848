#pragma once
// In-memory adapter modules and tensors for the tests that write adapters: a module from its
// factors, with the shapes a file would give it, and a tensor with one value planted.

#include <cstddef>
#include <cstdint>
#include <string>

#include <Eigen/Core>

#include "lola/io/adapter.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/safetensors.hpp"

namespace lola_test {

/// A linear module ΔW = scale·B·A named `name`, its file shapes B d×r and A r×k, stored in dtype t.
template <class T, class MB, class MA>
lola::io::adapter_module<T> make_module(const std::string& name, const MB& B, const MA& A, double scale = 1.0,
                                        lola::io::dtype t = lola::io::dtype::F32) {
  lola::io::adapter_module<T> m;
  m.name = name;
  m.B = B.template cast<T>();
  m.A = A.template cast<T>();
  m.scale = scale;
  m.B_dtype = m.A_dtype = t;
  m.B_shape = {std::uint64_t(B.rows()), std::uint64_t(B.cols())};
  m.A_shape = {std::uint64_t(A.rows()), std::uint64_t(A.cols())};
  return m;
}

/// t with flat element i set to v (the safetensors writer encodes NaN and inf as they are).
inline lola::io::tensor with_element(const lola::io::tensor& t, std::size_t i, double v) {
  const auto n = static_cast<Eigen::Index>(t.element_count());
  Eigen::VectorXd x(n);
  lola::io::decode_elements(t.data.data(), t.dtype, static_cast<std::size_t>(n), x.data());
  x(static_cast<Eigen::Index>(i)) = v;
  return lola::io::tensor::from_matrix(t.name, t.dtype, t.shape, x);
}

}  // namespace lola_test
