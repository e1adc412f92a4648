// tests/test_inception_cuda.cpp: the Inception v3 GPU backend (models/inception_v3_cuda.h,
// kernels/conv2d_cudnn.h) against the PyTorch reference.
// Every test that needs a GPU starts by skipping with the printed reason when there is none (CI);
// on the GPU machine they run for real (bench/gpu/run_device.sh). The asymmetric-padding check of
// the conv geometry needs no GPU and always runs.
//  - fp32 (exact mode) blocks stem..mixed10 and the bottleneck vs /blocks/* of reference.h5 with
//  the
//    tolerances of tests/test_inception.cpp; fp32 in both layouts (NCHW default, NHWC).
//  - tf32 and fp16 bottlenecks vs the fp32 GPU bottleneck: relative L2 error and cosine similarity
//    per image. kTf32MaxRelL2 / kFp16MaxRelL2 / kMinCosine are INITIAL bounds, to be confirmed
//    (and tightened to ~3x the measured value) on the GPU; the test prints the measured values.
//  - CUDA graph replay equals the eager forward bit for bit (fp32); memory does not grow over
//    3 forwards.
// The single kernels (one cuDNN conv in every precision and layout; pools, concat copy, global
// average pool in fp32/fp16, NHWC/NCHW) are the Cuda/Conv2dKernel and Cuda/Pool2dKernel cases of
// tests/test_kernels_layers.cpp.
// Run: ENGINE_REFERENCE_DIR=DIR test_inception_cuda   (DIR from tests/reference/make_reference.py)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "engine/cuda_check.h"
#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "inception_reference.h"
#include "kernels/conv2d.h"
#include "kernels/conv2d_cudnn.h"
#include "models/inception_v3_cuda.h"
#include "test_util.h"

using namespace engine;
using engine::test::reference_file;
using namespace engine::test;

namespace {

#define SKIP_WITHOUT_GPU() ENGINE_SKIP_WITHOUT_GPU(cuda_availability())

// Tolerances: the same as tests/test_inception.cpp, from tests/inception_reference.h.
// INITIAL bounds for the reduced-precision modes vs fp32 on the GPU (to be confirmed on the GPU).
constexpr double kTf32MaxRelL2 = 1e-2, kFp16MaxRelL2 = 2e-2, kMinCosine = 0.999;

std::string weights_file() { return reference_file("inception_v3_1based.h5"); }
// Tests take the first allowed engine in heuristic order (no timing): plan building for ~8 models
// stays within the GPU slot; bench/bench_inception_cuda.cpp times the candidates.
InceptionCudaOptions test_options(bool fp32_nchw = true) {
  InceptionCudaOptions o;
  o.fp32_nchw = fp32_nchw;
  o.plan.time_plans = false;
  return o;
}

Tensor random_tensor(Shape s, uint32_t seed) {
  Tensor t(s);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = u(rng);
  return t;
}

struct Agreement {
  double rel_l2 = 0, cosine = 1;
};
Agreement agreement(const float* got, const float* want, int64_t n) {
  double d = 0, g2 = 0, w2 = 0, gw = 0;
  for (int64_t i = 0; i < n; ++i) {
    d += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    g2 += double(got[i]) * got[i], w2 += double(want[i]) * want[i], gw += double(got[i]) * want[i];
  }
  return {std::sqrt(d / std::max(w2, 1e-300)), gw / std::sqrt(std::max(g2 * w2, 1e-300))};
}

void check_fp32_against_reference(bool nchw) {
  Reference ref = open_reference();
  const int64_t n = ref.inputs.n();
  InceptionV3Cuda model(load_inception_v3_weights(weights_file()), Precision::FP32, n,
                        test_options(nchw));
  std::printf("  fp32 %s: %lld MiB on the GPU (arena %lld MiB, workspace %lld MiB)\n",
              layout_name(model.layout()), (long long)(model.peak_device_bytes() >> 20),
              (long long)(model.activation_bytes() >> 20),
              (long long)(model.workspace_bytes() >> 20));
  std::vector<float> b(static_cast<size_t>(n * kBottleneckSize));
  int taps = 0;
  model.forward_blocks(
      ref.inputs.data(), n, b.data(), [&](const std::string& name, const Tensor& t) {
        Tensor want = h5_read_tensor(ref.file.id(), "/blocks/" + name, ref.file.path());
        auto r = engine::test::tensors_close(
            t, want,
            (is_shallow_block(name) ? kShallowAtolScale : kBlockAtolScale) *
                engine::test::max_abs(want),
            kBlockRtol, name);
        EXPECT_TRUE(r);
        std::printf("  %s\n", r.message());
        ++taps;
      });
  EXPECT_EQ(taps, 12);
  Tensor want = h5_read_tensor(ref.file.id(), "/blocks/bottleneck", ref.file.path());
  Tensor got = Tensor::view(b.data(), Shape{n, kBottleneckSize});
  auto r = engine::test::tensors_close(
      got, want, kBottleneckAtolScale * engine::test::max_abs(want), kBottleneckRtol, "bottleneck");
  EXPECT_TRUE(r);
  std::printf("  %s\n", r.message());
}

void check_reduced_precision(Precision p, double max_rel_l2) {
  Reference ref = open_reference();
  const int64_t n = ref.inputs.n();
  InceptionWeights w = load_inception_v3_weights(weights_file());
  std::vector<float> b32(static_cast<size_t>(n * kBottleneckSize)), bp(b32.size());
  {
    InceptionV3Cuda exact(w, Precision::FP32, n, test_options());
    exact.forward(ref.inputs.data(), n, b32.data());
  }
  InceptionV3Cuda model(w, p, n, test_options());
  model.forward(ref.inputs.data(), n, bp.data());
  for (int64_t i = 0; i < n; ++i) {
    const Agreement a = agreement(bp.data() + i * kBottleneckSize, b32.data() + i * kBottleneckSize,
                                  kBottleneckSize);
    std::printf(
        "  %s vs fp32, image %lld: relative L2 %.3g (bound %.3g), cosine %.7f (bound %.4f)\n",
        precision_name(p), (long long)i, a.rel_l2, max_rel_l2, a.cosine, kMinCosine);
    EXPECT_LT(a.rel_l2, max_rel_l2) << precision_name(p) << " image " << i;
    EXPECT_GT(a.cosine, kMinCosine) << precision_name(p) << " image " << i;
  }
}

}  // namespace

// ---- no GPU needed ------------------------------------------------------------------------------
TEST(InceptionCudaGeometry, AsymmetricSamePaddingIsAClearError) {
  Conv2dSpec even;  // 2x2 'same' stride 1: pads 0 before, 1 after
  even.kh = even.kw = 2;
  try {
    cudnn_conv_geometry(9, 9, even, "conv test-even");
    FAIL() << "expected an error for asymmetric padding";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv test-even"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("asymmetric"), std::string::npos) << e.what();
  }
  Conv2dSpec s2;  // 3x3 'same' stride 2 on an even size: total pad 1
  s2.kh = s2.kw = 3, s2.stride = 2;
  EXPECT_THROW(cudnn_conv_geometry(8, 8, s2, "conv test-s2"), Error);
  // Every Inception conv is symmetric at its real input size.
  for (const ConvDef& d : inception_v3_conv_defs()) {
    Conv2dSpec s;
    s.kh = d.kh, s.kw = d.kw, s.stride = d.stride, s.padding = d.padding;
    EXPECT_NO_THROW(cudnn_conv_geometry(d.in_hw, d.in_hw, s, "C" + std::to_string(d.index)));
  }
}

// ---- GPU ---------------------------------------------------------------------------------------
TEST(InceptionV3Cuda, Fp32NchwBlocksAndBottleneckMatchPyTorch) {
  SKIP_WITHOUT_GPU();
  check_fp32_against_reference(true);
}

TEST(InceptionV3Cuda, Fp32NhwcBlocksAndBottleneckMatchPyTorch) {
  SKIP_WITHOUT_GPU();
  check_fp32_against_reference(false);
}

TEST(InceptionV3Cuda, Tf32BottleneckCloseToFp32) {
  SKIP_WITHOUT_GPU();
  check_reduced_precision(Precision::TF32, kTf32MaxRelL2);
}

TEST(InceptionV3Cuda, Fp16BottleneckCloseToFp32) {
  SKIP_WITHOUT_GPU();
  check_reduced_precision(Precision::FP16, kFp16MaxRelL2);
}

TEST(InceptionV3Cuda, GraphReplayEqualsEagerBitwiseFp32) {
  SKIP_WITHOUT_GPU();
  Reference ref = open_reference();
  const int64_t n = ref.inputs.n();
  InceptionV3Cuda model(load_inception_v3_weights(weights_file()), Precision::FP32, n,
                        test_options());
  std::vector<float> eager(static_cast<size_t>(n * kBottleneckSize)), graph(eager.size()),
      again(eager.size());
  model.forward_eager(ref.inputs.data(), n, eager.data());
  model.forward(ref.inputs.data(), n, graph.data());  // captures
  model.forward(ref.inputs.data(), n, again.data());  // replays
  EXPECT_EQ(0, std::memcmp(eager.data(), graph.data(), eager.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(graph.data(), again.data(), eager.size() * sizeof(float)));
  // A smaller batch through the same model (own plans and graph) gives the same first image.
  std::vector<float> one(static_cast<size_t>(kBottleneckSize));
  model.forward(ref.inputs.data(), 1, one.data());
  EXPECT_TRUE(engine::test::tensors_close(one.data(), eager.data(), kBottleneckSize, 1e-6, 1e-5,
                                          "batch 1 vs batch 2, image 0"));
}

TEST(InceptionV3Cuda, MemoryDoesNotGrowAcrossForwards) {
  SKIP_WITHOUT_GPU();
  InceptionV3Cuda model(load_inception_v3_weights(weights_file()), Precision::FP16, 4,
                        test_options());
  Tensor x = random_tensor(Shape{4, 299, 299, 3}, 7);
  std::vector<float> b(4 * kBottleneckSize);
  model.forward(x.data(), 4, b.data());  // first call captures the graph
  const int64_t bytes = model.peak_device_bytes(), allocs = model.allocations();
  size_t free0 = 0, total = 0, free1 = 0;
  CUDA_CHECK(cudaMemGetInfo(&free0, &total), "memory test");
  for (int i = 0; i < 3; ++i) model.forward(x.data(), 4, b.data());
  CUDA_CHECK(cudaMemGetInfo(&free1, &total), "memory test");
  EXPECT_EQ(model.peak_device_bytes(), bytes);
  EXPECT_EQ(model.allocations(), allocs);
  EXPECT_EQ(free1, free0) << "device free memory changed across 3 forwards";
  std::printf("  fp16 batch 4: %lld MiB allocated by the model (arena %lld MiB)\n",
              (long long)(bytes >> 20), (long long)(model.activation_bytes() >> 20));
}
