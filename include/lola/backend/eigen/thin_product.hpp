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
///       4 output columns, each an outer-product accumulation over X's n columns; compiled for
///       SSE2 and, on x86-64, for AVX2 with FMA, chosen at run time (simd.hpp).
///       X stored narrower than S is widened whole first (widened.hpp).
///   X with contiguous rows, or out row-major, X in any stored type (a file's BF16, F16 or float
///       factors, or S): blocks of rows of X widened into an L1 scratch, multiplied there by the
///       first kernel, and copied out in out's layout; except rows → rows at a register_rows_rank
///       with c = n (gram.hpp), where thin_product_rows_fixed maps each row through Cᵀ in registers.
///   otherwise (expressions without direct access) Eigen's product.
/// Each entry is one dot product of length n, so the rounding error is γ_n·|X|·|C| entry-wise.

#include <algorithm>
#include <type_traits>

#include <Eigen/Core>

#include "lola/backend/eigen/gram.hpp"
#include "lola/backend/eigen/simd.hpp"
#include "lola/backend/eigen/widened.hpp"
#include "lola/core/config.hpp"

namespace lola {
namespace detail {

/// out = X·C for X with contiguous columns (`stride` apart) and out column-major (`out_stride`),
/// in lanes of Bytes (simd.hpp).
template <int Bytes, class S>
LOLA_ALWAYS_INLINE void thin_product_columns_lanes(const S* x, index m, index n, index stride, const S* c,
                                                   index c_stride, index cols, S* out, index out_stride) {
  using L = lane<S, Bytes>;
  constexpr index width = Bytes / index(sizeof(S)), tile_rows = 3 * width;
  const index m_tiles = m / tile_rows * tile_rows, m_lanes = m / width * width, cols4 = cols / 4 * 4;
  const auto coefficient = [&](index l, index j) { return c[j * c_stride + l]; };
  // Full tiles: 3 lanes of rows × 4 columns, 12 accumulators.
  for (index i = 0; i < m_tiles; i += tile_rows)
    for (index j = 0; j < cols4; j += 4) {
      L acc[3][4];
      unrolled<3>([&](auto p) { unrolled<4>([&](auto q) { zero_lane(acc[p][q]); }); });
      for (index l = 0; l < n; ++l) {
        L xs[3];
        unrolled<3>([&](auto p) { load_lane(xs[p], x + l * stride + i + p * width); });
        unrolled<4>([&](auto q) {
          const S w = coefficient(l, j + q);
          unrolled<3>([&](auto p) { acc[p][q] += xs[p] * w; });
        });
      }
      unrolled<4>([&](auto q) {
        unrolled<3>([&](auto p) { store_lane(out + (j + q) * out_stride + i + p * width, acc[p][q]); });
      });
    }
  // The remaining columns over the full tiles, and the remaining rows by single lanes.
  const auto single_lanes = [&](index i_begin, index i_end, index j_begin) {
    for (index i = i_begin; i < i_end; i += width)
      for (index j = j_begin; j < cols; ++j) {
        L acc, xs;
        zero_lane(acc);
        for (index l = 0; l < n; ++l) {
          load_lane(xs, x + l * stride + i);
          acc += xs * coefficient(l, j);
        }
        store_lane(out + j * out_stride + i, acc);
      }
  };
  single_lanes(0, m_tiles, cols4);
  single_lanes(m_tiles, m_lanes, 0);
  for (index i = m_lanes; i < m; ++i)
    for (index j = 0; j < cols; ++j) {
      S sum = 0;
      for (index l = 0; l < n; ++l) sum += x[l * stride + i] * coefficient(l, j);
      out[j * out_stride + i] = sum;
    }
}

#if LOLA_AVX2_DISPATCH
template <class S>
LOLA_TARGET_AVX2_FMA void thin_product_columns_avx2(const S* x, index m, index n, index stride, const S* c,
                                                    index c_stride, index cols, S* out, index out_stride) {
  thin_product_columns_lanes<32>(x, m, n, stride, c, c_stride, cols, out, out_stride);
}
#endif

/// thin_product_columns_lanes in the widest lanes the processor runs (simd.hpp).
template <class S>
void thin_product_columns(const S* x, index m, index n, index stride, const dense_matrix<S>& c, S* out,
                          index out_stride) {
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma())
    return thin_product_columns_avx2(x, m, n, stride, c.data(), c.outerStride(), c.cols(), out, out_stride);
#endif
  thin_product_columns_lanes<native_lane_bytes<S>>(x, m, n, stride, c.data(), c.outerStride(), c.cols(), out,
                                                   out_stride);
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

/// thin_product_rows_fixed at the ranks where gram.hpp's register kernels run (register_rows_rank,
/// c = n); false for the others.
template <class S>
bool thin_product_rows(const S* x, index m, index n, index stride, const dense_matrix<S>& c, S* out,
                       index out_stride) {
  return c.cols() == n && with_register_rank(n, [&](auto rank) {
           thin_product_rows_fixed<decltype(rank)::value>(x, m, stride, c, out, out_stride);
         });
}

/// out = X·C for X in any layout and stored type (factor_ref), out entry (t, j) at
/// out + t·out_row_step + j·out_col_step, in blocks of rows: a block of X widened into a
/// column-major scratch, its product by thin_product_columns_lanes into a second scratch, copied
/// out in out's layout. Both scratches stay in L1, so each stored value is read once and each
/// output entry written once, whatever the layouts (for a factor with contiguous rows, or a
/// row-major output, the transposition happens in cache).
template <int Bytes, class S, class T>
LOLA_ALWAYS_INLINE void thin_product_blocked_lanes(const factor_ref<T>& x, const S* c, index c_stride, index cols,
                                                   S* out, index out_row_step, index out_col_step) {
  constexpr index tile_rows = 3 * Bytes / index(sizeof(S));
  const index m = x.rows, n = x.cols;
  // Rows per block: both scratches in 32 KiB, a multiple of the kernel's tile of rows, no more
  // than X has.
  const index block = std::min((m + tile_rows - 1) / tile_rows * tile_rows,
                               std::max<index>(tile_rows, 32768 / index(sizeof(S)) / (n + cols) / tile_rows * tile_rows));
  std::vector<S> scratch(std::size_t((n + cols) * block));
  S* const xs = scratch.data();
  S* const os = xs + n * block;
  for (index t0 = 0; t0 < m; t0 += block) {
    const index count = std::min(block, m - t0);
    load_factor_rows<false>(x, t0, count, block, xs);
    thin_product_columns_lanes<Bytes>(xs, count, n, block, c, c_stride, cols, os, block);
    if (out_row_step == 1) {
      for (index j = 0; j < cols; ++j) std::copy_n(os + j * block, count, out + j * out_col_step + t0);
    } else {
      for (index t = 0; t < count; ++t)
        for (index j = 0; j < cols; ++j) out[(t0 + t) * out_row_step + j * out_col_step] = os[j * block + t];
    }
  }
}

#if LOLA_AVX2_DISPATCH
template <class S, class T>
LOLA_TARGET_AVX2_FMA void thin_product_blocked_avx2(const factor_ref<T>& x, const S* c, index c_stride, index cols,
                                                    S* out, index out_row_step, index out_col_step) {
  thin_product_blocked_lanes<32>(x, c, c_stride, cols, out, out_row_step, out_col_step);
}
#endif

/// thin_product_blocked_lanes in the widest lanes the processor runs (simd.hpp).
template <class S, class T>
void thin_product_blocked(const factor_ref<T>& x, const dense_matrix<S>& c, S* out, index out_row_step,
                          index out_col_step) {
  if (x.rows == 0 || c.cols() == 0) return;
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma())
    return thin_product_blocked_avx2(x, c.data(), c.outerStride(), c.cols(), out, out_row_step, out_col_step);
#endif
  thin_product_blocked_lanes<native_lane_bytes<S>>(x, c.data(), c.outerStride(), c.cols(), out, out_row_step,
                                                   out_col_step);
}

/// thin_product_into.
template <class S, class XD, class CD, class Out>
void thin_product_direct_into(const Eigen::MatrixBase<XD>& x_in, const Eigen::MatrixBase<CD>& c_in,
                              Out&& out) {
  const XD& x = x_in.derived();
  using O = std::remove_reference_t<Out>;
  const dense_matrix<S> c = c_in;
  const index m = x.rows(), n = x.cols();
  if constexpr (has_factor_ref_v<XD, S> && std::is_same_v<typename O::Scalar, S> && contiguous_inner_v<O>) {
    if (m == 0 || c.cols() == 0) return;
    if (n == 0) {
      out.setZero();
      return;
    }
    // The kernel depends on the layouts only, never on the stored type, so that a view of a file
    // and its decoded copy give the same bits.
    constexpr bool x_rows = rows_contiguous_v<XD, S>;
    constexpr bool out_rows = int(O::Flags) & Eigen::RowMajorBit;
    if constexpr (!x_rows && !out_rows) {
      with_widened<S>(x, 0, [&](const auto& wx) {
        thin_product_columns(wx.data(), m, n, wx.outerStride(), c, out.data(), out.outerStride());
      });
    } else {
      if constexpr (x_rows && out_rows) {
        if (c.cols() == n && register_rows_rank(n)) {
          with_widened<S>(x, 0, [&](const auto& wx) {
            thin_product_rows(wx.data(), m, n, wx.outerStride(), c, out.data(), out.outerStride());
          });
          return;
        }
      }
      thin_product_blocked(factor_ref_of<S>(x), c, out.data(), out_rows ? out.outerStride() : 1,
                           out_rows ? 1 : out.outerStride());
    }
    return;
  }
  out.noalias() = x * c;
}

/// out = X·C (see the file comment for the kernels); out must already have X.rows()×C.cols().
template <class S, class XD, class CD, class Out>
void thin_product_into(const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<CD>& c, Out&& out) {
  thin_product_direct_into<S>(x.derived(), c, std::forward<Out>(out));
}

}  // namespace detail
}  // namespace lola
