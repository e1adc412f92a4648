// tools/inception_forward.cpp: runs the Inception v3 forward pass on the CPU over generated
// images (a deterministic, seeded pattern in [-1, 1]) and prints the bottlenecks' shape, a
// checksum and the speed: a smoke test of the forward pass alone (tools/extract is the real use).
// No image files, so no decoding (engine/preprocessing.h is for those): inputs are made in [-1, 1].
// --precision fp32 (exact, InceptionV3Cpu), bf16 or int8 (InceptionV3CpuLowp; int8 calibrated on
// up to 32 of the generated images), auto (bf16 when the CPU has it natively, else fp32); a CPU
// without the instructions gets one warning line and fp32.
//   inception_forward --weights build/reference/inception_v3_1based.h5 --images 4 --batch 2
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "engine/cli_status.h"
#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/inception_contract.h"
#include "engine/progress.h"
#include "models/bottleneck_backend.h"
#include "models/inception_v3.h"
#include "models/inception_v3_lowp.h"

using namespace engine;

namespace {
// Smooth random image: a few random sinusoids per channel plus noise, clipped to [-1, 1].
void fill_image(float* img, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  float fx[3], fy[3], ph[3];
  for (int c = 0; c < 3; ++c) fx[c] = 0.05f * u(rng), fy[c] = 0.05f * u(rng), ph[c] = 3 * u(rng);
  for (int y = 0; y < kInceptionInput; ++y)
    for (int x = 0; x < kInceptionInput; ++x)
      for (int c = 0; c < 3; ++c) {
        float v = 0.8f * std::sin(fx[c] * x * 3.f + fy[c] * y * 3.f + ph[c]) + 0.2f * u(rng);
        img[(y * kInceptionInput + x) * 3 + c] = std::fmax(-1.f, std::fmin(1.f, v));
      }
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Inception v3 forward (CPU) on generated images: prints bottleneck shape and checksum"};
  std::string weights;
  int images = 4, batch = 4;
  uint64_t seed = 1;
  std::string precision = "fp32";
  app.add_option("--weights", weights, "Keras InceptionV3 HDF5 weight file")->required();
  app.add_option("--images", images, "number of generated images")->check(CLI::Range(1, 100000));
  app.add_option("--batch", batch, "batch size")->check(CLI::Range(1, 1024));
  app.add_option("--seed", seed, "seed of the generated images");
  app.add_option("--precision", precision,
                 "fp32 (default, exact), bf16, int8 (calibrated on up to 32 generated images) or "
                 "auto (bf16 when the CPU has it natively, else fp32)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "int8"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli_parse_error_status(app, e);  // --help: 0; a bad flag: one line, 2
  }
  try {
    InceptionWeights w = load_inception_v3_weights(weights);
    if (!random_weights_warning(w).empty())
      std::fprintf(stderr, "%s\n", random_weights_warning(w).c_str());
    std::printf("weights: %s (%s names%s, %s)\n", weights.c_str(),
                w.zero_based ? "0-based" : "1-based",
                w.under_model_weights ? ", /model_weights" : "",
                w.has_top ? "with predictions top" : "no top");
    std::fflush(stdout);
    auto image_of = [&](int i, float* out) {
      fill_image(out, seed * 1000003 + static_cast<uint64_t>(i));
    };
    precision = resolve_precision(precision, Device::CPU, [](const std::string& s) {
      std::fprintf(stderr, "warning: %s\n", s.c_str());
    });
    std::unique_ptr<InceptionV3Cpu> exact;
    std::unique_ptr<InceptionV3CpuLowp> lowp;
    if (precision == "fp32") {
      exact = std::make_unique<InceptionV3Cpu>(w);
    } else {
      Int8Calibration cal;
      if (precision == "int8") {
        const auto t0 = std::chrono::steady_clock::now();
        const int n = std::min(images, 32);
        Tensor x(Shape{n, kInceptionInput, kInceptionInput, 3});
        for (int i = 0; i < n; ++i)
          image_of(i, x.data() + int64_t(i) * kInceptionInput * kInceptionInput * 3);
        cal = calibrate_int8(w, x);
        std::printf("int8: calibrated on %d generated images in %.1f s\n", n,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      lowp = std::make_unique<InceptionV3CpuLowp>(w, parse_cpu_precision(precision), cal);
    }
    std::printf("precision: %s\n", precision.c_str());
    std::fflush(stdout);
    Tensor all = Tensor::zeros(Shape{images, kBottleneckSize});
    Progress progress("inception forward", images);
    // The first batch also creates the oneDNN primitives (JIT); the steady rate excludes it.
    std::chrono::steady_clock::time_point steady_start;
    int steady_images = 0;
    for (int start = 0; start < images; start += batch) {
      if (start == batch) steady_start = std::chrono::steady_clock::now();
      if (start >= batch) steady_images += std::min(batch, images - start);
      int n = std::min(batch, images - start);
      Tensor x(Shape{n, kInceptionInput, kInceptionInput, 3});
      for (int i = 0; i < n; ++i)
        image_of(start + i, x.data() + int64_t(i) * kInceptionInput * kInceptionInput * 3);
      Tensor b =
          Tensor::view(all.data() + int64_t(start) * kBottleneckSize, Shape{n, kBottleneckSize});
      if (exact)
        exact->forward(x, b);
      else
        lowp->forward(x, b);
      progress.advance(n);
    }
    progress.finish();
    double sum = 0, asum = 0;
    for (int64_t i = 0; i < all.numel(); ++i)
      sum += all.data()[i], asum += std::fabs(all.data()[i]);
    std::printf("bottlenecks: shape %s, sum %.6f, sum|x| %.6f, first values %.6f %.6f %.6f\n",
                all.shape().str().c_str(), sum, asum, all.data()[0], all.data()[1], all.data()[2]);
    double rate = progress.rate();
    if (steady_images > 0)
      rate = steady_images /
             std::chrono::duration<double>(std::chrono::steady_clock::now() - steady_start).count();
    std::printf("speed: %.2f img/s (%.1f GFLOP/s)%s, activation memory %.1f MiB\n", rate,
                rate * (exact ? exact->flops_per_image() : lowp->flops_per_image()) / 1e9,
                steady_images > 0 ? " after the first batch" : " including one-time setup",
                (exact ? exact->activation_bytes() : lowp->activation_bytes()) / 1048576.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
