// bench/bench_head.cpp: CPU throughput of the classifier head: training steps/s of HeadCpu at
// batch 128 (2048 -> 512 -> 512 -> 2, dropout 0.5, TF1 RMSProp; items_per_second = steps/s), and
// GB/s of the element-wise kernels at 2^16..2^22 elements (bytes = what the op must move:
// dropout 8 B/elem (read x, write y), softmax-xent 8 B/elem (+4 B/row label), RMSProp 28 B/elem
// (read p g ms mom, write p ms mom)). Each benchmark first validates its output once.
// Compare with PyTorch: bench/torch_head_cpu.py (same step, 2 threads).
// Run: OMP_NUM_THREADS=2 build/bench/bench_head
#include <benchmark/benchmark.h>

#include <cmath>
#include <vector>

#include "engine/error.h"
#include "kernels/dropout.h"
#include "kernels/rmsprop.h"
#include "kernels/softmax_xent.h"
#include "models/head.h"

using namespace engine;

namespace {
std::vector<float> fill(int64_t n, uint64_t seed, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = dropout_words(seed, 0, 5, static_cast<uint64_t>(i) >> 2).v[i & 3];
    v[i] = lo + (hi - lo) * static_cast<float>((u >> 8) * (1.0 / 16777216.0));
  }
  return v;
}

void BM_HeadTrainStep(benchmark::State& st) {
  HeadConfig c;
  c.seed = 1;
  const int64_t n = 128;
  std::vector<float> x = fill(n * c.input, 2, 0.f, 1.f);
  std::vector<int32_t> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>(i % 2);
  HeadCpu h(c);
  const float l0 = h.train_step(x.data(), y.data(), n);  // validate + warm up
  if (!std::isfinite(l0)) st.SkipWithError("non-finite loss");
  for (auto _ : st) benchmark::DoNotOptimize(h.train_step(x.data(), y.data(), n));
  st.SetItemsProcessed(st.iterations());  // items/s == training steps/s
  st.counters["samples_per_s"] =
      benchmark::Counter(double(st.iterations() * n), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_HeadTrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_DropoutForward(benchmark::State& st) {
  const int64_t n = st.range(0);
  std::vector<float> x = fill(n, 3, 0.5f, 1.f), y(n);
  dropout_forward_cpu(x.data(), y.data(), n, 0.5f, DropoutKey{1, 2, 1});
  int64_t kept = 0;
  for (float v : y) kept += v != 0.f;
  if (std::fabs(kept - n / 2.0) > 5 * std::sqrt(n / 4.0)) st.SkipWithError("mask fraction off");
  for (auto _ : st) {
    dropout_forward_cpu(x.data(), y.data(), n, 0.5f, DropoutKey{1, 2, 1});
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * n * 8);
}
BENCHMARK(BM_DropoutForward)->RangeMultiplier(4)->Range(1 << 16, 1 << 22)->UseRealTime();

void BM_SoftmaxXentK2(benchmark::State& st) {
  const int64_t n = st.range(0), rows = n / 2;
  std::vector<float> z = fill(n, 4, -4.f, 4.f), g(n);
  std::vector<int32_t> y(rows);
  for (int64_t i = 0; i < rows; ++i) y[i] = static_cast<int32_t>(i & 1);
  const float loss = softmax_xent_cpu(z.data(), y.data(), nullptr, rows, 2, g.data());
  if (!std::isfinite(loss) || std::fabs(g[0] + g[1]) > 1e-6) st.SkipWithError("bad softmax");
  for (auto _ : st)
    benchmark::DoNotOptimize(softmax_xent_cpu(z.data(), y.data(), nullptr, rows, 2, g.data()));
  st.SetBytesProcessed(st.iterations() * (n * 8 + rows * 4));
}
BENCHMARK(BM_SoftmaxXentK2)->RangeMultiplier(4)->Range(1 << 16, 1 << 22)->UseRealTime();

void BM_RmsPropFused(benchmark::State& st) {
  const int64_t n = st.range(0);
  RmsPropConfig c;
  c.momentum = 0.9;
  std::vector<float> p = fill(n, 5, -1.f, 1.f), g = fill(n, 6, -1e-3f, 1e-3f), ms(n, 1.f),
                     mom(n, 0.f);
  int64_t step = 0;
  rmsprop_update_cpu(p.data(), g.data(), ms.data(), mom.data(), n, c, &step);
  if (!std::isfinite(p[0]) || step != 1) st.SkipWithError("bad rmsprop");
  for (auto _ : st) {
    rmsprop_update_cpu(p.data(), g.data(), ms.data(), mom.data(), n, c, &step);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * n * 28);
}
BENCHMARK(BM_RmsPropFused)->RangeMultiplier(4)->Range(1 << 16, 1 << 22)->UseRealTime();
}  // namespace

BENCHMARK_MAIN();
