#pragma once
/// @file
/// The factor-space SVDs of many modules at once, batched by rank, the form a GPU needs:
///   1. per module, the Grams G_B = BᵀB and G_A = A·Aᵀ: the Gram primitive
///      (backend/primitives.hpp), O((d + k)·r²), one read of the factors;
///   2. per rank r, one batched call of the r×r kernel svd_from_grams over that rank's modules
///      (linalg/spectrum_from_grams.hpp: σ, and with vectors the coefficients X_B, X_A of
///      U = B·X_B, V = Aᵀ·X_A), here the host backend's launcher (backend/eigen/batched_spectra.hpp)
///      on the executor's threads.
/// A module the Gram route serves (both factors κ ≤ 4, d ≥ r, k ≥ r, Grams in range, finite σ) then
/// has exactly the result low_rank_svd's factor-space SVD computes for it alone (the same Grams,
/// the same kernel, the same eigen-solver); svd_of gives it, and computes the others module by
/// module (their Householder route). Features (features/adapter_spectra.hpp) take σ; canonical
/// forms and resizes (canon/canonicalize_adapter.hpp, ops/resize_adapter.hpp) take the vectors.
/// Memory: 2r² (4r² with vectors) scalars per module beside the factors.

#include <cmath>
#include <cstddef>
#include <map>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/batched_spectra.hpp"
#include "lola/backend/eigen/matrix.hpp"
#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/linalg/low_rank_svd.hpp"
#include "lola/linalg/spectrum_from_grams.hpp"
#include "lola/linalg/thin_qr.hpp"

namespace lola::detail {

/// Steps 1 and 2 of the file comment for a list of modules, and each module's result.
template <class S>
class gram_route_batches {
 public:
  using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  using matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

  /// Module: an io module type of any backend (visit, rank, rows, cols); scale_of(m) the s of
  /// s·B·A to decompose. A module whose factors fail to read (a view reading them on visit: not
  /// finite, the file changed) gets no Grams and is not served: the owner's pass over every module,
  /// which reads the modules not served again, reports the error, so that of several failing
  /// modules the first in list order is reported whichever step met it.
  template <class Module, class ScaleOf>
  gram_route_batches(const std::vector<const Module*>& modules, ScaleOf scale_of, const executor& ex, bool vectors)
      : vectors_(vectors), batch_of_(modules.size(), nullptr), slot_(modules.size(), 0),
        has_grams_(modules.size(), 0), in_range_(modules.size(), 0) {
    const std::size_t n = modules.size();
    // Each module's batch, by rank, and its slot there, from the shapes alone; none for a module
    // the Gram route cannot serve whatever its values (r = 0, d < r or k < r).
    for (std::size_t i = 0; i < n; ++i) {
      const Module& m = *modules[i];
      const index r = m.rank();
      if (!gram_route_shape(m.rows(), m.cols(), r)) continue;
      batch& b = batches_[r];
      batch_of_[i] = &b;
      slot_[i] = static_cast<index>(b.members);
      ++b.members;
    }
    for (auto& [r, b] : batches_) {
      const std::size_t count = b.members, rr = std::size_t(r * r);
      b.b_grams.resize(count * rr);
      b.a_grams.resize(count * rr);
      b.scales.resize(count);
      b.sigma.resize(count * std::size_t(r));
      b.status.assign(count, 0);
      if (vectors_) {
        b.x_b.resize(count * rr);
        b.x_a.resize(count * rr);
      }
      b.work.resize(count * std::size_t(vectors_ ? svd_workspace_size(int(r)) : spectrum_workspace_size(int(r))));
    }

    // 1. The Grams, into their slots, and whether they are within the range the Gram route needs
    //    (linalg/thin_qr.hpp); the kernel checks finiteness and conditioning.
    parallel_for(ex, static_cast<index>(n), [&](index item) {
      const auto i = static_cast<std::size_t>(item);
      batch* b = batch_of_[i];
      if (b == nullptr) return;
      const Module& m = *modules[i];
      const index r = m.rank(), rr = r * r, at = slot_[i];
      const S s = scale_of(m);
      b->scales[std::size_t(at)] = s;
      if (!std::isfinite(s)) return;
      S largest_b = 0, largest_a = 0;
      try {
        m.visit([&](const auto& B, const auto& A) {
          dense_matrix<S> g;
          gram_into(as_compute<S>(B), g);
          std::copy_n(g.data(), rr, b->b_grams.data() + at * rr);
          largest_b = g.diagonal().maxCoeff();
          gram_into(as_compute<S>(A).transpose(), g);
          std::copy_n(g.data(), rr, b->a_grams.data() + at * rr);
          largest_a = g.diagonal().maxCoeff();
        });
      } catch (const error&) {
        return;  // reported by the owner's pass (see the constructor's comment)
      }
      has_grams_[i] = 1;
      in_range_[i] = grams_in_range<S>(largest_b, largest_a, m.rows(), m.cols(), r);
    }, fine_grain(ex, static_cast<index>(n)));

    // 2. One batched r×r call per rank (a module whose Grams were out of range is computed too,
    //    and its result ignored).
    for (auto& [r, b] : batches_)
      spectra_from_grams(ex, static_cast<index>(b.members), int(r), b.b_grams.data(), b.a_grams.data(),
                         b.scales.data(), b.sigma.data(), b.work.data(), b.status.data(),
                         vectors_ ? b.x_b.data() : nullptr, vectors_ ? b.x_a.data() : nullptr);
  }

  gram_route_batches(const gram_route_batches&) = delete;  // batch_of_ points into batches_
  gram_route_batches& operator=(const gram_route_batches&) = delete;

  /// Whether module i's result is the batch's: the Gram route served it.
  bool served(std::size_t i) const {
    if (!in_range_[i]) return false;
    const batch& b = *batch_of_[i];
    return b.status[std::size_t(slot_[i])] == int(gram_spectrum::computed) && sigma(i).allFinite();
  }

  /// σ of module i (r values, descending), when served(i).
  Eigen::Map<const vector> sigma(std::size_t i) const {
    const batch& b = *batch_of_[i];
    const index r = static_cast<index>(b.sigma.size() / b.members);
    return Eigen::Map<const vector>(b.sigma.data() + slot_[i] * r, r);
  }

  /// Module i's factor-space SVD of s·B·A (B, A read in S; s its scale_of): adopted from the batch
  /// when served(i), else computed alone (low_rank_svd's factor_space_svd) from the batch's Grams
  /// when it has them. False when the factors or s are not finite.
  template <class Storage, class BX, class AX>
  bool svd_of(std::size_t i, const BX& B, const AX& A, S s, factor_space_svd<S, Storage>& svd) const {
    if (vectors_ && served(i)) {
      const batch& b = *batch_of_[i];
      const index r = B.cols(), rr = r * r, at = slot_[i];
      svd.adopt_gram_route(sigma(i), Eigen::Map<const matrix>(b.x_b.data() + at * rr, r, r),
                           Eigen::Map<const matrix>(b.x_a.data() + at * rr, r, r));
      return true;
    }
    if (!has_grams_[i]) return svd.compute(B, A, s, vectors_);
    const batch& b = *batch_of_[i];
    const std::size_t at = std::size_t(slot_[i] * B.cols() * B.cols());
    return svd.compute(B, A, s, vectors_, b.b_grams.data() + at, b.a_grams.data() + at);
  }

  /// svd_of, non-finite factors or s being error_code::numerical as low_rank_svd reports them
  /// (require_finite_factors, naming `function`).
  template <class Storage, class BX, class AX>
  void finite_svd_of(std::size_t i, const BX& B, const AX& A, S s, factor_space_svd<S, Storage>& svd,
                     const char* function) const {
    require_finite_factors(svd_of(i, B, A, s, svd), function, B.rows(), A.cols());
  }

 private:
  /// The modules of one rank r in one batched r×r call: member j's Grams (and X_B, X_A) at j·r²,
  /// its scale at j, its σ at j·r, its gram_spectrum at j.
  struct batch {
    std::size_t members = 0;
    std::vector<S> b_grams, a_grams, scales, sigma, x_b, x_a, work;
    std::vector<int> status;
  };

  bool vectors_;
  std::map<index, batch> batches_;  // map nodes do not move: the pointers below stay valid
  std::vector<batch*> batch_of_;
  std::vector<index> slot_;
  std::vector<char> has_grams_, in_range_;
};

}  // namespace lola::detail
