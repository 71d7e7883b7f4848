#pragma once
/// @file
/// The Gram matrix G = XᵀX (n×n) of a tall factor X (m×n, n = the LoRA rank), and the cross-Gram
/// XᵀY of two factors of one shape: the primitive every factor-space algorithm starts from
/// (column spaces, the factor-space SVD, canonical forms, O-Align, the factor Grams feature).
/// O(m·n²) multiply-adds, reading each operand once.
///
/// Eigen's general product packs both operands before its kernel, which for n ≤ 32 costs more than
/// the product itself; the kernels below read the operands in place. Which one runs depends on
/// their memory layout, known at compile time:
///   columns contiguous (B stored column-major, or Aᵀ of a row-major A: a safetensors tensor)
///       4×2 tiles of column dot products (the lower block triangle only for a Gram) over blocks
///       of 256 rows, a block staying in L1 while every tile reads it; the columns beyond the
///       last multiple of 4 go through Eigen's product.
///   rows contiguous (Aᵀ of a column-major A, or a row-major B), both operands n wide with
///   n ∈ {4, 8, 16, 32}
///       outer products of panels of four rows with fixed-size Eigen kernels that keep G in
///       vector registers, prefetching 4 KiB ahead (the hardware prefetcher alone leaves the
///       kernel waiting on memory).
///   otherwise (other ranks, mixed layouts, expressions without direct access) Eigen's product.
/// On the reference VM, for a 4096×16 float factor streamed from memory, the two layouts take
/// about 14 and 12 µs against 31 µs for Eigen's product (benchmarks/bench_svd.cpp measures the
/// whole factor-space SVD against the time to read the factors).
/// Each entry is a sum of m products accumulated in blocks and lanes, so the rounding error is
/// that of a dot product of length m: |ΔG| ≤ γ_m·|X|ᵀ|Y|.

#include <algorithm>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/matrix.hpp"
#include "lola/backend/eigen/fixed_rank.hpp"
#include "lola/backend/eigen/widened.hpp"
#include "lola/core/config.hpp"

namespace lola {
namespace detail {

template <class X>
constexpr bool contiguous_inner_v =
    (int(X::Flags) & Eigen::DirectAccessBit) && (X::InnerStrideAtCompileTime == 1);

/// One accumulator: one SIMD register of S, Eigen's packet for the instruction set compiled for
/// (2 doubles with SSE2, 4 with AVX, 8 with AVX-512).
template <class S>
using gram_lane = Eigen::Array<S, Eigen::internal::packet_traits<S>::size, 1>;

/// G(0:p4, 0:q4) = XᵀY over the first p4 columns of X and q4 of Y (multiples of 4), for X and Y
/// with contiguous columns; only the lower block triangle when `Lower` (the Gram: Y is X), in
/// 4×2 tiles: 8 accumulators and 6 operand registers fit the 16 vector registers of SSE2 and AVX2
/// (a 4×4 tile of two-register lanes, 40 registers, spilled and ran at half the speed).
template <bool Lower, class S>
void cross_columns_tiled(const S* x, index x_stride, const S* y_in, index y_stride_in, index m,
                         index p4, index q4, dense_matrix<S>& g) {
  // For a Gram the compiler is told that Y is X, so it loads through one pointer.
  const S* const y = Lower ? x : y_in;
  const index y_stride = Lower ? x_stride : y_stride_in;
  using lane = gram_lane<S>;
  using lane_map = Eigen::Map<const lane>;
  constexpr index width = lane::SizeAtCompileTime, block = 256;
  const index m_lanes = m / width * width;
  constexpr int ta = 4, tb = 2;  // tile rows (of G) and columns
  const auto last_j0 = [&](index i0) { return Lower ? i0 + ta - tb : q4 - tb; };
  index tiles = 0;
  for (index i0 = 0; i0 < p4; i0 += ta) tiles += last_j0(i0) / tb + 1;
  std::vector<lane> sums(std::size_t(tiles * ta * tb), lane::Zero());
  for (index t0 = 0; t0 < m_lanes; t0 += block) {
    const index t1 = std::min(m_lanes, t0 + block);
    lane* tile_sums = sums.data();
    for (index i0 = 0; i0 < p4; i0 += ta)
      for (index j0 = 0; j0 <= last_j0(i0); j0 += tb, tile_sums += ta * tb) {
        lane acc[ta][tb];
        for (int a = 0; a < ta; ++a)
          for (int b = 0; b < tb; ++b) acc[a][b] = tile_sums[tb * a + b];
        for (index t = t0; t < t1; t += width) {
          lane xi[ta], yj[tb];
          for (int a = 0; a < ta; ++a) xi[a] = lane_map(x + (i0 + a) * x_stride + t);
          for (int b = 0; b < tb; ++b) yj[b] = lane_map(y + (j0 + b) * y_stride + t);
          for (int a = 0; a < ta; ++a)
            for (int b = 0; b < tb; ++b) acc[a][b] += xi[a] * yj[b];
        }
        for (int a = 0; a < ta; ++a)
          for (int b = 0; b < tb; ++b) tile_sums[tb * a + b] = acc[a][b];
      }
  }
  const lane* tile_sums = sums.data();
  for (index i0 = 0; i0 < p4; i0 += ta)
    for (index j0 = 0; j0 <= last_j0(i0); j0 += tb, tile_sums += ta * tb)
      for (int a = 0; a < ta; ++a)
        for (int b = 0; b < tb; ++b) {
          S sum = tile_sums[tb * a + b].sum();
          for (index t = m_lanes; t < m; ++t)
            sum += x[(i0 + a) * x_stride + t] * y[(j0 + b) * y_stride + t];
          g(i0 + a, j0 + b) = sum;
        }
}

/// g = XᵀY for X and Y with contiguous rows of fixed length N, in panels of four rows,
/// prefetching 4 KiB ahead in each operand. `Same`: Y is X, read once. The sum is a local that
/// is copied out at the end, so it stays in registers (a reference or a returned object, which
/// might alias the operands, is kept in memory: 15% slower at N = 16).
template <int N, bool Same, class S>
void rows_fixed_into(const S* x, index x_stride, const S* y, index y_stride, index m,
                     dense_matrix<S>& g) {
  Eigen::Matrix<S, N, N> acc = Eigen::Matrix<S, N, N>::Zero();
  using panel_map = Eigen::Map<const Eigen::Matrix<S, N, 4>, 0, Eigen::OuterStride<>>;
  using row_map = Eigen::Map<const Eigen::Matrix<S, N, 1>>;
  constexpr index line = 64 / index(sizeof(S));  // elements per cache line
  const index x_ahead = std::max<index>(4, 4096 / index(sizeof(S)) / x_stride);  // rows in 4 KiB
  const index y_ahead = std::max<index>(4, 4096 / index(sizeof(S)) / y_stride);
  index t = 0;
  for (; t + 4 <= m; t += 4) {
    if (t + x_ahead + 4 <= m) {
      if (x_stride == N) {
        for (index e = 0; e < 4 * N; e += line) LOLA_PREFETCH(x + (t + x_ahead) * N + e);
      } else {
        for (index row = t + x_ahead; row < t + x_ahead + 4; ++row)
          for (index e = 0; e < N; e += line) LOLA_PREFETCH(x + row * x_stride + e);
      }
    }
    const panel_map x_panel(x + t * x_stride, N, 4, Eigen::OuterStride<>(x_stride));
    if constexpr (Same) {
      acc.noalias() += x_panel.lazyProduct(x_panel.transpose());
    } else {
      if (t + y_ahead + 4 <= m) {
        if (y_stride == N) {
          for (index e = 0; e < 4 * N; e += line) LOLA_PREFETCH(y + (t + y_ahead) * N + e);
        } else {
          for (index row = t + y_ahead; row < t + y_ahead + 4; ++row)
            for (index e = 0; e < N; e += line) LOLA_PREFETCH(y + row * y_stride + e);
        }
      }
      const panel_map y_panel(y + t * y_stride, N, 4, Eigen::OuterStride<>(y_stride));
      acc.noalias() += x_panel.lazyProduct(y_panel.transpose());
    }
  }
  for (; t < m; ++t)
    acc.noalias() += row_map(x + t * x_stride).lazyProduct(row_map(y + t * y_stride).transpose());
  g = acc;
}

/// XᵀY for X and Y with contiguous rows of fixed length N (`x_stride`, `y_stride` apart).
template <int N, class S>
void cross_rows_fixed(const S* x, index x_stride, const S* y, index y_stride, index m,
                      dense_matrix<S>& g) {
  if (x == y && x_stride == y_stride)
    rows_fixed_into<N, true>(x, x_stride, x, x_stride, m, g);
  else
    rows_fixed_into<N, false>(x, x_stride, y, y_stride, m, g);
}

/// cross_rows_fixed for the ranks it is compiled for; false for the others.
template <class S>
bool cross_rows(const S* x, index x_stride, const S* y, index y_stride, index m, index n,
                dense_matrix<S>& g) {
  return with_fixed_rank(n, [&](auto rank) {
    cross_rows_fixed<decltype(rank)::value>(x, x_stride, y, y_stride, m, g);
  });
}

/// Whether x and y are the same matrix (then XᵀY is a Gram: symmetric, half the work).
template <class XD, class YD>
bool same_matrix(const XD& x, const YD& y) {
  if (static_cast<const void*>(&x) == static_cast<const void*>(&y)) return true;
  if constexpr (std::is_same_v<XD, YD> && contiguous_inner_v<XD>)
    return x.data() == y.data() && x.rows() == y.rows() && x.cols() == y.cols() &&
           x.outerStride() == y.outerStride();
  return false;
}

/// cross_gram_into for operands the kernels read as they are.
template <class S, class XD, class YD>
void cross_gram_direct_into(const Eigen::MatrixBase<XD>& x_in, const Eigen::MatrixBase<YD>& y_in,
                            dense_matrix<S>& g) {
  const XD& x = x_in.derived();
  const YD& y = y_in.derived();
  const index m = x.rows(), p = x.cols(), q = y.cols();
  const bool same = same_matrix(x, y);
  g.resize(p, q);
  bool done = false;
  constexpr bool x_rows = int(XD::Flags) & Eigen::RowMajorBit;
  constexpr bool y_rows = int(YD::Flags) & Eigen::RowMajorBit;
  if constexpr (std::is_same_v<typename XD::Scalar, S> && std::is_same_v<typename YD::Scalar, S> &&
                contiguous_inner_v<XD> && contiguous_inner_v<YD> && x_rows == y_rows) {
    if (m > 0 && p > 0 && q > 0) {
      if constexpr (!x_rows) {
        const index p4 = p / 4 * 4, q4 = q / 4 * 4;
        if (p4 > 0 && q4 > 0) {
          if (same)
            cross_columns_tiled<true>(x.data(), x.outerStride(), x.data(), x.outerStride(), m, p4,
                                      p4, g);
          else
            cross_columns_tiled<false>(x.data(), x.outerStride(), y.data(), y.outerStride(), m, p4,
                                       q4, g);
        }
        if (q > q4) g.rightCols(q - q4).noalias() = x.transpose() * y.rightCols(q - q4);
        if (p > p4 && q4 > 0)
          g.bottomLeftCorner(p - p4, q4).noalias() =
              x.rightCols(p - p4).transpose() * y.leftCols(q4);
        done = true;
      } else {
        done = p == q && cross_rows(x.data(), x.outerStride(), y.data(), y.outerStride(), m, p, g);
      }
    }
  }
  if (!done) g.noalias() = x.transpose() * y;
  if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
}

/// g = XᵀY (p×q) for X (m×p) and Y (m×q) (see the file comment for the kernels); when Y is X,
/// the Gram, exactly symmetric. Factors stored narrower than S are widened first (widened.hpp).
template <class S, class XD, class YD>
void cross_gram_into(const Eigen::MatrixBase<XD>& x_in, const Eigen::MatrixBase<YD>& y_in,
                     dense_matrix<S>& g) {
  const XD& x = x_in.derived();
  const YD& y = y_in.derived();
  if constexpr (widening<XD, S>::value || widening<YD, S>::value) {
    if (same_matrix(x, y)) {
      with_widened<S>(x, 0, [&](const auto& wx) { cross_gram_direct_into<S>(wx, wx, g); });
      return;
    }
    with_widened<S>(x, 0, [&](const auto& wx) {
      with_widened<S>(y, 1, [&](const auto& wy) { cross_gram_direct_into<S>(wx, wy, g); });
    });
  } else {
    cross_gram_direct_into<S>(x, y, g);
  }
}

/// g = XᵀX, both triangles, exactly symmetric.
template <class S, class XD>
void gram_into(const Eigen::MatrixBase<XD>& x, dense_matrix<S>& g) {
  cross_gram_into<S>(x.derived(), x.derived(), g);
}

}  // namespace detail
}  // namespace lola
