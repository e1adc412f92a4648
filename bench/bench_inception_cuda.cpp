// bench/bench_inception_cuda.cpp: Inception v3 on the GPU (models/inception_v3_cuda.h), Google
// Benchmark. Modes: fp32_nhwc (exact, the default layout), fp32_nchw (the NCHW option), tf32,
// fp16; at batch 128 (img/s) and batch 1 (latency). Two kinds of rows: resident (label = mode:
// input already on the GPU, input convert + graph replay, what PyTorch's numbers measure) and host
// (label = mode + "_host": launch()/wait() over the two pinned slots: upload, graph, download,
// what the extract pipeline sees). Timing as bench/gpu/torch_inception_gpu.py does it: CUDA events
// recorded on the model's own stream around `reps` back-to-back calls, reported as manual time per
// call. Counters: img/s, achieved TFLOP/s (11.422 GFLOP per image, convs only), the card's dense
// peak for that precision (H100/H200 SXM: 67 fp32, 495 tf32, 989 fp16 TFLOP/s) and GPU MiB.
//
// Models: one per mode, built on its first row and owned by main()'s scope until the end (no
// model is destroyed between rows or by a static destructor after the CUDA runtime has gone).
// Each is validated when built against the PyTorch reference bottleneck (tests/
// inception_cuda_bounds.h), at batch 128 (the reference images repeated: the plans being timed)
// and at batch 1. A mode whose construction, validation or run fails has its rows reported with
// SkipWithError and the other modes still run; the exit status is then 1. Once per mode at batch
// 128 it prints a per-layer time table (each op timed with events outside the graph).
// Without a GPU it prints why and exits 0, or 1 when ENGINE_REQUIRE_GPU=1 (the device run sets it).
// Weights: $ENGINE_WEIGHTS or $ENGINE_REFERENCE_DIR/inception_v3_1based.h5; reference:
// $ENGINE_REFERENCE_DIR/reference.h5.
// Run: bench/gpu/run_device.sh (on the GPU machine), or
//   ENGINE_REFERENCE_DIR=build/reference build/bench/bench_inception_cuda --benchmark_out=x.json
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "engine/cuda_check.h"
#include "engine/cuda_device.h"
#include "engine/cuda_resources.h"
#include "engine/hdf5_io.h"
#include "models/inception_v3_cuda.h"
#include "tests/inception_cuda_bounds.h"

using namespace engine;

namespace {
constexpr int64_t kMaxBatch = 128;

enum Mode { kFp32Nhwc = 0, kFp32Nchw = 1, kTf32 = 2, kFp16 = 3, kModes = 4 };
const char* mode_name(int m) {
  static const char* n[] = {"fp32_nhwc", "fp32_nchw", "tf32", "fp16"};
  return n[m];
}
Precision mode_precision(int m) {
  return m == kTf32 ? Precision::TF32 : m == kFp16 ? Precision::FP16 : Precision::FP32;
}
double peak_tflops(int m) {  // dense, SXM; 0 when the card is not known
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return 0;
  const std::string name = p.name;
  if (name.find("H100") == std::string::npos && name.find("H200") == std::string::npos) return 0;
  return m == kTf32 ? 495 : m == kFp16 ? 989 : 67;
}

// The reference: input images and PyTorch's float64 bottlenecks for them.
struct Reference {
  Tensor inputs, bottleneck;
  double max_abs = 0;
};

// One mode's model and state, owned by main() (see the header).
struct ModeRun {
  int mode = 0;
  const InceptionWeights* weights = nullptr;
  const Reference* ref = nullptr;
  std::unique_ptr<InceptionV3Cuda> net;
  bool tried = false, printed = false;
  std::string error;  // set once the mode failed: its remaining rows skip with it
};

// The mode's bottlenecks for `n` images (reference image i % refs in row i), each row against its
// image's reference bottleneck; "" when within the bounds, else why not.
std::string check_mode(ModeRun& r, int64_t n) {
  const int64_t refs = r.ref->inputs.n(), img = r.ref->inputs.numel() / refs;
  float* in = r.net->input_slot(0);
  for (int64_t i = 0; i < n; ++i)
    std::copy_n(r.ref->inputs.data() + (i % refs) * img, img, in + i * img);
  r.net->launch(0, n);
  r.net->wait(0);
  const float* out = r.net->output_slot(0);
  const std::string what = std::string(mode_name(r.mode)) + " batch " + std::to_string(n);
  const bool fp32 = mode_precision(r.mode) == Precision::FP32;
  const double bound =
      mode_precision(r.mode) == Precision::TF32 ? test::kTf32MaxRelL2 : test::kFp16MaxRelL2;
  test::Agreement worst;             // largest relative L2, smallest cosine over the rows
  for (int64_t i = 0; i < n; ++i) {  // every row against its image's reference bottleneck
    const float* got = out + i * kBottleneckSize;
    const float* want = r.ref->bottleneck.data() + (i % refs) * kBottleneckSize;
    const std::string where = what + " row " + std::to_string(i) + ": ";
    if (fp32) {
      std::string bad_one;
      const int64_t bad =
          test::fp32_bottleneck_violations(got, want, kBottleneckSize, r.ref->max_abs, &bad_one);
      if (bad)
        return where + std::to_string(bad) + " values outside the fp32 bound, worst " + bad_one;
    } else {
      const test::Agreement a = test::agreement(got, want, kBottleneckSize);
      worst.rel_l2 = std::max(worst.rel_l2, a.rel_l2);
      worst.cosine = std::min(worst.cosine, a.cosine);
      if (!(a.rel_l2 < bound && a.cosine > test::kMinCosine))
        return where + "relative L2 " + std::to_string(a.rel_l2) + " (bound " +
               std::to_string(bound) + "), cosine " + std::to_string(a.cosine);
    }
  }
  if (!fp32)
    std::fprintf(stderr, "%s: worst relative L2 %.3g (bound %.3g), cosine %.7f (bound %.4f)\n",
                 what.c_str(), worst.rel_l2, bound, worst.cosine, test::kMinCosine);
  return "";
}

// Builds and validates the mode's model once; false (with r.error) when that failed.
bool ready(ModeRun& r) {
  if (r.tried) return r.error.empty();
  r.tried = true;
  try {
    InceptionCudaOptions opt;
    opt.fp32_nchw = r.mode == kFp32Nchw;
    r.net = std::make_unique<InceptionV3Cuda>(*r.weights, mode_precision(r.mode), kMaxBatch, opt);
    std::fprintf(stderr,
                 "[%s] model at max batch %lld: %.1f MiB on the GPU (weights %.1f, arena %.1f, "
                 "workspace %.1f), %s\n",
                 mode_name(r.mode), (long long)kMaxBatch, r.net->peak_device_bytes() / 1048576.0,
                 r.net->weight_bytes() / 1048576.0, r.net->activation_bytes() / 1048576.0,
                 r.net->workspace_bytes() / 1048576.0, layout_name(r.net->layout()));
    for (int64_t n : {kMaxBatch, int64_t(1)})
      if (std::string why = check_mode(r, n); !why.empty()) {
        r.error = "validation against the PyTorch reference failed: " + why;
        break;
      }
  } catch (const std::exception& e) {
    r.error = std::string("model: ") + e.what();
  }
  if (r.error.empty())
    std::fprintf(stderr,
                 "validated %s against the PyTorch reference bottleneck (batch 128 and 1)\n",
                 mode_name(r.mode));
  else
    std::fprintf(stderr, "[%s] %s\n", mode_name(r.mode), r.error.c_str());
  return r.error.empty();
}

void print_layer_table(ModeRun& r, int64_t n) {
  if (r.printed) return;
  r.printed = true;
  auto rows = r.net->profile_layers(n, 5);
  double total = 0;
  for (auto& row : rows) total += row.ms;
  const char* name = mode_name(r.mode);
  std::printf("\n== per-layer times, %s, batch %lld (events around each op, eager; sum %.3f ms)\n",
              name, (long long)n, total);
  std::printf("%-48s %9s %7s %9s %7s\n", "op", "ms", "%", "TFLOP/s", "engine");
  for (auto& row : rows)
    std::printf("%-48s %9.4f %6.2f%% %9.2f %7lld\n", row.name.c_str(), row.ms, 100 * row.ms / total,
                row.flops > 0 ? row.flops / (row.ms * 1e-3) / 1e12 : 0.0, (long long)row.engine);
  std::vector<size_t> idx(rows.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return rows[a].ms > rows[b].ms; });
  std::printf("-- slowest 10 (%s):", name);
  for (size_t i = 0; i < std::min<size_t>(10, idx.size()); ++i)
    std::printf(" %s %.3f ms;", rows[idx[i]].name.c_str(), rows[idx[i]].ms);
  std::printf("\n\n");
  std::fflush(stdout);
}

// `reps` back-to-back calls between two events on the model's stream. Host rows alternate the
// slots as the extract pipeline does (wait for a slot before relaunching it).
void run_row(benchmark::State& state, ModeRun& r, int64_t n, bool resident) {
  if (!ready(r)) {
    state.SkipWithError(r.error.c_str());
    return;
  }
  InceptionV3Cuda& net = *r.net;
  const int reps = n == 1 ? 20 : 2;
  bool pending[2] = {false, false};
  auto call = [&](int k) {
    if (resident) return net.replay(n);
    const int s = k & 1;
    if (pending[s]) net.wait(s);
    net.launch(s, n);
    pending[s] = true;
  };
  auto drain = [&] {
    for (int s = 0; s < 2; ++s)
      if (pending[s]) net.wait(s), pending[s] = false;
    CUDA_CHECK(cudaStreamSynchronize(net.stream()), "bench drain");
  };
  try {
    for (int k = 0; k < 4; ++k) call(k);  // warm-up: graph for n exists after validation
    drain();
    if (n == kMaxBatch && resident) print_layer_table(r, n);
    const CudaEvent e0 = CudaEvent::create("bench"), e1 = CudaEvent::create("bench");
    for (auto _ : state) {
      CUDA_CHECK(cudaEventRecord(e0, net.stream()), "bench start event");
      for (int k = 0; k < reps; ++k) call(k);
      CUDA_CHECK(cudaEventRecord(e1, net.stream()), "bench end event");
      CUDA_CHECK(cudaEventSynchronize(e1), "bench end event");
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1), "bench elapsed");
      state.SetIterationTime(double(ms) * 1e-3 / reps);
      drain();
    }
  } catch (const std::exception& e) {
    r.error = std::string("run: ") + e.what();
    state.SkipWithError(r.error.c_str());
    return;
  }
  const double flops = net.flops_per_image() * static_cast<double>(n);
  state.counters["img/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_TFLOP/s"] = peak_tflops(r.mode);
  state.counters["gpu_MiB"] = net.peak_device_bytes() / 1048576.0;
  state.SetLabel(std::string(mode_name(r.mode)) + (resident ? "" : "_host"));
}

bool gpu_required() {  // the setting of tests/test_util.h, read here without gtest
  const char* v = std::getenv("ENGINE_REQUIRE_GPU");
  return v && std::string(v) == "1";
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const CudaAvailability a = cuda_availability();
  if (a.devices == 0) {
    std::printf("bench_inception_cuda: %s, no GPU: %s\n",
                gpu_required() ? "FAILED (ENGINE_REQUIRE_GPU=1)" : "skipped", a.reason.c_str());
    return gpu_required() ? 1 : 0;
  }
  std::printf("GPU: %s\n", a.reason.c_str());
  // Everything the rows use lives in this scope and outlives RunSpecifiedBenchmarks.
  InceptionWeights weights;
  Reference ref;
  try {
    weights = load_inception_v3_weights(bench::weights_path());
    H5File f = H5File::open_read(bench::reference_dir() + "/reference.h5");
    ref.inputs = h5_read_tensor(f.id(), "/inputs", f.path());
    ref.bottleneck = h5_read_tensor(f.id(), "/blocks/bottleneck", f.path());
    for (int64_t i = 0; i < ref.bottleneck.numel(); ++i)
      ref.max_abs = std::max(ref.max_abs, double(std::fabs(ref.bottleneck.data()[i])));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::array<ModeRun, kModes> runs;
  for (int m = 0; m < kModes; ++m) runs[m].mode = m, runs[m].weights = &weights, runs[m].ref = &ref;

  struct Row {
    int mode;
    int64_t batch;
    bool resident;
  };
  // fp32_nhwc is the default mode: it gets every row; fp32_nchw keeps the rows of earlier runs.
  const Row rows[] = {{kFp32Nhwc, 128, true}, {kFp32Nhwc, 128, false}, {kFp32Nhwc, 1, true},
                      {kFp32Nhwc, 1, false},  {kFp32Nchw, 128, true},  {kFp32Nchw, 1, true},
                      {kTf32, 128, true},     {kFp16, 128, true},      {kFp16, 128, false},
                      {kFp16, 1, true}};
  for (const Row& row : rows) {
    ModeRun* r = &runs[row.mode];
    // Names as the earlier BENCHMARK() rows had them (run_device.sh reads batch and label).
    const std::string name = "BM_InceptionV3Cuda/mode:" + std::to_string(row.mode) +
                             "/batch:" + std::to_string(row.batch) +
                             "/resident:" + std::to_string(row.resident ? 1 : 0);
    benchmark::RegisterBenchmark(
        name.c_str(), [r, row](benchmark::State& st) { run_row(st, *r, row.batch, row.resident); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->MinTime(2.0);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  int failed = 0;
  for (const ModeRun& r : runs)
    if (!r.error.empty()) {
      std::fprintf(stderr, "FAILED %s: %s\n", mode_name(r.mode), r.error.c_str());
      ++failed;
    }
  return failed ? 1 : 0;  // the models are destroyed here, in main's scope, before static teardown
}
