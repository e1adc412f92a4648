// bench/bench_layers.cpp: Google Benchmark of the CPU layer kernels on Inception v3 shapes at
// batch 8: Conv2dCpu (oneDNN) in GFLOP/s, the plain-loop reference on one small shape, and the
// pools and concat in GB/s (bytes read + written). Each conv shape is validated once against
// conv2d_forward_ref_cpu (at batch 1, to keep start-up short) before it is timed; a mismatch
// aborts. Run: ./bench_layers [--benchmark_filter=Conv]. Compare with PyTorch's channels_last
// oneDNN convs (~190 GFLOP/s on the 2-core dev box). ONEDNN_VERBOSE=1 shows the kernels picked.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/conv2d.h"
#include "kernels/pool2d.h"

namespace {

using namespace engine;

constexpr int64_t kBatch = 8;

void fill_random(float* p, int64_t n, float scale, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, scale);
  for (int64_t i = 0; i < n; ++i) p[i] = d(gen);
}

Tensor random_tensor(Shape s, uint32_t seed) {
  Tensor t(std::move(s));
  fill_random(t.data(), t.numel(), 1.f, seed);
  return t;
}

struct ConvShape {
  const char* name;
  int64_t hw, cin, cout;
  int kh, kw, stride;
  Padding p;
};

Conv2dCpu make_conv(const ConvShape& c, std::vector<float>& w, std::vector<float>& b) {
  Conv2dSpec spec{c.kh, c.kw, c.stride, c.p, true};
  w.resize(static_cast<size_t>(c.kh) * c.kw * c.cin * c.cout);
  b.resize(static_cast<size_t>(c.cout));
  fill_random(w.data(), static_cast<int64_t>(w.size()),
              1.f / std::sqrt(static_cast<float>(c.kh * c.kw * c.cin)), 11);
  fill_random(b.data(), c.cout, 0.1f, 12);
  return Conv2dCpu(c.name, w, b, c.cin, c.cout, spec);
}

// Aborts the run if oneDNN disagrees with the reference: timing a wrong kernel is worthless.
void validate_conv(Conv2dCpu& conv, const std::vector<float>& w, const std::vector<float>& b,
                   const ConvShape& c) {
  Tensor x = random_tensor(Shape{1, c.hw, c.hw, c.cin}, 13);
  Tensor want(conv.output_shape(x.shape())), got(conv.output_shape(x.shape()));
  conv2d_forward_ref_cpu(x, w.data(), b.data(), c.cout, conv.spec(), want);
  conv.forward(x, got);
  double worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    double d =
        std::fabs(got.data()[i] - want.data()[i]) / (1e-5 + 1e-5 * std::fabs(want.data()[i]));
    worst = std::max(worst, d);
  }
  if (!(worst <= 1.0)) {
    std::fprintf(stderr, "bench_layers: %s: Conv2dCpu differs from the reference (%.3g x tol)\n",
                 c.name, worst);
    std::abort();
  }
}

void BM_Conv2dCpu(benchmark::State& state, ConvShape c) {
  std::vector<float> w, b;
  Conv2dCpu conv = make_conv(c, w, b);
  validate_conv(conv, w, b, c);
  Tensor x = random_tensor(Shape{kBatch, c.hw, c.hw, c.cin}, 14);
  Tensor y(conv.output_shape(x.shape()));
  conv.forward(x, y);  // warm-up: primitive creation and JIT happen here, not in the timing
  for (auto _ : state) {
    conv.forward(x, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(conv.flops(x.shape()) * 1e-9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void BM_Conv2dRef(benchmark::State& state, ConvShape c) {
  std::vector<float> w, b;
  Conv2dCpu conv = make_conv(c, w, b);  // for the flop count only
  Tensor x = random_tensor(Shape{kBatch, c.hw, c.hw, c.cin}, 14);
  Tensor y(conv.output_shape(x.shape()));
  for (auto _ : state) {
    conv2d_forward_ref_cpu(x, w.data(), b.data(), c.cout, conv.spec(), y);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(conv.flops(x.shape()) * 1e-9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

void set_bytes(benchmark::State& state, int64_t floats_moved) {
  state.counters["GB/s"] = benchmark::Counter(
      4e-9 * static_cast<double>(floats_moved) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

struct PoolShape {
  const char* name;
  bool is_max;
  int64_t hw, c;
  int k, s;
  Padding p;
};

void BM_Pool(benchmark::State& state, PoolShape ps) {
  Tensor x = random_tensor(Shape{kBatch, ps.hw, ps.hw, ps.c}, 15);
  Tensor y(pool2d_output_shape(x.shape(), ps.k, ps.s, ps.p));
  for (auto _ : state) {
    if (ps.is_max)
      max_pool2d_forward_cpu(x, ps.k, ps.s, ps.p, y);
    else
      avg_pool2d_forward_cpu(x, ps.k, ps.s, ps.p, y);
    benchmark::DoNotOptimize(y.data());
  }
  set_bytes(state, x.numel() + y.numel());
}

struct ConcatShape {
  const char* name;
  int64_t hw;
  std::vector<int64_t> cs;  // channels of each input
};

void BM_Concat(benchmark::State& state, ConcatShape cc) {
  const int64_t hw = cc.hw;
  const std::vector<int64_t>& cs = cc.cs;
  std::vector<Tensor> xs;
  std::vector<const Tensor*> ptrs;
  int64_t ctot = 0;
  for (int64_t c : cs) {
    xs.push_back(random_tensor(Shape{kBatch, hw, hw, c}, 16));
    ctot += c;
  }
  for (auto& t : xs) ptrs.push_back(&t);
  Tensor y(Shape{kBatch, hw, hw, ctot});
  for (auto _ : state) {
    concat_channels_cpu(ptrs, y);
    benchmark::DoNotOptimize(y.data());
  }
  set_bytes(state, 2 * y.numel());
}

void BM_GlobalAvgPool(benchmark::State& state) {
  Tensor x = random_tensor(Shape{kBatch, 8, 8, 2048}, 17);
  Tensor y(Shape{kBatch, 2048});
  for (auto _ : state) {
    global_avg_pool_cpu(x, y);
    benchmark::DoNotOptimize(y.data());
  }
  set_bytes(state, x.numel() + y.numel());
}

const ConvShape kConvShapes[] = {
    {"stem_149x149_3x3_32to32_valid", 149, 32, 32, 3, 3, 1, Padding::Valid},
    {"stem_147x147_3x3_32to64_same", 147, 32, 64, 3, 3, 1, Padding::Same},
    {"stem_73x73_1x1_64to80_valid", 73, 64, 80, 1, 1, 1, Padding::Valid},
    {"stem_73x73_3x3_80to192_valid", 73, 80, 192, 3, 3, 1, Padding::Valid},
    {"m0_35x35_1x1_192to64", 35, 192, 64, 1, 1, 1, Padding::Same},
    {"m0_35x35_5x5_48to64", 35, 48, 64, 5, 5, 1, Padding::Same},
    {"m0_35x35_3x3_64to96", 35, 64, 96, 3, 3, 1, Padding::Same},
    {"m3_35x35_3x3_288to384_s2_valid", 35, 288, 384, 3, 3, 2, Padding::Valid},
    {"m5_17x17_1x1_768to192", 17, 768, 192, 1, 1, 1, Padding::Same},
    {"m5_17x17_1x7_160to160", 17, 160, 160, 1, 7, 1, Padding::Same},
    {"m5_17x17_7x1_160to192", 17, 160, 192, 7, 1, 1, Padding::Same},
    {"m9_8x8_1x1_2048to448", 8, 2048, 448, 1, 1, 1, Padding::Same},
    {"m9_8x8_3x3_448to384", 8, 448, 384, 3, 3, 1, Padding::Same},
    {"m9_8x8_1x3_384to384", 8, 384, 384, 1, 3, 1, Padding::Same},
};

const PoolShape kPoolShapes[] = {
    {"MaxPool/147x147x64_3x3_s2_valid", true, 147, 64, 3, 2, Padding::Valid},
    {"MaxPool/35x35x288_3x3_s2_valid", true, 35, 288, 3, 2, Padding::Valid},
    {"AvgPool/35x35x192_3x3_s1_same", false, 35, 192, 3, 1, Padding::Same},
    {"AvgPool/17x17x768_3x3_s1_same", false, 17, 768, 3, 1, Padding::Same},
    {"AvgPool/8x8x2048_3x3_s1_same", false, 8, 2048, 3, 1, Padding::Same},
};

const ConcatShape kConcatShapes[] = {
    {"Concat/35x35_64+64+96+32", 35, {64, 64, 96, 32}},
    {"Concat/8x8_320+768+768+192", 8, {320, 768, 768, 192}},
};

const int kRegistered = [] {
  for (const ConvShape& c : kConvShapes)
    benchmark::RegisterBenchmark((std::string("Conv2dCpu/") + c.name).c_str(), BM_Conv2dCpu, c)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  benchmark::RegisterBenchmark("Conv2dRef/m9_8x8_1x3_384to384", BM_Conv2dRef,
                               ConvShape{"ref", 8, 384, 384, 1, 3, 1, Padding::Same})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  for (const PoolShape& p : kPoolShapes)
    benchmark::RegisterBenchmark(p.name, BM_Pool, p)->UseRealTime();
  for (const ConcatShape& c : kConcatShapes)
    benchmark::RegisterBenchmark(c.name, BM_Concat, c)->UseRealTime();
  benchmark::RegisterBenchmark("GlobalAvgPool/8x8x2048", BM_GlobalAvgPool)->UseRealTime();
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
