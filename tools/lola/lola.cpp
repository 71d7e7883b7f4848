// lola: inspect, canonicalize, resize, merge and align LoRA adapters (PEFT directories and
// .safetensors files in the PEFT or kohya dialect), from their factors; run a GL-net on them or
// write their features. The command line and exit codes are described in run.hpp.
#include <cstdio>
#include <exception>

#include "run.hpp"

int main(int argc, char** argv) {
  try {
    return lola_cli::run(argc, argv);
  } catch (const std::exception& e) {
    // run() maps every error it expects; anything else is a bug in lola, reported rather than
    // ending in std::terminate. (The fuzz target calls run() directly, so there it is a finding.)
    std::fprintf(stderr, "lola: internal error: %s\n", lola::io::printable(e.what()).c_str());
    return 1;
  }
}
