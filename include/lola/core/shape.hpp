#pragma once
/// @file
/// Shapes as they appear in error messages, and the checks that produce those messages.

#include <string>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"

namespace lola {

/// "rows x cols", the spelling of a shape in every lola message.
inline std::string shape_string(index rows, index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

/// The shape of anything with rows() and cols().
template <class Matrix>
std::string shape_string(const Matrix& m) {
  return shape_string(static_cast<index>(m.rows()), static_cast<index>(m.cols()));
}

namespace detail {

/// Throws shape_mismatch with "<what>: <lhs_name> is RxC but <rhs_name> is RxC" unless ok.
inline void require_shapes(bool ok, const char* what, const char* lhs_name, index lhs_rows,
                           index lhs_cols, const char* rhs_name, index rhs_rows, index rhs_cols) {
  if (ok) return;
  throw error(error_code::shape_mismatch, std::string(what) + ": " + lhs_name + " is " +
                                              shape_string(lhs_rows, lhs_cols) + " but " +
                                              rhs_name + " is " + shape_string(rhs_rows, rhs_cols));
}

}  // namespace detail
}  // namespace lola
