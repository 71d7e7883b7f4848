#pragma once
/// @file
/// Canonical forms of a whole adapter: every module of an io::adapter_view replaced by the
/// canonical representative of its GL(r) orbit (canon/canonical_form.hpp), computed in S from the
/// factors as stored and encoded back into the file's dtypes (ops/edit_modules.hpp). The scale of
/// each module is kept. What `lola canonicalize` writes.

#include <atomic>
#include <cstddef>

#include "lola/canon/canonical_form.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/encoded_adapter.hpp"
#include "lola/ops/edit_modules.hpp"

namespace lola {

struct adapter_canonicalization {
  io::encoded_adapter adapter;
  /// How many modules have repeated singular values (canonical_result::degenerate): a rotation
  /// of those singular pairs is left free in them.
  std::size_t degenerate = 0;
};

template <class S = double>
adapter_canonicalization canonicalize_adapter(const io::adapter_view& in,
                                              canonical_form form = canonical_form::balanced,
                                              const module_pass& pass = {}) {
  std::atomic<std::size_t> degenerate{0};
  adapter_canonicalization out;
  out.adapter = edit_modules<S>(
      in,
      [&](std::size_t, const auto& e, io::encoded_module& m) {
        const auto c = canonicalize(e, form);
        if (c.degenerate) ++degenerate;
        m.set_factors(c.factors.B(), c.factors.A(), m.scale);
      },
      pass);
  out.degenerate = degenerate.load();
  return out;
}

}  // namespace lola
