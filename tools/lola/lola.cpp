// lola: inspect, canonicalize, resize, merge and align LoRA adapters (PEFT directories and
// .safetensors files in the PEFT or kohya dialect), from their factors; run a GL-net on them or
// write their features. The command line and exit codes are described in run.hpp.
#include <cstdio>
#include <exception>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "run.hpp"

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Every module's work allocates and frees factor-sized buffers (0.5 MB for a 4096×16 double
  // factor) many times. By default glibc serves each from a fresh mmap, or returns freed heap top
  // above 128 KiB to the kernel, so the next module faults and zeroes the pages again: 40% of
  // `lola canonicalize` on a Llama-2-7B adapter. Kept in the process instead, the pages are reused
  // (benchmarks/PROCESS.md); the file images themselves (> 64 MiB) are still mapped and unmapped.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  try {
    return lola_cli::run(argc, argv);
  } catch (const std::exception& e) {
    // run() maps every error it expects; anything else is a bug in lola, reported rather than
    // ending in std::terminate. (The fuzz target calls run() directly, so there it is a finding.)
    std::fprintf(stderr, "lola: internal error: %s\n", lola::io::printable(e.what()).c_str());
    return 1;
  }
}
