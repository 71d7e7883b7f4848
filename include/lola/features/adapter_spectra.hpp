#pragma once
/// @file
/// The spectra of a whole adapter: σ of every module, from an owning io::adapter or an
/// io::adapter_view (factors as the file stores them, widened as the kernels read them), on an
/// executor's threads, one module per work item (features/spectrum.hpp per module: O((d + k)·r²
/// + r³) each, singular vectors not formed).

#include <string>
#include <vector>

#include <Eigen/Core>

#include "lola/backend/eigen/matrix.hpp"
#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/features/spectrum.hpp"
#include "lola/io/adapter.hpp"

namespace lola {

/// For each module of `a`, in order, its r singular values σ₁ ≥ … ≥ σ_r of s·B·A computed in S,
/// zero past min(d, k). Errors are those of singular_values, prefixed with `module "<name>": `;
/// when several modules fail, the first in module order is reported.
template <class S = double, class Module>
std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> adapter_singular_values(const io::basic_adapter<Module>& a,
                                                                         const executor& ex = {}) {
  std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> sigma(a.modules.size());
  parallel_for(ex, static_cast<index>(a.modules.size()), [&](index i) {
    const auto& m = a.modules[static_cast<std::size_t>(i)];
    try {
      sigma[static_cast<std::size_t>(i)] = m.visit([&](const auto& B, const auto& A) {
        using detail::as_compute;
        return singular_values(factor(as_compute<S>(B), as_compute<S>(A), static_cast<S>(m.scale)), m.rank());
      });
    } catch (const error& e) {
      throw error(e.code(), "module \"" + m.name + "\": " + e.message());
    }
  });
  return sigma;
}

}  // namespace lola
