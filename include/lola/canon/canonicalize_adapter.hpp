#pragma once
/// @file
/// Canonical forms of a whole adapter: every module of an io::adapter_view replaced by the
/// canonical representative of its GL(r) orbit (canon/canonical_form.hpp), computed in S from the
/// factors as stored and encoded back into the file's dtypes (ops/edit_modules.hpp). The scale of
/// each module is kept. What `lola canonicalize` writes.
///
/// Batched by rank, the form a GPU needs (linalg/batched_factor_svd.hpp): the Grams of every
/// module, one r×r call per rank for σ and the singular vectors' coefficients, then per module two
/// thin products, the sign rule and the encoding. A module off the Gram route is decomposed alone.
/// Each module's factors equal canonicalize's for it alone, bit for bit: the same Grams, the same
/// kernel. Reads each factor twice (Gram, product), as canonicalize does.

#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

#include "lola/canon/canonical_form.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/encoded_adapter.hpp"
#include "lola/linalg/batched_factor_svd.hpp"
#include "lola/ops/edit_modules.hpp"

namespace lola {

struct adapter_canonicalization {
  io::encoded_adapter adapter;
  /// How many modules have repeated singular values (canonical_result::degenerate): a rotation
  /// of those singular pairs is left free in them.
  std::size_t degenerate = 0;
};

namespace detail {

/// Every module of `in` edited from its factor-space SVD with singular vectors, batched by rank
/// (see the file comment): edit(i, svd, B, A, scale, out) receives module i's factor_space_svd<S>
/// (of B·A, the SVD canonicalize computes for it alone), its factors read in S, its scale, and its
/// encoded_module.
template <class S, class Edit>
io::encoded_adapter edit_modules_from_svds(const io::adapter_view& in, const module_pass& pass, Edit&& edit) {
  std::vector<const io::module_view*> modules;
  modules.reserve(in.modules.size());
  for (const auto& m : in.modules) modules.push_back(&m);
  const gram_route_batches<S> batches(modules, [](const io::module_view&) { return S(1); }, pass.ex, true);
  return edit_modules<S>(
      in,
      [&](std::size_t i, const auto& e, io::encoded_module& m) {
        decltype(auto) f = evaluator::factors(e);
        factor_space_svd<S> svd;
        batches.finite_svd_of(i, f.B(), f.A(), S(1), svd, "canonicalize");
        edit(i, svd, f.B(), f.A(), f.scale(), m);
      },
      pass);
}

}  // namespace detail

template <class S = double>
adapter_canonicalization canonicalize_adapter(const io::adapter_view& in,
                                              canonical_form form = canonical_form::balanced,
                                              const module_pass& pass = {}) {
  std::atomic<std::size_t> degenerate{0};
  adapter_canonicalization out;
  out.adapter = detail::edit_modules_from_svds<S>(
      in, pass, [&](std::size_t, const auto& svd, const auto& B, const auto& A, S scale, io::encoded_module& m) {
        const auto c = detail::canonical_from_svd(svd, B, A, scale, form, canonical_options<S>{});
        if (c.degenerate) ++degenerate;
        m.set_factors(c.factors.B(), c.factors.A(), m.scale);
      });
  out.degenerate = degenerate.load();
  return out;
}

}  // namespace lola
