#pragma once
/// @file
/// The representation GL-equivariant layers act on, in LoL notation: a module ΔW = U·Vᵀ with
/// U = B (n×r) and V = Aᵀ (m×r) (DESIGN.md §1: B d×r, A r×k, so n = d and m = k). GL(r) acts on
/// the columns, (U, V) ↦ (U·G, V·G⁻ᵀ); every layer in nn/ acts on the rows, which is why they
/// commute. After the first equivariant linear layer n = m = h, the hidden width.

#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/core/config.hpp"
#include "lola/core/error.hpp"
#include "lola/core/shape.hpp"

namespace lola::nn {

template <class S>
using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

/// One module's (U, V): U n×r, V m×r, ΔW = U·Vᵀ.
template <class S>
struct uv_pair {
  matrix<S> U;
  matrix<S> V;

  index rank() const noexcept { return U.cols(); }
};

/// The modules of one adapter, in the order a network numbers them.
template <class S>
using uv_list = std::vector<uv_pair<S>>;

namespace detail {

/// U and V must have the same number of columns r (the rank).
template <class S>
void require_same_rank(const uv_pair<S>& x, const std::string& where) {
  if (x.U.cols() != x.V.cols())
    throw error(error_code::shape_mismatch, where + ": U is " + shape_string(x.U) + " but V is " +
                                                shape_string(x.V) + " (they must share the rank r)");
}

}  // namespace detail

}  // namespace lola::nn
