// bench/bench_peak.cpp: the cores' multiply-add peak, measured, so bench/compare_cpu.py can say
// what fraction of it each Inception v3 mode reaches. Three AVX-512 instructions, each in a loop
// of independent register accumulators (more than the FMA latency x pipes, so the pipes, not the
// dependency chains, are the limit):
//   fp32: vfmadd231ps zmm   16 lanes x 2 FLOP                  =  32 FLOP per instruction
//   bf16: vdpbf16ps zmm     16 lanes x 2 bf16 pairs x 2 FLOP   =  64 FLOP per instruction
//   int8: vpdpbusd zmm      16 lanes x 4 u8*s8 pairs x 2 OP    = 128 OP per instruction
// Each on one thread (BM_Peak<kind>/threads:1) and on every OpenMP thread at once, one loop per
// thread (/threads:omp). Counter GFLOP/s (GOP/s for int8: the same field name, so scripts read one
// key). A CPU without the instruction skips its rows with an error naming it.
//   OMP_NUM_THREADS=2 build/bench/bench_peak [--benchmark_format=json]
// Reference (issue 12, this 2-core Zen 4): fp32 ~224, bf16 ~454 GFLOP/s on both cores.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <string>

namespace {

constexpr int kAcc = 12;             // independent accumulators per loop
constexpr int64_t kIters = 1 << 22;  // inner iterations per timed call (kAcc instructions each)

#define ENGINE_PEAK_TARGET \
  __attribute__((target("avx512f,avx512bf16,avx512vnni,avx512bw,avx512vl")))

// Sum of the 16 lanes through memory (GCC 12's _mm512_reduce_add_ps warns about an
// uninitialized temporary inside its own header).
ENGINE_PEAK_TARGET float lane_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float x : lanes) s += x;
  return s;
}

// The loops keep `kAcc` accumulators in zmm registers; the inputs are loop-invariant registers.
// The sum at the end is returned so the compiler cannot drop the work.
ENGINE_PEAK_TARGET float loop_fp32(int64_t iters) {
  __m512 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[i]);
  return lane_sum(s);
}

ENGINE_PEAK_TARGET float loop_bf16(int64_t iters) {
  __m512 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  // Small operands: the sums stay finite however long the loop runs.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-6f), _mm512_set1_ps(1e-6f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-6f), _mm512_set1_ps(1e-6f));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[i]);
  return lane_sum(s);
}

ENGINE_PEAK_TARGET float loop_int8(int64_t iters) {
  __m512i acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(-1);  // u8 x s8: sums wrap harmlessly
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  }
  __m512i s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_epi32(s, acc[i]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, s);
  int64_t sum = 0;
  for (int32_t x : lanes) sum += x;
  return static_cast<float>(sum);
}

struct Kind {
  const char* name;
  float (*loop)(int64_t);
  double flop_per_instr;
};

std::string missing_isa(bool need_bf16, bool need_vnni) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) return "this CPU has no AVX512F";
  if (need_bf16 && !__builtin_cpu_supports("avx512bf16"))
    return "this CPU has no AVX512_BF16 (vdpbf16ps)";
  if (need_vnni && !__builtin_cpu_supports("avx512vnni"))
    return "this CPU has no AVX512_VNNI (vpdpbusd)";
  return "";
}

void run_peak(benchmark::State& state, float (*loop)(int64_t), double flop_per_instr,
              const std::string& missing, bool all_threads) {
  if (!missing.empty()) {
    state.SkipWithError(missing.c_str());
    return;
  }
  const int threads = all_threads ? omp_get_max_threads() : 1;
  float sink = 0;
  for (auto _ : state) {
    if (all_threads) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
      sink += loop(kIters);
    } else {
      sink += loop(kIters);
    }
    benchmark::DoNotOptimize(sink);
  }
  const double flop_per_call = flop_per_instr * kAcc * static_cast<double>(kIters) * threads;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flop_per_call / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const Kind kinds[] = {
      {"fp32", loop_fp32, 32},
      {"bf16", loop_bf16, 64},
      {"int8", loop_int8, 128},
  };
  for (const Kind& k : kinds) {
    const std::string kind = k.name;
    const std::string missing = missing_isa(kind == "bf16", kind == "int8");
    for (bool all : {false, true}) {
      const std::string name = "BM_Peak/" + kind + (all ? "/threads:omp" : "/threads:1");
      benchmark::RegisterBenchmark(name.c_str(),
                                   [k, missing, all](benchmark::State& s) {
                                     run_peak(s, k.loop, k.flop_per_instr, missing, all);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
