// libFuzzer target: the GL-net weights reader (nn/gl_net_weights.hpp) on arbitrary safetensors
// images, then a forward pass of what was read on a small adapter of the shapes it takes, and the
// writer and reader again on the result.
//
// Contract under test: reading throws lola::error or returns a network that validates, whose
// forward pass gives one finite-or-not row of outputs() values per adapter without crashing, and
// whose tensors the reader reads back to the same shapes. Any other exception escapes and aborts.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "lola/core/error.hpp"
#include "lola/io/safetensors.hpp"
#include "lola/nn/gl_net_weights.hpp"

namespace {

// Bounds one input's work: the forward pass costs about h·Σ(n_j + m_j)·r + H·F per adapter.
constexpr double max_forward_work = double(1 << 22);

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_gl_net: invariant violated: %s\n", what);
  std::abort();
}

void exercise(const lola::nn::gl_net<float>& net) {
  const lola::index r = 2, L = net.modules(), h = net.hidden_size();
  double work = static_cast<double>(net.head.hidden_size()) * static_cast<double>(net.head.input_size());
  for (lola::index j = 0; j < L; ++j) {
    const auto [n, m] = net.module_shape(j);
    work += static_cast<double>(h) * static_cast<double>(n + m) * r;
  }
  work += static_cast<double>(net.depth()) * static_cast<double>(L) * static_cast<double>(h * h) * r;
  if (work > max_forward_work) return;

  lola::io::adapter<float> a;
  for (lola::index j = 0; j < L; ++j) {
    const auto [n, m] = net.module_shape(j);
    lola::io::adapter_module<float> module;
    module.name = "m" + std::to_string(1000000 + j);  // key order = j
    module.B = lola::io::adapter_module<float>::matrix::Constant(n, r, 0.5f);
    module.A = lola::io::adapter_module<float>::matrix::Constant(r, m, -0.25f);
    a.modules.push_back(std::move(module));
  }
  const auto y = net.forward(a);
  if (y.size() != net.outputs()) violated("output size differs from outputs()");

  const auto bytes = lola::io::serialize_safetensors(lola::nn::gl_net_tensors(net));
  const auto again = lola::io::safetensors_file::from_bytes(bytes, "round trip");
  const auto back = lola::nn::read_gl_net<float>(again.view()).net;
  if (back.modules() != L || back.depth() != net.depth() || back.outputs() != net.outputs() ||
      back.head.pool != net.head.pool)
    violated("the written weights read back differently");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = lola::io::safetensors_view::parse(reinterpret_cast<const std::byte*>(data), size, "fuzz");
    std::uint64_t total = 0;
    for (const auto& t : file.tensors()) total += t.element_count();
    if (total > (std::uint64_t(1) << 22)) return 0;
    const auto weights = lola::nn::read_gl_net<float>(file);
    weights.net.validate();
    exercise(weights.net);
  } catch (const lola::error&) {
  }
  return 0;
}
