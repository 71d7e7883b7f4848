#pragma once
/// @file
/// A test-only backend that proves the seam of backend/primitives.hpp holds: its storage tag is
/// not host_storage and its factor views and matrices are not Eigen types, so an algorithm that
/// reaches factor-sized data other than through the primitives does not compile for it. Its memory
/// is host memory, and each primitive maps the view as the Eigen object of the same layout and
/// calls the host backend's kernel on it, counting the call; so its results are the host backend's
/// bit for bit, and the counts show which primitives an algorithm used.
///
/// A view is a strided window into a column-major matrix or into its transpose (the only layouts
/// slicing and transposing produce): rows contiguous in memory (row_stride 1) or columns
/// (col_stride 1).

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/error.hpp"

namespace lola_test::probe {

using lola::index;

/// The storage tag of the probe backend.
struct storage {};

/// Calls per primitive since the last reset() (atomic: algorithms call them from many threads).
struct call_counts {
  std::atomic<long> gram{0}, cross_gram{0}, thin_product{0}, product{0}, qr{0}, apply_q{0}, reduction{0}, update{0};
  /// assign_scaled between the probe and the host: downloads and uploads.
  std::atomic<long> transfer{0};

  long total() const {
    return gram + cross_gram + thin_product + product + qr + apply_q + reduction + update + transfer;
  }
  void reset() {
    for (auto* c : {&gram, &cross_gram, &thin_product, &product, &qr, &apply_q, &reduction, &update, &transfer})
      c->store(0);
  }
};
inline call_counts counts;
inline void reset() { counts.reset(); }

template <class S>
class view {
 public:
  using Scalar = S;
  using storage = probe::storage;

  view(S* data, index rows, index cols, index row_stride, index col_stride)
      : data_(data), rows_(rows), cols_(cols), row_stride_(row_stride), col_stride_(col_stride) {}

  index rows() const { return rows_; }
  index cols() const { return cols_; }
  view transpose() const { return {data_, cols_, rows_, col_stride_, row_stride_}; }
  view block(index i, index j, index rows, index cols) const {
    if (i < 0 || j < 0 || rows < 0 || cols < 0 || i + rows > rows_ || j + cols > cols_)
      throw lola::error(lola::error_code::shape_mismatch, "probe::view: block out of range");
    return {data_ + i * row_stride_ + j * col_stride_, rows, cols, row_stride_, col_stride_};
  }
  view leftCols(index n) const { return block(0, 0, rows_, n); }
  view rightCols(index n) const { return block(0, cols_ - n, rows_, n); }
  view middleCols(index j, index n) const { return block(0, j, rows_, n); }
  view topRows(index n) const { return block(0, 0, n, cols_); }
  view bottomRows(index n) const { return block(rows_ - n, 0, n, cols_); }
  view middleRows(index i, index n) const { return block(i, 0, n, cols_); }

  /// The Eigen map of the same layout, handed to f (the primitives' only way in).
  template <class F>
  decltype(auto) visit(F&& f) const {
    using column_major = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>,
                                    Eigen::Unaligned, Eigen::OuterStride<>>;
    using row_major = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                                 Eigen::Unaligned, Eigen::OuterStride<>>;
    if (row_stride_ == 1 || rows_ <= 1)
      return f(column_major(data_, rows_, cols_, Eigen::OuterStride<>(std::max<index>(1, col_stride_))));
    return f(row_major(data_, rows_, cols_, Eigen::OuterStride<>(std::max<index>(1, row_stride_))));
  }

  /// visit, with a map without strides when the window is a whole matrix: Eigen then sums it as
  /// one linear array, as it does a plain matrix, so reductions add in the host backend's order.
  template <class F>
  decltype(auto) visit_compact(F&& f) const {
    using column_major = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>>;
    using row_major = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
    if ((row_stride_ == 1 || rows_ <= 1) && (col_stride_ == rows_ || cols_ <= 1))
      return f(column_major(data_, rows_, cols_));
    if (col_stride_ == 1 && (row_stride_ == cols_ || rows_ <= 1)) return f(row_major(data_, rows_, cols_));
    return visit(std::forward<F>(f));
  }

 private:
  S* data_;
  index rows_, cols_, row_stride_, col_stride_;
};

/// An owning column-major matrix; its slices are views.
template <class S>
class matrix {
 public:
  using Scalar = S;
  using storage = probe::storage;

  matrix() = default;
  matrix(index rows, index cols) : values_(std::size_t(rows * cols)), rows_(rows), cols_(cols) {}
  /// A copy of the window v (one pass, counted as an update).
  explicit matrix(const view<S>& v) : matrix(v.rows(), v.cols()) {
    ++counts.update;
    as_view().visit([&](auto out) { v.visit([&](auto in) { out = in; }); });
  }

  index rows() const { return rows_; }
  index cols() const { return cols_; }
  view<S> as_view() const { return {const_cast<S*>(values_.data()), rows_, cols_, 1, rows_}; }
  view<S> transpose() const { return as_view().transpose(); }
  view<S> leftCols(index n) const { return as_view().leftCols(n); }
  view<S> rightCols(index n) const { return as_view().rightCols(n); }
  view<S> middleCols(index j, index n) const { return as_view().middleCols(j, n); }
  view<S> topRows(index n) const { return as_view().topRows(n); }
  view<S> bottomRows(index n) const { return as_view().bottomRows(n); }
  view<S> middleRows(index i, index n) const { return as_view().middleRows(i, n); }

 private:
  std::vector<S, Eigen::aligned_allocator<S>> values_;  // aligned as Eigen's matrices, so that
                                                        // vectorised sums split the same way
  index rows_ = 0, cols_ = 0;
};

template <class X>
inline constexpr bool is_probe_v = false;
template <class S>
inline constexpr bool is_probe_v<view<S>> = true;
template <class S>
inline constexpr bool is_probe_v<matrix<S>> = true;
template <class X>
using if_probe_t = std::enable_if_t<is_probe_v<std::remove_cv_t<std::remove_reference_t<X>>>>;

template <class S>
view<S> as_view(const view<S>& v) {
  return v;
}
template <class S>
view<S> as_view(const matrix<S>& m) {
  return m.as_view();
}

// The primitives (backend/primitives.hpp), found by argument-dependent lookup.

template <class S, class X, class = if_probe_t<X>>
view<S> as_compute(const X& x) {
  static_assert(std::is_same_v<typename X::Scalar, S>, "the probe backend holds compute scalars only");
  return as_view(x);
}

template <class X, class S, class = if_probe_t<X>>
void gram_into(const X& x, Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& g) {
  ++counts.gram;
  as_view(x).visit([&](auto xm) { lola::detail::gram_into(xm, g); });
}

template <class X, class Y, class S, class = if_probe_t<X>, class = if_probe_t<Y>>
void cross_gram_into(const X& x, const Y& y, Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>& g) {
  ++counts.cross_gram;
  as_view(x).visit([&](auto xm) {
    as_view(y).visit([&](auto ym) { lola::detail::cross_gram_into(xm, ym, g); });
  });
}

template <class S, class X, class C, class Out, class = if_probe_t<X>, class = if_probe_t<Out>>
void thin_product_into(const X& x, const Eigen::MatrixBase<C>& c, Out&& out) {
  ++counts.thin_product;
  as_view(x).visit([&](auto xm) {
    as_view(out).visit([&](auto om) { lola::detail::thin_product_into<S>(xm, c, om); });
  });
}

/// out (host) = X·Y for probe views X and Y.
template <class S, class X, class Y, class Out, class = if_probe_t<X>, class = if_probe_t<Y>>
void product_into(const X& x, const Y& y, Out&& out) {
  static_assert(lola::is_eigen_dense_v<std::remove_reference_t<Out>>, "product_into writes a host matrix");
  ++counts.product;
  as_view(x).visit([&](auto xm) {
    as_view(y).visit([&](auto ym) { lola::detail::product_into<S>(xm, ym, out); });
  });
}

template <class X, class = if_probe_t<X>>
auto max_abs(const X& x) {
  ++counts.reduction;
  return as_view(x).visit_compact([](auto xm) { return lola::detail::max_abs(xm); });
}
template <class X, class = if_probe_t<X>>
bool all_finite(const X& x) {
  ++counts.reduction;
  return as_view(x).visit_compact([](auto xm) { return lola::detail::all_finite(xm); });
}
template <class X, class = if_probe_t<X>>
auto max_column_squared_norm(const X& x) {
  ++counts.reduction;
  return as_view(x).visit_compact([](auto xm) { return lola::detail::max_column_squared_norm(xm); });
}
template <class X, class Y, class = if_probe_t<X>, class = if_probe_t<Y>>
auto frobenius_dot(const X& x, const Y& y) {
  ++counts.reduction;
  return as_view(x).visit_compact([&](auto xm) {
    return as_view(y).visit_compact([&](auto ym) { return lola::detail::frobenius_dot(xm, ym); });
  });
}
template <class X, class = if_probe_t<X>>
auto frobenius_norm(const X& x) {
  ++counts.reduction;
  return as_view(x).visit_compact([](auto xm) { return lola::detail::frobenius_norm(xm); });
}
template <class X, class = if_probe_t<X>>
auto largest_magnitude_signs(const X& x) {
  ++counts.reduction;
  return as_view(x).visit([](auto xm) { return lola::detail::largest_magnitude_signs(xm); });
}

template <class S, class X, class = if_probe_t<X>>
matrix<S> scaled_by_power_of_two(const X& x, int e) {
  ++counts.update;
  const view<S> v = as_view(x);
  matrix<S> out(v.rows(), v.cols());
  out.as_view().visit([&](auto om) {
    v.visit([&](auto xm) { om = lola::detail::scaled_by_power_of_two<S>(xm, e); });
  });
  return out;
}
template <class Out, class C, class X, class = if_probe_t<Out>, class = if_probe_t<X>>
void assign_scaled(Out&& out, C c, const X& x) {
  ++counts.update;
  as_view(out).visit([&](auto om) {
    as_view(x).visit([&](auto xm) { lola::detail::assign_scaled(om, c, xm); });
  });
}
/// The transfers: a download into a host matrix, an upload from one (the Eigen side's
/// constraint in the return type, so that the signatures differ from the probe-to-probe one).
template <class Out, class C, class X, class = if_probe_t<X>>
std::enable_if_t<lola::is_eigen_dense_v<Out>> assign_scaled(Out&& out, C c, const X& x) {
  ++counts.transfer;
  as_view(x).visit([&](auto xm) { lola::detail::assign_scaled(out, c, xm); });
}
template <class Out, class C, class X, class = if_probe_t<Out>>
std::enable_if_t<lola::is_eigen_dense_v<X>> assign_scaled(Out&& out, C c, const X& x) {
  ++counts.transfer;
  as_view(out).visit([&](auto om) { lola::detail::assign_scaled(om, c, x); });
}
template <class Out, class C, class X, class = if_probe_t<Out>, class = if_probe_t<X>>
void add_scaled(Out&& out, C c, const X& x) {
  ++counts.update;
  as_view(out).visit([&](auto om) {
    as_view(x).visit([&](auto xm) { lola::detail::add_scaled(om, c, xm); });
  });
}
template <class Out, class W, class = if_probe_t<Out>>
void scale_columns(Out&& out, const W& w) {
  ++counts.update;
  as_view(out).visit([&](auto om) { lola::detail::scale_columns(om, w); });
}
template <class Out, class = if_probe_t<Out>>
void set_zero(Out&& out) {
  ++counts.update;
  as_view(out).visit([](auto om) { lola::detail::set_zero(om); });
}

/// A probe copy of an Eigen matrix (column-major, like the host backend's results).
template <class X>
matrix<typename X::Scalar> copy_of(const Eigen::MatrixBase<X>& x) {
  matrix<typename X::Scalar> out(x.rows(), x.cols());
  out.as_view().visit([&](auto om) { om = x; });
  return out;
}

/// An Eigen copy of a probe matrix or view, for comparing results.
template <class X, class = if_probe_t<X>>
Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, Eigen::Dynamic> to_eigen(const X& x) {
  return as_view(x).visit(
      [](auto xm) { return Eigen::Matrix<typename X::Scalar, Eigen::Dynamic, Eigen::Dynamic>(xm); });
}

}  // namespace lola_test::probe

namespace lola {

template <class S>
struct factor_matrix<lola_test::probe::storage, S> {
  using type = lola_test::probe::matrix<S>;
};

namespace detail {

/// The probe backend's QR: the host one on a copy of the factor, Q applied into probe views.
template <class S>
class householder_qr<lola_test::probe::storage, S> {
 public:
  template <class X>
  void compute(const X& x) {
    ++lola_test::probe::counts.qr;
    host_.compute(lola_test::probe::to_eigen(x));
  }
  dense_matrix<S> R() const { return host_.R(); }
  template <class P, class Out>
  void apply_q_into(const Eigen::MatrixBase<P>& p, Out&& out) const {
    ++lola_test::probe::counts.apply_q;
    lola_test::probe::as_view(out).visit([&](auto om) { host_.apply_q_into(p, om); });
  }
  template <class P, class Out>
  void apply_q_transposed_into(const Eigen::MatrixBase<P>& p, Out&& out) const {
    ++lola_test::probe::counts.apply_q;
    lola_test::probe::as_view(out).visit([&](auto om) { host_.apply_q_transposed_into(p, om); });
  }

 private:
  householder_qr<host_storage, S> host_;
};

}  // namespace detail
}  // namespace lola
