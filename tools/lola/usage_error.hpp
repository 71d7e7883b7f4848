#pragma once
// A mistake in the command line (an unknown option, a missing value, a value out of range, an
// output that is one of the inputs): the tool reports it as one line naming the subcommand and
// exits 2. Anything wrong with the files themselves is a lola::error instead (exit 1).

#include <stdexcept>

namespace lola_cli {

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace lola_cli
