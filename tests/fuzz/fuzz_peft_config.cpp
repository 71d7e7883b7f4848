// libFuzzer target: adapter_config.json together with module names (tests/fuzz/peft_config_input.hpp
// gives the input format and the contract): the config is parsed, its rank_pattern / alpha_pattern
// keys compiled (literal trie, RE2), and every name matched, the compiled set checked against
// matching key by key. Pathological patterns (catastrophic backtracking, deep nesting, huge counts)
// must give a result or a lola::error within the run's -timeout, never a crash or a spin.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "peft_config_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string broken = lola_fuzz::check_peft_config_input(data, size);
  if (!broken.empty()) {
    std::fprintf(stderr, "fuzz_peft_config: contract violated: %s\n", broken.c_str());
    std::abort();
  }
  return 0;
}
