// bench/bench_kernels_cuda.cpp: GPU kernel benchmark driven by the kernel case tables of the tests
// (tests/kernel_cases.h, tests/kernel_cases_layers.h; runners in tests/kernel_cases_cuda.h), so
// every timed row is a row the tests check. Each benchmark validates its case once against the
// CPU kernel at the test's tolerance (a mismatch is a SkipWithError naming the worst element),
// warms up, then times `kReps` launches per iteration with CUDA events on a non-blocking stream.
// Counters: GB/s from the case's declared bytes (what the op must read and write), GFLOP/s where
// the case declares FLOPs (dense, dense_grad, conv2d), and copy_GB/s: device-to-device
// cudaMemcpyAsync bandwidth (read + write) measured once in the same run, the practical peak that
// the memory-bound kernels (dropout, softmax_xent, rmsprop, pool2d) should approach.
// The copy_device_to_device row prints that copy on its own line too. Without a GPU (or on any CUDA
// error) each benchmark is skipped with the reason; the program still exits 0, except without a GPU
// under ENGINE_REQUIRE_GPU=1 (the device run), where it exits 1 at once.
// Run: build/bench/bench_kernels_cuda [--benchmark_filter=rmsprop]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <string>

#include "engine/cuda_check.h"
#include "engine/cuda_device.h"
#include "engine/cuda_resources.h"
#include "tests/kernel_cases.h"
#include "tests/kernel_cases_cuda.h"
#include "tests/kernel_cases_layers.h"
#include "tests/test_util.h"

using namespace engine;
using namespace engine::kernel_cases;

namespace {

constexpr int kReps = 20;                         // launches between two events
constexpr size_t kCopyBytes = size_t(256) << 20;  // 256 MiB: far beyond L2 (50 MiB on H100)

const CudaAvailability& gpu() {
  static const CudaAvailability a = cuda_availability();
  return a;
}

// Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second), or 0 when it
// cannot be measured.
double measure_copy_gbs() {
  const CudaStream s = CudaStream::create("copy bandwidth");
  const DeviceBuffer<char> a(kCopyBytes, "copy source"), b(kCopyBytes, "copy destination");
  a.zero(s, "copy source");
  const CudaEvent e0 = CudaEvent::create("copy"), e1 = CudaEvent::create("copy");
  CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), kCopyBytes, cudaMemcpyDeviceToDevice, s),
             "copy warm-up");
  CUDA_CHECK(cudaEventRecord(e0, s), "copy");
  for (int i = 0; i < kReps; ++i)
    CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), kCopyBytes, cudaMemcpyDeviceToDevice, s),
               "copy");
  CUDA_CHECK(cudaEventRecord(e1, s), "copy");
  CUDA_CHECK(cudaEventSynchronize(e1), "copy");
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1), "copy");
  return 2.0 * double(kCopyBytes) * kReps / (double(ms) * 1e-3) / 1e9;
}
double copy_gbs() {
  static const double v = [] {
    try {
      return measure_copy_gbs();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "copy bandwidth: %s\n", e.what());
      return 0.0;
    }
  }();
  return v;
}

bool skip_without_gpu(benchmark::State& st) {
  if (gpu().devices > 0) return false;
  st.SkipWithError(("no GPU: " + gpu().reason).c_str());
  return true;
}

void BM_CopyDeviceToDevice(benchmark::State& st) {
  if (skip_without_gpu(st)) return;
  try {
    const double gbs = copy_gbs();
    for (auto _ : st) st.SetIterationTime(2.0 * double(kCopyBytes) / (gbs * 1e9));
    st.counters["GB/s"] = gbs;
    st.SetLabel("cudaMemcpyAsync D2D 256 MiB, read + write");
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

// Validate once against the CPU kernel (the Cuda test's comparison), then time.
template <typename F>
void run_case(benchmark::State& st, const typename F::Case& c) {
  if (skip_without_gpu(st)) return;
  try {
    const typename F::Inputs in = F::inputs(c);
    const CudaStream s = CudaStream::create(std::string("bench ") + F::kName);
    auto run = cuda_run(c, in, s);
    for (int i = 0; i < run->launches(); ++i) run->launch(s);
    const Outputs got = run->download(s), want = F::cpu(c, in);
    for (size_t i = 0; i < want.size(); ++i) {
      const Tol t = F::tol(c, Device::CUDA, in, want[i]);
      const auto r =
          test::tensors_close(got[i].v.data(), want[i].v.data(),
                              static_cast<int64_t>(want[i].v.size()), t.atol, t.rtol, want[i].name);
      if (!r) {
        st.SkipWithError(
            ("validation against the CPU kernel failed: " + std::string(r.message())).c_str());
        return;
      }
    }
    const CudaEvent e0 = CudaEvent::create("bench"), e1 = CudaEvent::create("bench");
    for (auto _ : st) {
      CUDA_CHECK(cudaEventRecord(e0, s), "bench");
      for (int i = 0; i < kReps; ++i) run->launch(s);
      CUDA_CHECK(cudaEventRecord(e1, s), "bench");
      CUDA_CHECK(cudaEventSynchronize(e1), "bench");
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1), "bench");
      st.SetIterationTime(double(ms) * 1e-3 / kReps);  // one launch per iteration
    }
    st.counters["GB/s"] =
        benchmark::Counter(c.bytes() / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    if (c.flops() > 0)
      st.counters["GFLOP/s"] =
          benchmark::Counter(c.flops() / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["copy_GB/s"] = copy_gbs();
    st.SetLabel(F::kCudaEntry);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

template <typename F>
void register_family() {
  for (const typename F::Case& c : F::cases(Device::CUDA))
    benchmark::RegisterBenchmark((std::string(F::kName) + "/" + std::string(c.name)).c_str(),
                                 [c](benchmark::State& st) { run_case<F>(st, c); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (gpu().devices > 0) {
    std::printf("GPU: %s\n", gpu().reason.c_str());
  } else if (test::gpu_required()) {  // the device run: no GPU there is a failure
    std::printf("bench_kernels_cuda: FAILED, ENGINE_REQUIRE_GPU=1 but no GPU (%s)\n",
                gpu().reason.c_str());
    return 1;
  } else {
    std::printf("bench_kernels_cuda: no GPU (%s): every benchmark is skipped\n",
                gpu().reason.c_str());
  }
  benchmark::RegisterBenchmark("copy_device_to_device", BM_CopyDeviceToDevice)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  register_family<Dropout>();
  register_family<SoftmaxXent>();
  register_family<RmsProp>();
  register_family<Dense>();
  register_family<DenseGrad>();
  register_family<Pool2d>();
  register_family<Conv2d>();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
