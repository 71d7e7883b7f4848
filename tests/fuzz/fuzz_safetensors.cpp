// libFuzzer target: the safetensors reader on arbitrary bytes.
//
// Contract under test: parse either throws lola::error or returns a view whose every tensor lies
// inside the image; decoding a math tensor either succeeds or throws lola::error; a zero-copy map
// is only handed out where it is valid; and a valid image re-serializes to an image that parses to
// the same tensors. Any other exception escapes and aborts; memory errors and undefined behaviour
// are caught by the sanitizers.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/io/dtype.hpp"
#include "lola/io/safetensors.hpp"

namespace {

// Decoding allocates 4 bytes per element; this keeps one input's memory bounded (4 MiB).
constexpr std::uint64_t max_decoded_elements = std::uint64_t(1) << 20;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: invariant violated: %s\n", what);
  std::abort();
}

void exercise(const lola::io::safetensors_view& view, const std::byte* data, std::size_t size) {
  using namespace lola::io;
  for (const auto& t : view.tensors()) {
    if (view.find(t.name) != &t) violated("find() does not return the tensor");
    const std::byte* p = view.bytes(t);
    if (t.end < t.begin || p < data || t.byte_count() > size ||
        static_cast<std::size_t>(p - data) > size - t.byte_count())
      violated("a tensor lies outside the image");
    if (!is_math_dtype(t.dtype) || t.element_count() > max_decoded_elements) continue;
    try {
      const auto m = view.matrix<float>(t);
      if (static_cast<std::uint64_t>(m.size()) != t.element_count()) violated("matrix size");
      if (t.element_count() == 1) {
        const double s = view.scalar(t);
        const float first = m(0, 0);
        if (!(s != s) && static_cast<float>(s) != first) violated("scalar() disagrees with matrix()");
      }
    } catch (const lola::error&) {
      // e.g. a zero-size tensor with a dimension beyond the index range
    }
    if (const auto mapped = view.map<float>(t)) {
      if (t.dtype != dtype::F32) violated("map<float> of a tensor that is not F32");
      if (static_cast<const void*>(mapped->data()) != static_cast<const void*>(p)) violated("map is a copy");
      if (reinterpret_cast<std::uintptr_t>(p) % alignof(float) != 0) violated("map of a misaligned pointer");
      volatile float sink = 0;
      for (Eigen::Index i = 0; i < mapped->size(); ++i) sink = sink + mapped->data()[i];
      (void)sink;
    }
  }
}

void round_trip(const lola::io::safetensors_view& view) {
  using namespace lola::io;
  std::vector<tensor> copies;
  copies.reserve(view.tensors().size());
  for (const auto& t : view.tensors()) copies.push_back(tensor::copy_of(view, t));
  // Everything the reader accepted must be writable and read back unchanged; a lola::error here
  // is a disagreement between reader and writer, so it is not caught.
  const auto bytes = serialize_safetensors(copies, view.metadata());
  const auto again = safetensors_view::parse(bytes.data(), bytes.size(), "re-serialized");
  if (again.tensors().size() != view.tensors().size()) violated("round trip: tensor count");
  if (again.metadata() != view.metadata()) violated("round trip: metadata");
  for (const auto& t : view.tensors()) {
    const auto* u = again.find(t.name);
    if (!u || u->dtype != t.dtype || u->shape != t.shape || u->byte_count() != t.byte_count() ||
        (t.byte_count() && std::memcmp(view.bytes(t), again.bytes(*u), t.byte_count()) != 0))
      violated("round trip: a tensor changed");
    const unsigned element = dtype_bits(u->dtype) >= 8 ? dtype_bits(u->dtype) / 8 : 1;
    if ((again.data_offset() + u->begin) % element != 0) violated("round trip: writer misaligned a tensor");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  lola::io::safetensors_view view;
  try {
    view = lola::io::safetensors_view::parse(bytes, size, "fuzz.safetensors");
  } catch (const lola::error&) {
    return 0;
  }
  exercise(view, bytes, size);
  round_trip(view);
  return 0;
}
