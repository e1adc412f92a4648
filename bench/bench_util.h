// bench/bench_util.h: what the two Inception v3 benchmarks (bench_inception.cpp on the CPU,
// bench_inception_cuda.cpp on the GPU) share: where the reference files and the weights are, and
// main()'s tail that validates before anything is timed.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace bench {

// $ENGINE_REFERENCE_DIR, else build/reference (relative: run from the repository root).
inline std::string reference_dir() {
  const char* d = std::getenv("ENGINE_REFERENCE_DIR");
  return d ? d : "build/reference";
}

// $ENGINE_WEIGHTS, else the reference dir's inception_v3_1based.h5.
inline std::string weights_path() {
  const char* w = std::getenv("ENGINE_WEIGHTS");
  return w ? w : reference_dir() + "/inception_v3_1based.h5";
}

// Runs validate() and, only when it passes, the benchmarks named on the command line
// (benchmark::Initialize already called): a timing of a wrong network is worth nothing.
// Returns main()'s exit code; a throw is reported as one line.
inline int validate_then_run(bool (*validate)()) {
  try {
    if (!validate()) return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
