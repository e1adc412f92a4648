// bench/bench_inception.cpp: Inception v3 CPU forward, batch 1 and 8, in images/s and GFLOP/s
// (11.46 GFLOP per image, counted from the conv table), with the activation memory the pool
// reserved and the process's peak RSS. Validates first: the bottleneck of the reference images
// must match the PyTorch reference before anything is timed.
//   ENGINE_WEIGHTS=build/reference/inception_v3_1based.h5 build/bench/bench_inception
// bench/run_cpu.sh runs it beside bench/torch_inception_cpu.py on the same weights.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <memory>

#include "bench/bench_util.h"
#include "engine/hdf5_io.h"
#include "models/inception_v3.h"

using namespace engine;

namespace {
InceptionV3Cpu& model() {
  static std::unique_ptr<InceptionV3Cpu> m =
      std::make_unique<InceptionV3Cpu>(load_inception_v3_weights(bench::weights_path()));
  return *m;
}

// Compare with the PyTorch bottleneck (same tolerance as tests/test_inception.cpp).
bool validate() {
  H5File f = H5File::open_read(bench::reference_dir() + "/reference.h5");
  Tensor x = h5_read_tensor(f.id(), "/inputs", f.path());
  Tensor want = h5_read_tensor(f.id(), "/blocks/bottleneck", f.path());
  Tensor got(Shape{x.n(), kBottleneckSize});
  model().forward(x, got);
  for (int64_t i = 0; i < got.numel(); ++i)
    if (!(std::fabs(got.data()[i] - want.data()[i]) <= 2e-5 + 1e-4 * std::fabs(want.data()[i]))) {
      std::fprintf(stderr, "validation failed at %lld: %g vs %g\n", (long long)i, got.data()[i],
                   want.data()[i]);
      return false;
    }
  std::fprintf(stderr, "validated against the PyTorch reference bottleneck\n");
  return true;
}

void BM_InceptionV3Cpu(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = Tensor::zeros(Shape{n, 299, 299, 3});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::sin(0.001f * static_cast<float>(i));
  Tensor b(Shape{n, kBottleneckSize});
  model().forward(x, b);  // warm-up: primitives created, pool filled
  for (auto _ : state) {
    model().forward(x, b);
    benchmark::DoNotOptimize(b.data());
  }
  state.counters["img/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(n * model().flops_per_image() / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["act_MiB"] = model().activation_bytes() / 1048576.0;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["peak_rss_MiB"] = ru.ru_maxrss / 1024.0;
}
BENCHMARK(BM_InceptionV3Cpu)
    ->Arg(1)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(5.0);
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  return bench::validate_then_run(validate);
}
