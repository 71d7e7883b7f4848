// libFuzzer target: the PEFT and kohya dialect readers on arbitrary safetensors images, first
// without an adapter_config.json, then with a fixed small PEFT config (r, lora_alpha, rank_pattern,
// alpha_pattern, use_rslora), and the dialect writers on whatever was read.
//
// Contract under test: reading throws lola::error or returns modules whose factors have the shapes
// they claim; writing an adapter that was read throws lola::error or gives tensors the safetensors
// writer accepts; reading the factors as stored (io/adapter_view.hpp's module_view) fails exactly
// when decoding them to double does, with the same message, and otherwise gives the same modules
// and the same singular values, bit for bit; the image as a file (a memfd), opened as an
// adapter_view that reads its factors on visit (every module, those of 64 bytes or more, or those
// of the default threshold or more), fails as the view read at open does (at open, or,
// for a factor that is not finite, when σ reads it, with the same message, or at open on a later
// module's layout, which the read at open reaches after the non-finite factor) and otherwise gives
// the same modules, passthrough tensors and singular values, bit for bit. Any other exception
// escapes and aborts.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lola/core/error.hpp"
#include "lola/features/adapter_spectra.hpp"
#include "lola/io/adapter_view.hpp"
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

/// The same image read decoded to double and as stored: the same outcome.
void compare_with_view(const lola::io::safetensors_view& view, const lola::io::json_value* config) {
  using namespace lola::io;
  std::string decoded_error, view_error;
  adapter<double> decoded;
  basic_adapter<module_view> stored;
  try {
    decoded = read_adapter<double>(view, config);
  } catch (const lola::error& e) {
    decoded_error = e.what();
  }
  try {
    if (detect_format(view) == adapter_format::kohya)
      read_kohya_into(stored, view);
    else
      read_peft_into(stored, view, config);
  } catch (const lola::error& e) {
    view_error = e.what();
  }
  if (decoded_error != view_error) violated("the view and the decoded reader disagree on an error");
  if (!decoded_error.empty()) return;
  if (stored.modules.size() != decoded.modules.size()) violated("the view has other modules");
  for (std::size_t i = 0; i < stored.modules.size(); ++i)
    if (stored.modules[i].name != decoded.modules[i].name || stored.modules[i].scale != decoded.modules[i].scale ||
        stored.modules[i].rows() != decoded.modules[i].rows() || stored.modules[i].rank() != decoded.modules[i].rank())
      violated("a module of the view differs");
  double flops = 0;  // the factor-space SVD's O((d + k)·r² + r³) per module: bounded per input
  for (const auto& m : stored.modules)
    flops += double(m.rank()) * double(m.rank()) * double(m.rows() + m.cols() + m.rank());
  if (flops > 1e8) return;
  std::string sigma_error_view, sigma_error_decoded;
  std::vector<Eigen::VectorXd> sigma_view, sigma_decoded;
  try {
    sigma_view = lola::adapter_singular_values<double>(stored, lola::executor::serial());
  } catch (const lola::error& e) {
    sigma_error_view = e.what();
  }
  try {
    sigma_decoded = lola::adapter_singular_values<double>(decoded, lola::executor::serial());
  } catch (const lola::error& e) {
    sigma_error_decoded = e.what();
  }
  if (sigma_error_view != sigma_error_decoded) violated("σ fails for one reader only");
  for (std::size_t i = 0; i < sigma_view.size(); ++i)
    if (!(sigma_view[i].array() == sigma_decoded[i].array()).all()) violated("σ from the view differ");
}

/// The outcome of opening path as an adapter_view and computing σ: the error, or the modules'
/// names, scales and σ and the passthrough tensors.
struct view_outcome {
  std::string open_error, sigma_error;
  std::vector<std::string> names, passthrough;
  std::vector<double> scales;
  std::vector<Eigen::VectorXd> sigma;
  bool sigma_skipped = false;  ///< beyond the per-input work bound
};
view_outcome outcome_of(const std::string& path, lola::io::factor_reads reads,
                        const lola::io::load_options& options = {}) {
  using namespace lola::io;
  view_outcome out;
  try {
    const auto a = adapter_view::open(path, options, reads);
    for (const auto& m : a.modules) {
      out.names.push_back(m.name);
      out.scales.push_back(m.scale);
    }
    for (const auto& t : a.passthrough)
      out.passthrough.push_back(t.name + std::string(reinterpret_cast<const char*>(t.data.data()), t.data.size()));
    double flops = 0;
    for (const auto& m : a.modules) flops += double(m.rank()) * double(m.rank()) * double(m.rows() + m.cols() + m.rank());
    out.sigma_skipped = flops > 1e8;
    if (out.sigma_skipped) return out;
    try {
      out.sigma = lola::adapter_singular_values<double>(a, lola::executor::serial());
    } catch (const lola::error& e) {
      out.sigma_error = e.message();
    }
  } catch (const lola::error& e) {
    out.open_error = e.message();
  }
  return out;
}

/// The image as a file, read at open and on visit: the same outcome (see the file comment).
void compare_reads(const std::uint8_t* data, std::size_t size) {
#if defined(__linux__)
  const int fd = ::memfd_create("fuzz_adapter", MFD_CLOEXEC);
  if (fd < 0) return;
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_fd{fd};
  for (std::size_t done = 0; done < size;) {
    const ssize_t w = ::write(fd, data + done, size - done);
    if (w <= 0) return;
    done += static_cast<std::size_t>(w);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  using lola::io::factor_reads;
  const view_outcome at_open = outcome_of(path, factor_reads::at_open);
  // Every module read on visit, modules under 64 bytes read at open (a mix, on these small
  // images), or the default threshold: chosen by the input's size.
  lola::io::load_options options;
  if (size % 3 < 2) options.min_bytes_read_on_visit = size % 3 == 0 ? 0 : 64;
  const view_outcome on_visit = outcome_of(path, factor_reads::on_visit, options);
  if (!at_open.open_error.empty()) {
    // A non-finite factor fails the open read at open, and σ read on visit (prefixed with the
    // module); unless a later module's layout fails the open on visit first.
    const bool non_finite = at_open.open_error.find("is not finite") != std::string::npos;
    const bool same = on_visit.open_error == at_open.open_error ||
                      (non_finite && !on_visit.open_error.empty()) ||
                      (on_visit.open_error.empty() &&
                       (on_visit.sigma_skipped || on_visit.sigma_error.find(at_open.open_error) != std::string::npos));
    if (!same) violated("reading factors on visit fails otherwise than at open");
    return;
  }
  if (!on_visit.open_error.empty()) violated("only the view reading factors on visit fails to open");
  if (on_visit.names != at_open.names || on_visit.scales != at_open.scales) violated("the modules differ on visit");
  if (on_visit.passthrough != at_open.passthrough) violated("the passthrough tensors differ on visit");
  if (on_visit.sigma_error != at_open.sigma_error) violated("σ fails otherwise on visit");
  if (on_visit.sigma.size() != at_open.sigma.size()) violated("σ has other modules on visit");
  for (std::size_t i = 0; i < at_open.sigma.size(); ++i)
    if (!(on_visit.sigma[i].array() == at_open.sigma[i].array()).all()) violated("σ differs on visit");
#else
  (void)data;
  (void)size;
#endif
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
    compare_with_view(view, config);
  }
  compare_reads(data, size);
  return 0;
}
