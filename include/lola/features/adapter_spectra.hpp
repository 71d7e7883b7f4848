#pragma once
/// @file
/// The spectra of whole adapters: σ of every module, from an owning io::adapter or an
/// io::adapter_view (factors as the file stores them, widened as the kernels read them), batched
/// by rank, the form a GPU needs:
///   1. per module, the Grams G_B = BᵀB and G_A = A·Aᵀ: the Gram primitive
///      (backend/primitives.hpp), O((d + k)·r²), one read of the factors;
///   2. per rank r, one batched r×r stage over that rank's modules: Cholesky of G_A, M = Lᵀ·G_B·L,
///      the eigenvalues of M (linalg/spectrum_from_grams.hpp, O(r³) each), the work item that
///      backend/thrust/batched_spectra.hpp launches one GPU thread per module; here the host
///      backend's (backend/eigen/batched_spectra.hpp) on the executor's threads;
///   3. the modules the Gram route does not serve take low_rank_svd one by one (its Householder
///      route and its rescaling, features/spectrum.hpp): a factor with κ > 4, rank-deficient, or
///      with d < r or k < r (linalg/gram_condition.hpp, the same rule as low_rank_svd's), squared
///      column norms outside the compute type's range (linalg/thin_qr.hpp), non-finite factors or
///      scale, and σ beyond the range.
/// So each module's σ has low_rank_svd's accuracy (σᵢ within 16·r·ε·s²·‖B‖²·‖A‖²/σᵢ on the Gram
/// route, κ ≤ 4 bounding σ₁/σᵢ by 16; backward stable elsewhere), not its last bits, and the same
/// errors. Cost: that of the Grams, O((d + k)·r²) per module, plus O(r³); no singular vectors.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/batched_spectra.hpp"
#include "lola/backend/eigen/matrix.hpp"
#include "lola/backend/eigen/primitives.hpp"
#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/io/adapter.hpp"
#include "lola/linalg/spectrum_from_grams.hpp"
#include "lola/linalg/thin_qr.hpp"

namespace lola {
namespace detail {

/// The modules of one rank r in one batched r×r call: member j's Grams at j·r² of b_grams and
/// a_grams, its scale, its σ at j·r, its gram_spectrum.
template <class S>
struct rank_batch {
  std::vector<std::size_t> members;  ///< positions in the module list, ascending
  std::vector<S> b_grams, a_grams, scales, sigma, work;
  std::vector<int> status;
};

/// σ (r per module, descending, zero past min(d, k)) of scale_of(m)·B·A for each module m, in the
/// order given; see the file comment. Module: an io module type of any backend (visit, scale,
/// rank, rows, cols). An error from module i is rethrown as annotate(i, e), the first in list
/// order when several fail.
template <class S, class Module, class ScaleOf, class Annotate>
std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> batched_singular_values(const std::vector<const Module*>& modules,
                                                                         ScaleOf scale_of, Annotate annotate,
                                                                         const executor& ex) {
  using vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  const std::size_t n = modules.size();
  std::vector<vector> sigma(n);
  const auto annotated = [&](std::size_t i, auto&& f) {
    try {
      f();
    } catch (const error& e) {
      throw annotate(i, e);
    }
  };

  // Each module's batch, by rank, and its slot there, from the shapes alone; none for a module the
  // Gram route cannot serve whatever its values (r = 0, d < r or k < r).
  std::map<index, rank_batch<S>> batches;  // map nodes do not move: the pointers below stay valid
  std::vector<rank_batch<S>*> batch_of(n, nullptr);
  std::vector<index> slot(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const Module& m = *modules[i];
    const index r = m.rank();
    if (r == 0 || m.rows() < r || m.cols() < r) continue;
    rank_batch<S>& batch = batches[r];
    batch_of[i] = &batch;
    slot[i] = static_cast<index>(batch.members.size());
    batch.members.push_back(i);
  }
  for (auto& [r, batch] : batches) {
    const auto count = batch.members.size();
    batch.b_grams.resize(count * std::size_t(r * r));
    batch.a_grams.resize(count * std::size_t(r * r));
    batch.scales.resize(count);
    batch.sigma.resize(count * std::size_t(r));
    batch.work.resize(count * std::size_t(spectrum_workspace_size(int(r))));
    batch.status.assign(count, 0);
  }

  // 1. The Grams, into their slots, and whether they are within the range the Gram route needs
  //    (linalg/thin_qr.hpp); the r×r stage checks finiteness and conditioning.
  std::vector<char> gram_route(n, 0);
  parallel_for(ex, static_cast<index>(n), [&](index item) {
    const auto i = static_cast<std::size_t>(item);
    rank_batch<S>* batch = batch_of[i];
    if (batch == nullptr) return;
    const Module& m = *modules[i];
    const index r = m.rank(), rr = r * r, at = slot[i];
    const S s = scale_of(m);
    batch->scales[std::size_t(at)] = s;
    if (!std::isfinite(s)) return;
    S largest_b = 0, largest_a = 0;
    annotated(i, [&] {
      m.visit([&](const auto& B, const auto& A) {
        dense_matrix<S> g;
        gram_into(as_compute<S>(B), g);
        std::copy_n(g.data(), rr, batch->b_grams.data() + at * rr);
        largest_b = g.diagonal().maxCoeff();
        gram_into(as_compute<S>(A).transpose(), g);
        std::copy_n(g.data(), rr, batch->a_grams.data() + at * rr);
        largest_a = g.diagonal().maxCoeff();
      });
    });
    gram_route[i] = squared_norms_in_range<S>(largest_b, m.rows(), r) &&
                    squared_norms_in_range<S>(largest_a, m.cols(), r);
  }, fine_grain(ex, static_cast<index>(n)));

  // 2. One batched r×r call per rank (a module whose Grams were out of range is computed too, and
  //    its result ignored).
  for (auto& [r, batch] : batches)
    spectra_from_grams(ex, static_cast<index>(batch.members.size()), int(r), batch.b_grams.data(),
                       batch.a_grams.data(), batch.scales.data(), batch.sigma.data(), batch.work.data(),
                       batch.status.data());

  // 3. σ from the batch where the Gram route served, else by low_rank_svd.
  parallel_for(ex, static_cast<index>(n), [&](index item) {
    const auto i = static_cast<std::size_t>(item);
    const Module& m = *modules[i];
    if (gram_route[i]) {
      const rank_batch<S>& batch = *batch_of[i];
      const index r = m.rank(), at = slot[i];
      const Eigen::Map<const vector> values(batch.sigma.data() + at * r, r);
      if (batch.status[std::size_t(at)] == int(gram_spectrum::computed) && values.allFinite()) {
        sigma[i] = values;
        return;
      }
    }
    annotated(i, [&] {
      sigma[i] = m.visit([&](const auto& B, const auto& A) {
        return singular_values(factor(as_compute<S>(B), as_compute<S>(A), scale_of(m)), m.rank());
      });
    });
  }, fine_grain(ex, static_cast<index>(n)));
  return sigma;
}

}  // namespace detail

/// For each module of `a`, in order, its r singular values σ₁ ≥ … ≥ σ_r of s·B·A computed in S,
/// zero past min(d, k), batched by rank (see the file comment). Errors are those of
/// singular_values, prefixed with `module "<name>": `; when several modules fail, the first in
/// module order is reported.
template <class S = double, class Module>
std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> adapter_singular_values(const io::basic_adapter<Module>& a,
                                                                         const executor& ex = {}) {
  std::vector<const Module*> modules;
  modules.reserve(a.modules.size());
  for (const auto& m : a.modules) modules.push_back(&m);
  return detail::batched_singular_values<S>(
      modules, [](const Module& m) { return static_cast<S>(m.scale); },
      [&](std::size_t i, const error& e) {
        return error(e.code(), "module \"" + a.modules[i].name + "\": " + e.message());
      },
      ex);
}

}  // namespace lola
