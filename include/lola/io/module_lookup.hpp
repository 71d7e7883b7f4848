#pragma once
/// @file
/// Modules found by name: the one home for matching the modules of two adapters (a template's in
/// O-Align, the sources of a merge). basic_adapter::find scans the modules, so matching every module
/// of an adapter that way costs O(L²) name comparisons (10⁸ for a 10000-module pattern file); a
/// lookup hashes each name once, O(L) to build and O(1) per query. It borrows the adapter's modules
/// and names: the adapter must outlive it and keep its modules unchanged.

#include <cstddef>
#include <string_view>
#include <unordered_map>

#include "lola/io/adapter.hpp"

namespace lola::io {

template <class Module>
class module_lookup {
 public:
  /// Of equal names (which a file cannot hold, but an adapter built in memory can), the first
  /// module, as basic_adapter::find answers.
  explicit module_lookup(const basic_adapter<Module>& a) : modules_(&a.modules) {
    position_.reserve(a.modules.size());
    for (std::size_t i = 0; i < a.modules.size(); ++i) position_.emplace(a.modules[i].name, i);
  }

  /// The module called `name`, or nullptr.
  const Module* find(std::string_view name) const noexcept {
    const auto it = position_.find(name);
    return it == position_.end() ? nullptr : &(*modules_)[it->second];
  }

 private:
  const std::vector<Module>* modules_;
  std::unordered_map<std::string_view, std::size_t> position_;
};

template <class Module>
module_lookup(const basic_adapter<Module>&) -> module_lookup<Module>;

}  // namespace lola::io
