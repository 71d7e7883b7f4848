// libFuzzer target: the PEFT and kohya dialect readers on arbitrary safetensors images, first
// without an adapter_config.json, then with a fixed small PEFT config (r, lora_alpha, rank_pattern,
// alpha_pattern, use_rslora), and the dialect writers on whatever was read.
//
// Contract under test: reading throws lola::error or returns modules whose factors have the shapes
// they claim; writing an adapter that was read throws lola::error or gives tensors the safetensors
// writer accepts. Any other exception escapes and aborts.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "lola/core/error.hpp"
#include "lola/io/json.hpp"
#include "lola/io/kohya.hpp"
#include "lola/io/load.hpp"
#include "lola/io/peft.hpp"
#include "lola/io/safetensors.hpp"

namespace {

// Bounds one input's work and memory: the readers decode every factor to float.
constexpr std::uint64_t max_total_elements = std::uint64_t(1) << 22;

const lola::io::json_value& fixed_config() {
  static const lola::io::json_value config = lola::io::parse_json(R"({
    "peft_type": "LORA",
    "r": 4,
    "lora_alpha": 8,
    "use_rslora": true,
    "rank_pattern": {"q_proj": 2, "layers\\.1\\..*": 8},
    "alpha_pattern": {"v_proj": 16}
  })", "fuzz adapter_config.json");
  return config;
}

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_adapter: invariant violated: %s\n", what);
  std::abort();
}

template <class S>
void check(const lola::io::adapter<S>& a) {
  for (const auto& m : a.modules) {
    if (m.A.rows() != m.B.cols()) violated("A and B ranks differ");
    if (m.rank() < 1) violated("rank 0 module");
    if (!(m.scale == m.scale)) violated("NaN scale");
  }
}

template <class S>
void write_back(const lola::io::adapter<S>& a) {
  using namespace lola::io;
  try {
    const auto tensors = a.format == adapter_format::kohya ? kohya_tensors(a) : peft_tensors(a);
    const auto bytes = serialize_safetensors(tensors, a.metadata);
    const auto view = safetensors_view::parse(bytes.data(), bytes.size(), "written back");
    (void)view;
    if (a.format == adapter_format::peft) (void)peft_config_json(a).dump(2);
  } catch (const lola::error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lola::io;
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  safetensors_view view;
  try {
    view = safetensors_view::parse(bytes, size, "fuzz adapter_model.safetensors");
  } catch (const lola::error&) {
    return 0;
  }
  std::uint64_t total = 0;
  for (const auto& t : view.tensors()) {
    const std::uint64_t n = t.element_count();
    if (n > max_total_elements || (total += n) > max_total_elements) return 0;
  }
  for (const json_value* config : {static_cast<const json_value*>(nullptr), &fixed_config()}) {
    try {
      const auto a = read_adapter<float>(view, config);
      check(a);
      write_back(a);
    } catch (const lola::error&) {
    }
  }
  return 0;
}
