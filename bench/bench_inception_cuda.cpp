// bench/bench_inception_cuda.cpp: Inception v3 on the GPU (models/inception_v3_cuda.h), Google
// Benchmark. Modes: fp32 (exact, NCHW default and NHWC), tf32, fp16, at batch 128 (img/s) and
// batch 1 (latency), each a host-to-host forward (pinned staging + CUDA graph replay + bottleneck
// download), timed with CUDA events around the call and reported as manual time. Counters: img/s,
// ms per batch, achieved TFLOP/s (11.422 GFLOP per image, convs only) and % of the card's dense
// peak for that precision (H100/H200 SXM: 67 fp32, 495 tf32, 989 fp16 TFLOP/s). Before timing it
// validates fp32 against the PyTorch reference bottleneck, and it prints, once per mode at batch
// 128, a per-layer time table (each op timed with events outside the graph) and the chosen engines.
// Without a GPU it prints why and exits 0. Weights: $ENGINE_WEIGHTS or
// $ENGINE_REFERENCE_DIR/inception_v3_1based.h5; reference: $ENGINE_REFERENCE_DIR/reference.h5.
// Run: bench/gpu/run_device.sh (on the GPU machine), or
//   ENGINE_REFERENCE_DIR=build/reference build/bench/bench_inception_cuda --benchmark_out=x.json
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "bench/bench_util.h"
#include "engine/cuda_check.h"
#include "engine/cuda_device.h"
#include "engine/cuda_resources.h"
#include "engine/hdf5_io.h"
#include "models/inception_v3_cuda.h"

using namespace engine;

namespace {
constexpr int64_t kMaxBatch = 128;

const InceptionWeights& weights() {
  static InceptionWeights w = load_inception_v3_weights(bench::weights_path());
  return w;
}

enum Mode { kFp32Nchw = 0, kFp32Nhwc = 1, kTf32 = 2, kFp16 = 3 };
const char* mode_name(int m) {
  static const char* n[] = {"fp32_nchw", "fp32_nhwc", "tf32", "fp16"};
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

InceptionV3Cuda& model(int m) {
  static std::map<int, std::unique_ptr<InceptionV3Cuda>> models;
  auto it = models.find(m);
  if (it != models.end()) return *it->second;
  // One model at a time keeps GPU memory to one arena: drop the others.
  models.clear();
  InceptionCudaOptions opt;
  opt.fp32_nchw = m == kFp32Nchw;
  auto p = std::make_unique<InceptionV3Cuda>(weights(), mode_precision(m), kMaxBatch, opt);
  std::fprintf(stderr,
               "[%s] model at max batch %lld: %.1f MiB on the GPU (weights %.1f, arena %.1f, "
               "workspace %.1f)\n",
               mode_name(m), (long long)kMaxBatch, p->peak_device_bytes() / 1048576.0,
               p->weight_bytes() / 1048576.0, p->activation_bytes() / 1048576.0,
               p->workspace_bytes() / 1048576.0);
  return *models.emplace(m, std::move(p)).first->second;
}

void print_layer_table(int m, InceptionV3Cuda& net, int64_t n) {
  static std::set<int> printed;
  if (!printed.insert(m).second) return;
  auto rows = net.profile_layers(n, 5);
  double total = 0;
  for (auto& r : rows) total += r.ms;
  std::printf("\n== per-layer times, %s, batch %lld (events around each op, eager; sum %.3f ms)\n",
              mode_name(m), (long long)n, total);
  std::printf("%-48s %9s %7s %9s %7s\n", "op", "ms", "%", "TFLOP/s", "engine");
  for (auto& r : rows)
    std::printf("%-48s %9.4f %6.2f%% %9.2f %7lld\n", r.name.c_str(), r.ms, 100 * r.ms / total,
                r.flops > 0 ? r.flops / (r.ms * 1e-3) / 1e12 : 0.0, (long long)r.engine);
  std::vector<size_t> idx(rows.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return rows[a].ms > rows[b].ms; });
  std::printf("-- slowest 10 (%s):", mode_name(m));
  for (size_t i = 0; i < std::min<size_t>(10, idx.size()); ++i)
    std::printf(" %s %.3f ms;", rows[idx[i]].name.c_str(), rows[idx[i]].ms);
  std::printf("\n\n");
  std::fflush(stdout);
}

std::vector<float> test_input(int64_t n) {
  std::vector<float> x(static_cast<size_t>(n * 299 * 299 * 3));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.001f * static_cast<float>(i));
  return x;
}

// range(2): 1 = resident (input already on the GPU, graph replay only: what PyTorch's numbers
// measure), 0 = host to host (pinned staging, upload, graph, download: what a user sees).
void BM_InceptionV3Cuda(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  const int64_t n = state.range(1);
  const bool resident = state.range(2) != 0;
  InceptionV3Cuda* net = nullptr;
  try {
    net = &model(m);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  std::vector<float> x = test_input(n), b(static_cast<size_t>(n * kBottleneckSize));
  for (int i = 0; i < 3; ++i) net->forward(x.data(), n, b.data());  // plans, capture, warm-up
  if (n == kMaxBatch) print_layer_table(m, *net, n);
  // Recorded on the legacy stream around calls that synchronize the model's own stream.
  const CudaEvent e0 = CudaEvent::create("bench"), e1 = CudaEvent::create("bench");
  for (auto _ : state) {
    CUDA_CHECK(cudaEventRecord(e0, nullptr), "bench");
    if (resident)
      net->forward_resident(n);  // both synchronize the model's stream
    else
      net->forward(x.data(), n, b.data());
    CUDA_CHECK(cudaEventRecord(e1, nullptr), "bench");
    CUDA_CHECK(cudaEventSynchronize(e1), "bench");
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1), "bench");
    state.SetIterationTime(ms * 1e-3);
    benchmark::DoNotOptimize(b.data());
  }
  const double flops = net->flops_per_image() * static_cast<double>(n);
  state.counters["img/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_TFLOP/s"] = peak_tflops(m);
  state.counters["gpu_MiB"] = net->peak_device_bytes() / 1048576.0;
  state.SetLabel(std::string(mode_name(m)) + (resident ? "" : "_host"));
}
BENCHMARK(BM_InceptionV3Cuda)
    ->ArgNames({"mode", "batch", "resident"})
    ->Args({kFp32Nchw, 128, 1})
    ->Args({kFp32Nchw, 128, 0})
    ->Args({kFp32Nchw, 1, 1})
    ->Args({kFp32Nchw, 1, 0})
    ->Args({kFp32Nhwc, 128, 1})
    ->Args({kTf32, 128, 1})
    ->Args({kFp16, 128, 1})
    ->Args({kFp16, 128, 0})
    ->Args({kFp16, 1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

// fp32 at batch 1 against the PyTorch reference bottleneck (tests/test_inception.cpp's bound).
bool validate() {
  H5File f = H5File::open_read(bench::reference_dir() + "/reference.h5");
  Tensor x = h5_read_tensor(f.id(), "/inputs", f.path());
  Tensor want = h5_read_tensor(f.id(), "/blocks/bottleneck", f.path());
  InceptionV3Cuda& net = model(kFp32Nchw);
  std::vector<float> got(static_cast<size_t>(kBottleneckSize));
  net.forward(x.data(), 1, got.data());
  double wmax = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    wmax = std::max(wmax, double(std::fabs(want.data()[i])));
  for (int64_t i = 0; i < kBottleneckSize; ++i)
    if (!(std::fabs(got[i] - want.data()[i]) <= 1e-4 * wmax + 1e-4 * std::fabs(want.data()[i]))) {
      std::fprintf(stderr, "validation failed at %lld: %g vs %g\n", (long long)i, got[i],
                   want.data()[i]);
      return false;
    }
  std::fprintf(stderr, "validated fp32 (NCHW) against the PyTorch reference bottleneck, image 0\n");
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const CudaAvailability a = cuda_availability();
  if (a.devices == 0) {
    std::printf("bench_inception_cuda: skipped, no GPU: %s\n", a.reason.c_str());
    return 0;
  }
  std::printf("GPU: %s\n", a.reason.c_str());
  return bench::validate_then_run(validate);
}
