#pragma once
/// @file
/// Products of a factor with a small matrix, the step that turns r×r results back into factors
/// (U = B·X, Vᵀ = Yᵀ·A, B* and A* of the canonical forms): out = X·C for a tall X (m×n, n = the
/// rank) and a small C (n×c). O(m·n·c) multiply-adds.
///
/// Eigen's product zeroes the destination, packs both operands and then accumulates; for a
/// destination as large as the factor, the zeroing alone is a full extra write pass. Where the
/// layouts allow, the kernels below read X once and write each output entry once:
///   X with contiguous columns, out column-major: register tiles of 3 lane-vectors of rows by
///       4 output columns, each an outer-product accumulation over X's n columns.
///   X with contiguous rows, out row-major, c = n ∈ {4, 8, 16, 32} (the transposed products,
///       Yᵀ·A for a column-major A): each output row is Cᵀ times a row of X, with Cᵀ held in
///       vector registers.
///   otherwise Eigen's product.
/// Each entry is one dot product of length n, so the rounding error is γ_n·|X|·|C| entry-wise.

#include <algorithm>
#include <type_traits>

#include <Eigen/Core>

#include "lola/backend/eigen/fixed_rank.hpp"
#include "lola/backend/eigen/gram.hpp"
#include "lola/core/config.hpp"

namespace lola {
namespace detail {

/// out = X·C for X with contiguous columns (`stride` apart) and out column-major (`out_stride`).
template <class S>
void thin_product_columns(const S* x, index m, index n, index stride, const dense_matrix<S>& c,
                          S* out, index out_stride) {
  using lane = gram_lane<S>;
  using lane_map = Eigen::Map<const lane>;
  using lane_out = Eigen::Map<lane>;
  constexpr index width = lane::SizeAtCompileTime, tile_rows = 3 * width;
  const index cols = c.cols(), m_tiles = m / tile_rows * tile_rows,
              m_lanes = m / width * width, cols4 = cols / 4 * 4;
  // Full tiles: 3 lane-vectors of rows × 4 columns, 12 accumulators.
  for (index i = 0; i < m_tiles; i += tile_rows)
    for (index j = 0; j < cols4; j += 4) {
      lane acc[3][4];
      for (auto& row : acc)
        for (auto& a : row) a.setZero();
      for (index l = 0; l < n; ++l) {
        lane xs[3];
        for (int p = 0; p < 3; ++p) xs[p] = lane_map(x + l * stride + i + p * width);
        for (int q = 0; q < 4; ++q) {
          const S coefficient = c(l, j + q);
          for (int p = 0; p < 3; ++p) acc[p][q] += xs[p] * coefficient;
        }
      }
      for (int q = 0; q < 4; ++q)
        for (int p = 0; p < 3; ++p) lane_out(out + (j + q) * out_stride + i + p * width) = acc[p][q];
    }
  // The remaining columns over the full tiles, and the remaining rows by single lanes.
  for (index i = 0; i < m_tiles; i += width)
    for (index j = cols4; j < cols; ++j) {
      lane acc = lane::Zero();
      for (index l = 0; l < n; ++l) acc += lane_map(x + l * stride + i) * c(l, j);
      lane_out(out + j * out_stride + i) = acc;
    }
  for (index i = m_tiles; i < m_lanes; i += width)
    for (index j = 0; j < cols; ++j) {
      lane acc = lane::Zero();
      for (index l = 0; l < n; ++l) acc += lane_map(x + l * stride + i) * c(l, j);
      lane_out(out + j * out_stride + i) = acc;
    }
  for (index i = m_lanes; i < m; ++i)
    for (index j = 0; j < cols; ++j) {
      S sum = 0;
      for (index l = 0; l < n; ++l) sum += x[l * stride + i] * c(l, j);
      out[j * out_stride + i] = sum;
    }
}

/// out = X·C for X with contiguous rows of length N, out row-major, C N×N: each output row is
/// Cᵀ·(row of X), Cᵀ held in registers; four rows at a time, four independent accumulations.
template <int N, class S>
void thin_product_rows_fixed(const S* x, index m, index stride, const dense_matrix<S>& c, S* out,
                             index out_stride) {
  using fixed = Eigen::Matrix<S, N, N>;
  using panel = Eigen::Matrix<S, N, 4>;
  using vec = Eigen::Matrix<S, N, 1>;
  const fixed ct = c.transpose();
  index t = 0;
  for (; t + 4 <= m; t += 4)
    Eigen::Map<panel, 0, Eigen::OuterStride<>>(out + t * out_stride, N, 4,
                                               Eigen::OuterStride<>(out_stride))
        .noalias() = ct.lazyProduct(Eigen::Map<const panel, 0, Eigen::OuterStride<>>(
            x + t * stride, N, 4, Eigen::OuterStride<>(stride)));
  for (; t < m; ++t)
    Eigen::Map<vec>(out + t * out_stride).noalias() =
        ct.lazyProduct(Eigen::Map<const vec>(x + t * stride));
}

/// thin_product_rows_fixed for the ranks it is compiled for; false for the others.
template <class S>
bool thin_product_rows(const S* x, index m, index n, index stride, const dense_matrix<S>& c,
                       S* out, index out_stride) {
  return with_fixed_rank(n, [&](auto rank) {
    thin_product_rows_fixed<decltype(rank)::value>(x, m, stride, c, out, out_stride);
  });
}

/// thin_product_into for an X the kernels read as it is.
template <class S, class XD, class CD, class Out>
void thin_product_direct_into(const Eigen::MatrixBase<XD>& x_in, const Eigen::MatrixBase<CD>& c_in,
                              Out&& out) {
  const XD& x = x_in.derived();
  using O = std::remove_reference_t<Out>;
  const dense_matrix<S> c = c_in;
  const index m = x.rows(), n = x.cols();
  if constexpr (std::is_same_v<typename XD::Scalar, S> && std::is_same_v<typename O::Scalar, S> &&
                contiguous_inner_v<XD> && contiguous_inner_v<O>) {
    constexpr bool x_rows = int(XD::Flags) & Eigen::RowMajorBit;
    constexpr bool out_rows = int(O::Flags) & Eigen::RowMajorBit;
    if (m > 0 && n > 0 && c.cols() > 0) {
      if constexpr (!x_rows && !out_rows) {
        thin_product_columns(x.data(), m, n, x.outerStride(), c, out.data(), out.outerStride());
        return;
      } else if constexpr (x_rows && out_rows) {
        if (c.cols() == n &&
            thin_product_rows(x.data(), m, n, x.outerStride(), c, out.data(), out.outerStride()))
          return;
      }
    }
  }
  out.noalias() = x * c;
}

/// out = X·C (see the file comment for the kernels); out must already have X.rows()×C.cols().
/// A factor stored narrower than S is widened first (widened.hpp).
template <class S, class XD, class CD, class Out>
void thin_product_into(const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<CD>& c, Out&& out) {
  with_widened<S>(x.derived(), 0, [&](const auto& wx) { thin_product_direct_into<S>(wx, c, out); });
}

}  // namespace detail
}  // namespace lola
