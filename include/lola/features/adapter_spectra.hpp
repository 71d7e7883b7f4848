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
///      backend's (backend/eigen/batched_spectra.hpp) on the executor's threads (steps 1 and 2:
///      linalg/batched_factor_svd.hpp);
///   3. the modules the Gram route does not serve take low_rank_svd one by one (its Householder
///      route and its rescaling, features/spectrum.hpp): a factor with κ > 4, rank-deficient, or
///      with d < r or k < r (linalg/gram_condition.hpp, the same rule as low_rank_svd's), squared
///      column norms outside the compute type's range (linalg/thin_qr.hpp), non-finite factors or
///      scale, and σ beyond the range.
/// So each module's σ is the one low_rank_svd computes for it alone, bit for bit (on the Gram route
/// the same Grams and r×r kernel, within 16·r·ε·s²·‖B‖²·‖A‖²/σᵢ, κ ≤ 4 bounding σ₁/σᵢ by 16;
/// backward stable elsewhere), with the same errors. Cost: that of the Grams, O((d + k)·r²) per module, plus O(r³); no singular vectors.

#include <cstddef>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/io/adapter.hpp"
#include "lola/linalg/batched_factor_svd.hpp"

namespace lola {
namespace detail {

/// σ (r per module, descending, zero past min(d, k)) of scale_of(m)·B·A for each module m, in the
/// order given; see the file comment. Module: an io module type of any backend (visit, scale,
/// rank, rows, cols). An error from module i is rethrown as annotate(i, e), the first in list
/// order when several fail.
template <class S, class Module, class ScaleOf, class Annotate>
std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> batched_singular_values(const std::vector<const Module*>& modules,
                                                                         ScaleOf scale_of, Annotate annotate,
                                                                         const executor& ex) {
  const std::size_t n = modules.size();
  std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> sigma(n);
  const gram_route_batches<S> batches(modules, scale_of, ex, false);
  // σ from the batch where the Gram route served, else by low_rank_svd.
  parallel_for(ex, static_cast<index>(n), [&](index item) {
    const auto i = static_cast<std::size_t>(item);
    if (batches.served(i)) {
      sigma[i] = batches.sigma(i);
      return;
    }
    const Module& m = *modules[i];
    try {
      sigma[i] = m.visit([&](const auto& B, const auto& A) {
        return singular_values(factor(as_compute<S>(B), as_compute<S>(A), scale_of(m)), m.rank());
      });
    } catch (const error& e) {
      throw annotate(i, e);
    }
  }, fine_grain(ex, static_cast<index>(n)));
  return sigma;
}

}  // namespace detail

/// For each module of `a`, in order, its r singular values σ₁ ≥ … ≥ σ_r of s·B·A computed in S,
/// zero past min(d, k), batched by rank (see the file comment). Errors are those of
/// singular_values, prefixed with `module "<name>": ` (in_context: those of a factor read on
/// visit name their file and module already); when several modules fail, the first in module
/// order is reported.
template <class S = double, class Module>
std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> adapter_singular_values(const io::basic_adapter<Module>& a,
                                                                         const executor& ex = {}) {
  std::vector<const Module*> modules;
  modules.reserve(a.modules.size());
  for (const auto& m : a.modules) modules.push_back(&m);
  return detail::batched_singular_values<S>(
      modules, [](const Module& m) { return static_cast<S>(m.scale); },
      [&](std::size_t i, const error& e) {
        return in_context("module \"" + a.modules[i].name + "\"", e);
      },
      ex);
}

}  // namespace lola
