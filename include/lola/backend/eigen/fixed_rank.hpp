#pragma once
/// @file
/// The ranks the register-blocked CPU kernels (gram.hpp, thin_product.hpp) are compiled for: the
/// common LoRA ranks n ∈ {4, 8, 16, 32}, for which an n-wide row or an n×n accumulator has a size
/// known at compile time. Other ranks take Eigen's general product.

#include <type_traits>

#include "lola/core/config.hpp"

namespace lola {
namespace detail {

/// Calls f(std::integral_constant<int, n>{}) and returns true when n is a compiled rank; false,
/// without calling f, otherwise.
template <class F>
bool with_fixed_rank(index n, F&& f) {
  switch (n) {
    case 4: f(std::integral_constant<int, 4>{}); return true;
    case 8: f(std::integral_constant<int, 8>{}); return true;
    case 16: f(std::integral_constant<int, 16>{}); return true;
    case 32: f(std::integral_constant<int, 32>{}); return true;
    default: return false;
  }
}

}  // namespace detail
}  // namespace lola
