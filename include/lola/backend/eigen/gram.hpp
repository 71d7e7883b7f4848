#pragma once
/// @file
/// The Gram matrix G = XᵀX (n×n) of a tall factor X (m×n, n = the LoRA rank): the primitive every
/// factor-space algorithm starts from (column spaces, the factor-space SVD, canonical forms, the
/// factor Grams feature). O(m·n²) multiply-adds, reading X once.
///
/// Eigen's general product packs both operands before its kernel, which for n ≤ 32 costs more than
/// the product itself; the kernels below read X in place. Which one runs depends on X's memory
/// layout, known at compile time:
///   columns contiguous (B stored column-major, or Aᵀ of a row-major A: a safetensors tensor)
///       4×4 tiles of column dot products, lower block triangle only, over blocks of 256 rows
///       (a block of X stays in L1 while every tile reads it); the columns beyond the last
///       multiple of 4 go through Eigen's product.
///   rows contiguous (Aᵀ of a column-major A, or a row-major B) with n ∈ {4, 8, 16, 32}
///       outer products of panels of four rows with fixed-size Eigen kernels that keep G in
///       vector registers, prefetching 4 KiB ahead (the hardware prefetcher alone leaves the
///       kernel waiting on memory).
///   otherwise (other ranks, expressions without direct access) Eigen's product.
/// On the reference VM, for a 4096×16 float factor streamed from memory, the two layouts take
/// about 14 and 12 µs against 31 µs for Eigen's product (benchmarks/bench_svd.cpp measures the
/// whole factor-space SVD against the time to read the factors).
/// Each entry is a sum of m products accumulated in blocks and lanes, so the rounding error is
/// that of a dot product of length m: |ΔG| ≤ γ_m·|X|ᵀ|X|.

#include <algorithm>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/evaluate.hpp"
#include "lola/core/config.hpp"

namespace lola {
namespace detail {

template <class X>
constexpr bool contiguous_inner_v =
    (int(X::Flags) & Eigen::DirectAccessBit) && (X::InnerStrideAtCompileTime == 1);

/// One accumulator: 64 bytes of lanes (an AVX-512 register, two AVX ones).
template <class S>
using gram_lane = Eigen::Array<S, 64 / int(sizeof(S)), 1>;

/// G(0:n4, 0:n4), lower block triangle, for X with contiguous columns `stride` apart; n4 % 4 == 0.
template <class S>
void gram_columns_tiled(const S* x, index m, index n4, index stride, dense_matrix<S>& g) {
  using lane = gram_lane<S>;
  using lane_map = Eigen::Map<const lane>;
  constexpr index width = lane::SizeAtCompileTime, block = 256;
  const index tiles = n4 / 4, m_lanes = m / width * width;
  std::vector<lane> sums(std::size_t(tiles * (tiles + 1) / 2 * 16), lane::Zero());
  for (index t0 = 0; t0 < m_lanes; t0 += block) {
    const index t1 = std::min(m_lanes, t0 + block);
    lane* pair_sums = sums.data();
    for (index i0 = 0; i0 < n4; i0 += 4)
      for (index j0 = 0; j0 <= i0; j0 += 4, pair_sums += 16) {
        lane acc[4][4];
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b) acc[a][b] = pair_sums[4 * a + b];
        for (index t = t0; t < t1; t += width) {
          lane xi[4], xj[4];
          for (int a = 0; a < 4; ++a) xi[a] = lane_map(x + (i0 + a) * stride + t);
          for (int b = 0; b < 4; ++b) xj[b] = lane_map(x + (j0 + b) * stride + t);
          for (int a = 0; a < 4; ++a)
            for (int b = 0; b < 4; ++b) acc[a][b] += xi[a] * xj[b];
        }
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b) pair_sums[4 * a + b] = acc[a][b];
      }
  }
  const lane* pair_sums = sums.data();
  for (index i0 = 0; i0 < n4; i0 += 4)
    for (index j0 = 0; j0 <= i0; j0 += 4, pair_sums += 16)
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
          S sum = pair_sums[4 * a + b].sum();
          for (index t = m_lanes; t < m; ++t) sum += x[(i0 + a) * stride + t] * x[(j0 + b) * stride + t];
          g(i0 + a, j0 + b) = sum;
        }
}

/// XᵀX for X with contiguous rows of fixed length N, `stride` apart.
template <int N, class S>
void gram_rows_fixed(const S* x, index m, index stride, dense_matrix<S>& g) {
  using fixed = Eigen::Matrix<S, N, N>;
  using panel_map = Eigen::Map<const Eigen::Matrix<S, N, 4>, 0, Eigen::OuterStride<>>;
  using row_map = Eigen::Map<const Eigen::Matrix<S, N, 1>>;
  constexpr index line = 64 / index(sizeof(S));  // elements per cache line
  const index ahead = std::max<index>(4, 4096 / index(sizeof(S)) / stride);  // rows in 4 KiB
  fixed acc = fixed::Zero();
  index t = 0;
  for (; t + 4 <= m; t += 4) {
    if (t + ahead + 4 <= m) {
      if (stride == N) {
        for (index e = 0; e < 4 * N; e += line) LOLA_PREFETCH(x + (t + ahead) * N + e);
      } else {
        for (index row = t + ahead; row < t + ahead + 4; ++row)
          for (index e = 0; e < N; e += line) LOLA_PREFETCH(x + row * stride + e);
      }
    }
    const panel_map panel(x + t * stride, N, 4, Eigen::OuterStride<>(stride));
    acc.noalias() += panel.lazyProduct(panel.transpose());
  }
  for (; t < m; ++t) {
    const row_map row(x + t * stride);
    acc.noalias() += row * row.transpose();
  }
  g = acc;
}

/// g = XᵀX, both triangles (see the file comment for the kernels).
template <class S, class XD>
void gram_into(const Eigen::MatrixBase<XD>& x_in, dense_matrix<S>& g) {
  const XD& x = x_in.derived();
  const index m = x.rows(), n = x.cols();
  if constexpr (std::is_same_v<typename XD::Scalar, S> && contiguous_inner_v<XD>) {
    if (m > 0 && n > 0) {
      if constexpr (!(int(XD::Flags) & Eigen::RowMajorBit)) {
        const index n4 = n / 4 * 4, rest = n - n4;
        g.resize(n, n);
        if (n4 > 0) {
          gram_columns_tiled(x.data(), m, n4, x.outerStride(), g);
          auto head = g.topLeftCorner(n4, n4);
          head.template triangularView<Eigen::StrictlyUpper>() = head.transpose();
        }
        if (rest > 0) {
          g.rightCols(rest).noalias() = x.transpose() * x.rightCols(rest);
          g.bottomLeftCorner(rest, n4) = g.topRightCorner(n4, rest).transpose();
          auto corner = g.bottomRightCorner(rest, rest);
          corner.template triangularView<Eigen::StrictlyUpper>() = corner.transpose();
        }
        return;
      } else {
        switch (n) {
          case 4: return gram_rows_fixed<4>(x.data(), m, x.outerStride(), g);
          case 8: return gram_rows_fixed<8>(x.data(), m, x.outerStride(), g);
          case 16: return gram_rows_fixed<16>(x.data(), m, x.outerStride(), g);
          case 32: return gram_rows_fixed<32>(x.data(), m, x.outerStride(), g);
          default: break;
        }
      }
    }
  }
  g.resize(n, n);
  g.noalias() = x.transpose() * x;
  g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
}

}  // namespace detail
}  // namespace lola
