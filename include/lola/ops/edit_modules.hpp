#pragma once
/// @file
/// One pass that rewrites every module of an adapter read as its file stores it (io::adapter_view)
/// into an io::encoded_adapter, with no decoded copy of either: each module's factors are read in
/// the compute scalar S as the kernels widen them, the edit computes the new factors, and
/// encoded_module::set_factors encodes them into the file's dtypes. Everything else (passthrough
/// tensors, extras, metadata, config, dialect) is carried as encoded_adapter::copy_of carries it.
/// The modules run in parallel on the pass's executor; the output does not depend on the thread
/// count. What whole-adapter canonical forms and resizes are built on
/// (canon/canonicalize_adapter.hpp, ops/resize_adapter.hpp).

#include <cstddef>
#include <string>

#include "lola/backend/eigen/matrix.hpp"
#include "lola/core/error.hpp"
#include "lola/core/parallel.hpp"
#include "lola/expr/low_rank.hpp"
#include "lola/io/adapter_view.hpp"
#include "lola/io/encoded_adapter.hpp"

namespace lola {

/// The encoded copy of `in` with module i replaced by edit(i, e, out): e = s·B·A, module i of `in`
/// as a low-rank expression of S (its stored factors read as S, its scale), and out the module's
/// encoded_module, whose set_factors the edit calls (a module whose factors it does not set keeps
/// them). Each module's factors are read once (encoded_adapter::frame_of: none copied first). An
/// error from module i is rethrown prefixed with `module "<name>": ` (in_context); of several,
/// the first in module order.
template <class S = double, class Edit>
io::encoded_adapter edit_modules(const io::adapter_view& in, Edit&& edit, const module_pass& pass = {}) {
  io::encoded_adapter out = io::encoded_adapter::frame_of(in);
  const std::size_t n = in.modules.size();
  parallel_for(pass.ex, static_cast<index>(n), [&](index i) {
    const io::module_view& m = in.modules[static_cast<std::size_t>(i)];
    try {
      io::encoded_module& target = out.modules[static_cast<std::size_t>(i)];
      m.visit([&](const auto& B, const auto& A) {
        using detail::as_compute;
        edit(static_cast<std::size_t>(i), factor(as_compute<S>(B), as_compute<S>(A), static_cast<S>(m.scale)), target);
      });
      if (!target.has_factors()) target.copy_factors_of(m);  // an edit that kept the module
    } catch (const error& e) {
      throw in_context("module \"" + m.name + "\"", e);
    }
    if (pass.module_done) pass.module_done(n);
  });
  return out;
}

}  // namespace lola
