#pragma once
/// @file
/// The Gram matrix G = XᵀX (n×n) of a tall factor X (m×n, n = the LoRA rank), and the cross-Gram
/// XᵀY of two factors of one shape: the primitive every factor-space algorithm starts from
/// (column spaces, the factor-space SVD, canonical forms, O-Align, the factor Grams feature).
/// O(m·n²) multiply-adds, reading each operand once.
///
/// Eigen's general product packs both operands before its kernel, which for n ≤ 32 costs more than
/// the product itself; the kernels below read the operands in place or in blocks that stay in L1.
/// Which one runs depends on the operands' layouts only (known at compile time), never on their
/// stored type, so a view of a file and its decoded copy give the same bits:
///   both with contiguous columns (B stored column-major, Aᵀ of a row-major A)
///       4×2 tiles of column dot products (the lower block triangle only for a Gram) over blocks
///       of 256 rows, a block staying in L1 while every tile reads it; the columns beyond the
///       last multiple of 4 go through Eigen's product. Factors stored narrower than S (a
///       file's BF16, F16 or float Aᵀ) are widened a block of 256 rows at a time into an L1/L2
///       scratch the tiles read (widened whole first, widened.hpp, when a column count is not a
///       multiple of 4 or the two are stored in different types).
///   either with contiguous rows (a row-major B, as files store it), any rank, any stored type
///       the blocked kernels: blocks of rows widened (or copied) into an L1 scratch, then
///       register tiles of row outer products (or of column dot products when X's columns are
///       contiguous and Y's rows are); except when both have contiguous rows at a
///       gram_register_rank (4 and 8, 16 and 32 in a translation unit compiled for AVX2; 8 in
///       double goes to the blocked kernel where AVX2 is chosen at run time), where
///       rows_fixed_into keeps the n×n sum in registers (stored factors widened 256 rows at a
///       time into an L1 scratch).
///   otherwise (expressions without direct access) Eigen's product.
/// Every tiled kernel is compiled for SSE2 and, on x86-64, for AVX2 with FMA, chosen at run time (simd.hpp).
/// Its register tiles are written out at compile time (unrolled, simd.hpp), so that -O2 builds keep the
/// accumulators in registers as -O3 builds do: over the 128 modules of a Llama-2-7B-like BF16 adapter in
/// double, the Grams of B took 22–29 ms at -O2 with plain loops against 8–10 ms written out (at -O3, 8–12 ms
/// either way, the written-out tiles up to 10% slower in interleaved runs: the same inner loop, differently
/// scheduled around it). On the reference VM, the Gram of one 4096×16 BF16 B in double takes about 50 µs,
/// against 140 µs for widening it whole and running the SSE2 kernel for contiguous rows
/// (benchmarks/bench_svd.cpp measures the whole factor-space SVD against the time to read the factors).
/// Each entry is a sum of m products accumulated in blocks and lanes, so the rounding error is
/// that of a dot product of length m: |ΔG| ≤ γ_m·|X|ᵀ|Y|; the blocked kernels start every block
/// from zero and add block sums, so their error is nearer that of the block length.

#include <algorithm>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/matrix.hpp"
#include "lola/backend/eigen/simd.hpp"
#include "lola/backend/eigen/widened.hpp"
#include "lola/core/config.hpp"
#include "lola/core/widen.hpp"

namespace lola {
namespace detail {

template <class X>
constexpr bool contiguous_inner_v =
    (int(X::Flags) & Eigen::DirectAccessBit) && (X::InnerStrideAtCompileTime == 1);

/// acc[a][b] += Σ_t x(t, a)·y(t, b) over t ∈ [t0, t1) (a multiple of the lane width apart), for
/// columns a of x and b of y contiguous and x_stride, y_stride apart: one tile of column dot
/// products, lane by lane.
template <class L, int Ta, int Tb, class S>
LOLA_ALWAYS_INLINE void accumulate_column_tile(L (&acc)[Ta][Tb], const S* x, index x_stride, const S* y,
                                               index y_stride, index t0, index t1) {
  constexpr index width = index(sizeof(L) / sizeof(S));
  for (index t = t0; t < t1; t += width) {
    L xi[Ta], yj[Tb];
    unrolled<Ta>([&](auto a) { load_lane(xi[a], x + a * x_stride + t); });
    unrolled<Tb>([&](auto b) { load_lane(yj[b], y + b * y_stride + t); });
    unrolled<Ta>([&](auto a) { unrolled<Tb>([&](auto b) { acc[a][b] += xi[a] * yj[b]; }); });
  }
}

/// f(i, j, the sum of the lanes of entry (i, j)) for every entry of the Ta×Tb tiles of column dot
/// products laid out in `sums` (rows of tiles i0 = 0, Ta, … below p4, each from j0 = 0 to
/// last_j0(i0) in steps of Tb).
template <class L, int Ta, int Tb, class S, class LastJ0, class F>
LOLA_ALWAYS_INLINE void for_each_tile_sum(const S* sums, index p4, const LastJ0& last_j0, F&& f) {
  constexpr index width = index(sizeof(L) / sizeof(S));
  for (index i0 = 0; i0 < p4; i0 += Ta)
    for (index j0 = 0; j0 <= last_j0(i0); j0 += Tb, sums += Ta * Tb * width)
      for (int a = 0; a < Ta; ++a)
        for (int b = 0; b < Tb; ++b) {
          L partial;
          load_lane(partial, sums + (Tb * a + b) * width);
          f(i0 + a, j0 + b, lane_sum<S>(partial));
        }
}

/// G(0:p4, 0:q4) = XᵀY over the first p4 columns of X and q4 of Y (multiples of 4), for X and Y
/// with contiguous columns, in lanes of Bytes (simd.hpp); only the lower block triangle when
/// `Lower` (the Gram: Y is X), in 4×2 tiles: 8 accumulators and 6 operand registers fit the 16
/// vector registers of SSE2 and AVX2 (a 4×4 tile of two-register lanes, 40 registers, spilled
/// and ran at half the speed). X and Y are stored as T (S, or a narrower file type): a block of
/// 256 rows of the columns is widened into the per-thread scratch (p4·256 values of S, in L1/L2
/// for ranks up to 32) and every tile reads it there; stored as S, the tiles read the columns in
/// place. The sums are formed in the same order either way, so a stored factor and its decoded
/// copy give the same bits.
template <int Bytes, bool Lower, class S, class T>
LOLA_ALWAYS_INLINE void cross_columns_tiled_lanes(const T* x, index x_stride, const T* y_in, index y_stride_in,
                                                  index m, index p4, index q4, dense_matrix<S>& g) {
  // For a Gram the compiler is told that Y is X, so it loads through one pointer.
  const T* const y = Lower ? x : y_in;
  const index y_stride = Lower ? x_stride : y_stride_in;
  using L = lane<S, Bytes>;
  constexpr index width = Bytes / index(sizeof(S)), block = 256;
  constexpr bool widen = !std::is_same_v<S, T>;
  const index m_lanes = m / width * width;
  constexpr int ta = 4, tb = 2;  // tile rows (of G) and columns
  const auto last_j0 = [&](index i0) { return Lower ? i0 + ta - tb : q4 - tb; };
  index tiles = 0;
  for (index i0 = 0; i0 < p4; i0 += ta) tiles += last_j0(i0) / tb + 1;
  // The running sums of every tile between row blocks, lane by lane.
  std::vector<S> sums(std::size_t(tiles * ta * tb * width), S(0));
  // Rows [t0, t1) of the columns: in place, or widened into the scratch, block rows apart.
  S* const x_block = widen ? widening_scratch<S>(0, p4 * block) : nullptr;
  S* const y_block = widen && !Lower ? widening_scratch<S>(1, q4 * block) : x_block;
  for (index t0 = 0; t0 < m_lanes; t0 += block) {
    const index t1 = std::min(m_lanes, t0 + block);
    const S* xs;
    const S* ys;
    index xs_stride, ys_stride;
    if constexpr (widen) {
      for (index c = 0; c < p4; ++c) widen_run(x + c * x_stride + t0, t1 - t0, x_block + c * block);
      if (!Lower)
        for (index c = 0; c < q4; ++c) widen_run(y + c * y_stride + t0, t1 - t0, y_block + c * block);
      xs = x_block, ys = y_block, xs_stride = ys_stride = block;
    } else {
      xs = x + t0, ys = y + t0, xs_stride = x_stride, ys_stride = y_stride;
    }
    S* tile_sums = sums.data();
    for (index i0 = 0; i0 < p4; i0 += ta)
      for (index j0 = 0; j0 <= last_j0(i0); j0 += tb, tile_sums += ta * tb * width) {
        L acc[ta][tb];
        unrolled<ta>([&](auto a) {
          unrolled<tb>([&](auto b) { load_lane(acc[a][b], tile_sums + (tb * a + b) * width); });
        });
        accumulate_column_tile(acc, xs + i0 * xs_stride, xs_stride, ys + j0 * ys_stride, ys_stride, 0, t1 - t0);
        unrolled<ta>([&](auto a) {
          unrolled<tb>([&](auto b) { store_lane(tile_sums + (tb * a + b) * width, acc[a][b]); });
        });
      }
  }
  for_each_tile_sum<L, ta, tb>(sums.data(), p4, last_j0, [&](index i, index j, S sum) {
    for (index t = m_lanes; t < m; ++t)
      sum += widen_value<S>(x[i * x_stride + t]) * widen_value<S>(y[j * y_stride + t]);
    g(i, j) = sum;
  });
}

#if LOLA_AVX2_DISPATCH
template <bool Lower, class S, class T>
LOLA_TARGET_AVX2_FMA void cross_columns_tiled_avx2(const T* x, index x_stride, const T* y, index y_stride, index m,
                                                   index p4, index q4, dense_matrix<S>& g) {
  cross_columns_tiled_lanes<32, Lower>(x, x_stride, y, y_stride, m, p4, q4, g);
}
#endif

/// cross_columns_tiled_lanes in the widest lanes the processor runs (simd.hpp).
template <bool Lower, class S, class T>
void cross_columns_tiled(const T* x, index x_stride, const T* y, index y_stride, index m, index p4, index q4,
                         dense_matrix<S>& g) {
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma()) return cross_columns_tiled_avx2<Lower>(x, x_stride, y, y_stride, m, p4, q4, g);
#endif
  cross_columns_tiled_lanes<native_lane_bytes<S>, Lower>(x, x_stride, y, y_stride, m, p4, q4, g);
}

/// acc += XᵀY over m rows of X and Y with contiguous rows of fixed length N, in panels of four
/// rows (the last m mod 4 rows one by one), prefetching 4 KiB ahead in each operand. `Same`: Y is
/// X, read once. The sum is a local, copied in and out, so it stays in registers (a reference or a
/// returned object, which might alias the operands, is kept in memory: 15% slower at N = 16).
template <int N, bool Same, class S>
LOLA_ALWAYS_INLINE void accumulate_rows_fixed(Eigen::Matrix<S, N, N>& sum, const S* x, index x_stride, const S* y,
                                              index y_stride, index m) {
  Eigen::Matrix<S, N, N> acc = sum;
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
  sum = acc;
}

/// g = XᵀY for X and Y with contiguous rows of fixed length N stored as T (S, or a narrower file
/// type). Stored as S, the rows are read in place; otherwise 256 rows at a time are widened into
/// the per-thread scratch (256·N values of S, in L1) and read there. Blocks of a multiple of four
/// rows keep the panels where they are, so the sums are formed in the same order either way and a
/// stored factor and its decoded copy give the same bits.
template <int N, bool Same, class S, class T>
void rows_fixed_into(const T* x, index x_stride, const T* y, index y_stride, index m, dense_matrix<S>& g) {
  Eigen::Matrix<S, N, N> acc = Eigen::Matrix<S, N, N>::Zero();
  if constexpr (std::is_same_v<S, T>) {
    accumulate_rows_fixed<N, Same>(acc, x, x_stride, y, y_stride, m);
  } else {
    constexpr index block = 256;
    S* const x_block = widening_scratch<S>(0, block * N);
    S* const y_block = Same ? x_block : widening_scratch<S>(1, block * N);
    const auto widen_rows = [](const T* from, index stride, index rows, S* to) {
      if (stride == N)
        widen_run(from, rows * N, to);
      else
        for (index row = 0; row < rows; ++row) widen_run(from + row * stride, N, to + row * N);
    };
    for (index t0 = 0; t0 < m; t0 += block) {
      const index rows = std::min(block, m - t0);
      widen_rows(x + t0 * x_stride, x_stride, rows, x_block);
      if constexpr (!Same) widen_rows(y + t0 * y_stride, y_stride, rows, y_block);
      accumulate_rows_fixed<N, Same>(acc, x_block, N, y_block, N, rows);
    }
  }
  g = acc;
}

/// XᵀY for X and Y with contiguous rows of fixed length N (`x_stride`, `y_stride` apart).
template <int N, class S, class T>
void cross_rows_fixed(const T* x, index x_stride, const T* y, index y_stride, index m, dense_matrix<S>& g) {
  if (x == y && x_stride == y_stride)
    rows_fixed_into<N, true>(x, x_stride, x, x_stride, m, g);
  else
    rows_fixed_into<N, false>(x, x_stride, y, y_stride, m, g);
}

/// The ranks at which a Gram of factors with contiguous rows uses rows_fixed_into, whose n×n sum
/// stays in registers: 4 and 8, and, where the translation unit is compiled for AVX2 (Eigen's
/// packets then 256-bit), 16 and 32 too; the blocked kernels take the other ranks (rank 4 in the
/// blocked row kernel pads to two lanes of columns, 16 floats under AVX2: 16× the work).
inline bool register_rows_rank(index n) {
#if LOLA_AVX2_DISPATCH || !LOLA_VECTOR_EXTENSIONS
  return n == 4 || n == 8;
#else
  return n == 4 || n == 8 || n == 16 || n == 32;
#endif
}

/// f(std::integral_constant<int, n>{}) when n is a register_rows_rank, and true; false, f not
/// called, for the other ranks. The one switch from a run-time rank to the register kernels'
/// compile-time one (Gram here, thin product in thin_product.hpp).
template <class F>
bool with_register_rank(index n, F&& f) {
  if (!register_rows_rank(n)) return false;
  switch (n) {
    case 4: f(std::integral_constant<int, 4>{}); return true;
    case 8: f(std::integral_constant<int, 8>{}); return true;
    case 16: f(std::integral_constant<int, 16>{}); return true;
    case 32: f(std::integral_constant<int, 32>{}); return true;
    default: return false;
  }
}

/// Whether a Gram of factors with contiguous rows at rank n is left to rows_fixed_into: the
/// register_rows_rank ranks, except where the run-time AVX2 blocked kernel covers n with whole
/// tiles (n a multiple of two 32-byte lanes of S: 8 in double). rows_fixed_into's Eigen products
/// are compiled for the translation unit's instruction set, SSE2 where the AVX2 kernels are chosen
/// at run time, and there ran at half the blocked kernel's speed (a 4096×8 BF16 B in double: 51 µs
/// against 27 µs on the reference VM). The choice depends on S, n and the processor, never on the
/// stored type, so a stored factor and its decoded copy still take the same kernel.
template <class S>
bool gram_register_rank(index n) {
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma() && n % (64 / index(sizeof(S))) == 0) return false;
#endif
  return register_rows_rank(n);
}

/// cross_rows_fixed for the register_rows_rank ranks; false for the others.
template <class S, class T>
bool cross_rows(const T* x, index x_stride, const T* y, index y_stride, index m, index n, dense_matrix<S>& g) {
  return with_register_rank(n, [&](auto rank) {
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

/// A factor as the blocked kernel reads it: entry (t, c) of the rows × cols factor is
/// data[t·row_step + c·col_step] (one of the steps is 1), of the stored type T.
template <class T>
struct factor_ref {
  const T* data;
  index row_step, col_step, rows, cols;
};

/// Whether x is a factor_ref for a compute scalar S: a widening cast of stored data, or S with
/// direct access and a contiguous inner dimension.
template <class X, class S>
constexpr bool has_factor_ref_v =
    widening<X, S>::value || (std::is_same_v<typename X::Scalar, S> && contiguous_inner_v<X>);

template <class S, class X>
auto factor_ref_of(const X& x) {
  using w = widening<X, S>;
  if constexpr (w::value) {
    const auto& stored = w::inner(x);
    const bool rows_contiguous = (w::order == Eigen::RowMajor) != w::transposed;
    const index stride = stored.outerStride();
    return factor_ref<typename w::stored>{stored.data(), rows_contiguous ? stride : 1, rows_contiguous ? 1 : stride,
                                          x.rows(), x.cols()};
  } else {
    constexpr bool rows_contiguous = int(X::Flags) & Eigen::RowMajorBit;
    const index stride = x.outerStride();
    return factor_ref<S>{x.data(), rows_contiguous ? stride : 1, rows_contiguous ? 1 : stride, x.rows(), x.cols()};
  }
}

/// Rows [t0, t0 + count) of f, widened to S, into `block`: entry (t, c) at block + t·ld + c when
/// `RowMajor`, else at block + c·ld + t.
template <bool RowMajor, class S, class T>
LOLA_ALWAYS_INLINE void load_factor_rows(const factor_ref<T>& f, index t0, index count, index ld, S* block) {
  if (f.col_step == 1) {
    for (index t = 0; t < count; ++t) {
      const T* row = f.data + (t0 + t) * f.row_step;
      if constexpr (RowMajor)
        widen_run(row, f.cols, block + t * ld);
      else
        for (index c = 0; c < f.cols; ++c) block[c * ld + t] = widen_value<S>(row[c]);
    }
  } else {
    for (index c = 0; c < f.cols; ++c) {
      const T* column = f.data + c * f.col_step + t0;
      if constexpr (RowMajor)
        for (index t = 0; t < count; ++t) block[t * ld + c] = widen_value<S>(column[t]);
      else
        widen_run(column, count, block + c * ld);
    }
  }
}

/// sums += the accumulators of one block of rows (a tile of Ta × Tb lanes). Each block starts its
/// accumulators from zero, so an entry of G is a sum of block sums: the error of a dot product of
/// length block plus one of length m / block, not of length m (a float Gram of a 4096-row factor
/// in one running sum lost a decimal digit against this).
template <class L, int Ta, int Tb, class S>
LOLA_ALWAYS_INLINE void add_block_sums(const L (&acc)[Ta][Tb], S* sums) {
  constexpr index width = index(sizeof(L) / sizeof(S));
  unrolled<Ta>([&](auto a) {
    unrolled<Tb>([&](auto b) {
      L total;
      load_lane(total, sums + (Tb * a + b) * width);
      total += acc[a][b];
      store_lane(sums + (Tb * a + b) * width, total);
    });
  });
}

/// The blocked cross-Gram kernels (for operands with contiguous rows): g = XᵀY (only the
/// lower triangle when `Same`, Y being X) in blocks of rows, each block widened into a scratch
/// that stays in L1 while register tiles read it, so that every stored value is read once and
/// converted once, in cache.
///
/// Column-major scratch (X with contiguous columns, Y with contiguous rows), zero-padded to a multiple
/// of 4 columns and of the lane width in rows: the 4×2 tiles of column dot products of
/// cross_columns_tiled_lanes, each entry finished by a sum across its lane.
template <int Bytes, bool Same, class S, class TX, class TY>
LOLA_ALWAYS_INLINE void cross_gram_column_blocks(const factor_ref<TX>& x, const factor_ref<TY>& y,
                                                 dense_matrix<S>& g) {
  using L = lane<S, Bytes>;
  constexpr index width = Bytes / index(sizeof(S));
  constexpr int ta = 4, tb = 2;  // tile rows (of G) and columns
  const index m = x.rows, p = x.cols, q = y.cols;
  const index p4 = (p + 3) / 4 * 4, q4 = (q + 3) / 4 * 4, columns = Same ? p4 : p4 + q4;
  // Rows per block: two operands' blocks in 32 KiB, a multiple of the lane width, no more than the
  // factors have. The length does not depend on `Same`, so a Gram computed as a cross-Gram of two
  // views of one factor is the same bits as the Gram.
  const index block = std::min((m + width - 1) / width * width,
                               std::max<index>(width, 32768 / index(sizeof(S)) / (p4 + q4) / width * width));
  std::vector<S> scratch(std::size_t(columns * block), S(0));
  S* const xs = scratch.data();
  S* const ys = Same ? xs : xs + p4 * block;
  const auto last_j0 = [&](index i0) { return Same ? i0 + ta - tb : q4 - tb; };
  index tiles = 0;
  for (index i0 = 0; i0 < p4; i0 += ta) tiles += last_j0(i0) / tb + 1;
  // The running sums of every tile between blocks, lane by lane.
  std::vector<S> sums(std::size_t(tiles * ta * tb * width), S(0));
  for (index t0 = 0; t0 < m; t0 += block) {
    const index count = std::min(block, m - t0), steps = (count + width - 1) / width * width;
    load_factor_rows<false>(x, t0, count, block, xs);
    if constexpr (!Same) load_factor_rows<false>(y, t0, count, block, ys);
    for (index c = 0; c < columns && steps > count; ++c)
      std::fill(xs + c * block + count, xs + c * block + steps, S(0));
    S* tile_sums = sums.data();
    for (index i0 = 0; i0 < p4; i0 += ta)
      for (index j0 = 0; j0 <= last_j0(i0); j0 += tb, tile_sums += ta * tb * width) {
        L acc[ta][tb];
        unrolled<ta>([&](auto a) { unrolled<tb>([&](auto b) { zero_lane(acc[a][b]); }); });
        accumulate_column_tile(acc, xs + i0 * block, block, ys + j0 * block, block, index(0), steps);
        add_block_sums(acc, tile_sums);
      }
  }
  for_each_tile_sum<L, ta, tb>(sums.data(), p4, last_j0, [&](index i, index j, S sum) {
    if (i < p && j < q) g(i, j) = sum;
  });
}

/// Row-major scratch (X with contiguous rows: a stored B), zero-padded to whole tiles of columns:
/// G accumulated as a sum of outer products of rows, in tiles of 4 rows of G (broadcast values of
/// X) by two lanes of columns (of Y), each accumulator lane one entry of G. The row-major layout
/// converts without a transposition, which in a column-major scratch cost as much as the product.
template <int Bytes, bool Same, class S, class TX, class TY>
LOLA_ALWAYS_INLINE void cross_gram_row_blocks(const factor_ref<TX>& x, const factor_ref<TY>& y, dense_matrix<S>& g) {
  using L = lane<S, Bytes>;
  constexpr index width = Bytes / index(sizeof(S));
  constexpr int ta = 4, tb = 2;  // tile rows (of G), and lanes of tile columns
  const index m = x.rows, p = x.cols, q = y.cols;
  const index pad = std::max<index>(ta, tb * width);
  const index px = (p + pad - 1) / pad * pad, qy = Same ? px : (q + pad - 1) / pad * pad;
  const index columns = Same ? px : px + qy;
  const index block = std::min(m, std::max<index>(1, 32768 / index(sizeof(S)) / (px + qy)));  // as above
  std::vector<S> scratch(std::size_t(columns * block), S(0));
  S* const xs = scratch.data();
  S* const ys = Same ? xs : xs + px * block;
  const auto last_j0 = [&](index i0) { return Same ? (i0 + ta - 1) / (tb * width) * (tb * width) : qy - tb * width; };
  index tiles = 0;
  for (index i0 = 0; i0 < px; i0 += ta) tiles += last_j0(i0) / (tb * width) + 1;
  std::vector<S> sums(std::size_t(tiles * ta * tb * width), S(0));
  for (index t0 = 0; t0 < m; t0 += block) {
    const index count = std::min(block, m - t0);
    load_factor_rows<true>(x, t0, count, px, xs);
    if constexpr (!Same) load_factor_rows<true>(y, t0, count, qy, ys);
    S* tile_sums = sums.data();
    for (index i0 = 0; i0 < px; i0 += ta)
      for (index j0 = 0; j0 <= last_j0(i0); j0 += tb * width, tile_sums += ta * tb * width) {
        L acc[ta][tb];
        unrolled<ta>([&](auto a) { unrolled<tb>([&](auto b) { zero_lane(acc[a][b]); }); });
        for (index t = 0; t < count; ++t) {
          L yj[tb];
          unrolled<tb>([&](auto b) { load_lane(yj[b], ys + t * qy + j0 + b * width); });
          unrolled<ta>([&](auto a) {
            const S xi = xs[t * px + i0 + a];
            unrolled<tb>([&](auto b) { acc[a][b] += yj[b] * xi; });
          });
        }
        add_block_sums(acc, tile_sums);
      }
  }
  const S* tile_sums = sums.data();
  for (index i0 = 0; i0 < px; i0 += ta)
    for (index j0 = 0; j0 <= last_j0(i0); j0 += tb * width, tile_sums += ta * tb * width)
      for (int a = 0; a < ta; ++a)
        for (index l = 0; l < tb * width; ++l)
          if (i0 + a < p && j0 + l < q) g(i0 + a, j0 + l) = tile_sums[tb * width * a + l];
}

/// The blocked kernel for x's layout.
template <int Bytes, bool Same, class S, class TX, class TY>
LOLA_ALWAYS_INLINE void cross_gram_blocked_lanes(const factor_ref<TX>& x, const factor_ref<TY>& y,
                                                 dense_matrix<S>& g) {
  if (x.col_step == 1)
    cross_gram_row_blocks<Bytes, Same>(x, y, g);
  else
    cross_gram_column_blocks<Bytes, Same>(x, y, g);
}

#if LOLA_AVX2_DISPATCH
template <bool Same, class S, class TX, class TY>
LOLA_TARGET_AVX2_FMA void cross_gram_blocked_avx2(const factor_ref<TX>& x, const factor_ref<TY>& y,
                                                  dense_matrix<S>& g) {
  cross_gram_blocked_lanes<32, Same>(x, y, g);
}
#endif

/// g = XᵀY (p×q) by the blocked kernels in the widest lanes the processor runs; when `Same`,
/// the Gram, exactly symmetric.
template <bool Same, class S, class TX, class TY>
void cross_gram_blocked(const factor_ref<TX>& x, const factor_ref<TY>& y, dense_matrix<S>& g) {
  g.setZero(x.cols, y.cols);
  if (x.rows == 0 || x.cols == 0 || y.cols == 0) return;
#if LOLA_AVX2_DISPATCH
  if (cpu_has_avx2_fma())
    cross_gram_blocked_avx2<Same>(x, y, g);
  else
#endif
    cross_gram_blocked_lanes<native_lane_bytes<S>, Same>(x, y, g);
  if (Same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
}

/// Whether the kernels read x (a factor_ref type) as a factor with contiguous rows: the choice of
/// kernel depends on it and on nothing else, so a factor and its copy in another stored type
/// (a view of a file and the decoded adapter) take the same kernel and give the same bits.
template <class X, class S>
constexpr bool rows_contiguous() {
  if constexpr (widening<X, S>::value)
    return (widening<X, S>::order == Eigen::RowMajor) != widening<X, S>::transposed;
  else
    return int(X::Flags) & Eigen::RowMajorBit;
}
template <class X, class S>
constexpr bool rows_contiguous_v = rows_contiguous<X, S>();

/// g = XᵀY for X and Y of S with contiguous columns, by cross_columns_tiled (the columns past the
/// last multiple of 4 by Eigen's product).
template <class S, class XD, class YD>
void cross_gram_columns_into(const XD& x, const YD& y, bool same, dense_matrix<S>& g) {
  const index m = x.rows(), p = x.cols(), q = y.cols();
  g.resize(p, q);
  if (m == 0 || p == 0 || q == 0) {
    g.setZero();
    return;
  }
  const index p4 = p / 4 * 4, q4 = q / 4 * 4;
  if (p4 > 0 && q4 > 0) {
    if (same)
      cross_columns_tiled<true>(x.data(), x.outerStride(), x.data(), x.outerStride(), m, p4, p4, g);
    else
      cross_columns_tiled<false>(x.data(), x.outerStride(), y.data(), y.outerStride(), m, p4, q4, g);
  }
  if (q > q4) g.rightCols(q - q4).noalias() = x.transpose() * y.rightCols(q - q4);
  if (p > p4 && q4 > 0) g.bottomLeftCorner(p - p4, q4).noalias() = x.rightCols(p - p4).transpose() * y.leftCols(q4);
  if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
}

/// g = XᵀY (p×q) for X (m×p) and Y (m×q) (see the file comment for the kernels); when Y is X,
/// the Gram, exactly symmetric. Both operands with contiguous columns: cross_columns_tiled; any
/// operand with contiguous rows: the blocked kernels (rows_fixed_into at a register rank); factors
/// stored narrower than S are widened block by block as the kernels read them (or whole first,
/// widened.hpp, where the two are stored in different types or columns fall outside the tiles);
/// otherwise Eigen's product.
template <class S, class XD, class YD>
void cross_gram_into(const Eigen::MatrixBase<XD>& x_in, const Eigen::MatrixBase<YD>& y_in,
                     dense_matrix<S>& g) {
  const XD& x = x_in.derived();
  const YD& y = y_in.derived();
  const bool same = same_matrix(x, y);
  if constexpr (has_factor_ref_v<XD, S> && has_factor_ref_v<YD, S>) {
    if constexpr (!rows_contiguous_v<XD, S> && !rows_contiguous_v<YD, S>) {
      // Both stored as one narrower type, no columns past the last multiple of 4: the tiled kernel
      // widens a block of rows at a time (the same sums as on the columns widened whole).
      if constexpr (widened_alike_v<XD, YD, S>) {
        const index m = x.rows(), p = x.cols(), q = y.cols();
        if (m > 0 && p > 0 && q > 0 && p % 4 == 0 && q % 4 == 0) {
          const auto& xs = widening<XD, S>::inner(x);
          const auto& ys = widening<YD, S>::inner(y);
          g.resize(p, q);
          if (same)
            cross_columns_tiled<true>(xs.data(), xs.outerStride(), xs.data(), xs.outerStride(), m, p, p, g);
          else
            cross_columns_tiled<false>(xs.data(), xs.outerStride(), ys.data(), ys.outerStride(), m, p, q, g);
          if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
          return;
        }
      }
      with_widened<S>(x, 0, [&](const auto& wx) {
        if (same)
          cross_gram_columns_into<S>(wx, wx, true, g);
        else
          with_widened<S>(y, 1, [&](const auto& wy) { cross_gram_columns_into<S>(wx, wy, false, g); });
      });
    } else {
      // Both with contiguous rows at a register rank: rows_fixed_into, on the rows as stored when
      // both are stored as one type (it widens them block by block), else on the factors widened
      // whole first; the same bits either way, and as decoded factors give.
      if constexpr (rows_contiguous_v<XD, S> && rows_contiguous_v<YD, S>) {
        if (x.cols() == y.cols() && gram_register_rank<S>(x.cols()) && x.rows() > 0) {
          if constexpr (widened_alike_v<XD, YD, S>) {
            const auto& xs = widening<XD, S>::inner(x);
            const auto& ys = widening<YD, S>::inner(y);
            g.resize(x.cols(), y.cols());
            if (same)
              cross_rows(xs.data(), xs.outerStride(), xs.data(), xs.outerStride(), x.rows(), x.cols(), g);
            else
              cross_rows(xs.data(), xs.outerStride(), ys.data(), ys.outerStride(), x.rows(), x.cols(), g);
            if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
            return;
          }
          with_widened<S>(x, 0, [&](const auto& wx) {
            const auto finish = [&](const auto& wy) {
              g.resize(x.cols(), y.cols());
              cross_rows(wx.data(), wx.outerStride(), wy.data(), wy.outerStride(), x.rows(), x.cols(), g);
              if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
            };
            if (same)
              finish(wx);
            else
              with_widened<S>(y, 1, finish);
          });
          return;
        }
      }
      const auto x_ref = factor_ref_of<S>(x);
      if (same)
        cross_gram_blocked<true, S>(x_ref, x_ref, g);
      else
        cross_gram_blocked<false, S>(x_ref, factor_ref_of<S>(y), g);
    }
  } else {
    with_widened<S>(x, 0, [&](const auto& wx) {
      with_widened<S>(y, 1, [&](const auto& wy) {
        g.noalias() = wx.transpose() * wy;
        if (same) g.template triangularView<Eigen::StrictlyUpper>() = g.transpose();
      });
    });
  }
}

/// g = XᵀX, both triangles, exactly symmetric.
template <class S, class XD>
void gram_into(const Eigen::MatrixBase<XD>& x, dense_matrix<S>& g) {
  cross_gram_into<S>(x.derived(), x.derived(), g);
}

}  // namespace detail
}  // namespace lola
