// tests/test_softmax_cuda.cpp: the aliasing that kernels/softmax_xent.h allows: softmax (CPU and
// CUDA) with probs == logits, and softmax_xent_cuda with dlogits == logits, give the same bits as
// the out-of-place calls (the kernels read a whole row, and z[y], before writing any of it). The
// values themselves are checked against the CPU kernel by Cpu/ and Cuda/SoftmaxXentKernel in
// tests/test_kernels_head.cpp. The CUDA cases skip without a GPU (fail with ENGINE_REQUIRE_GPU=1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/cuda_device.h"
#include "kernels/softmax_xent.h"
#include "test_util.h"
#ifdef ENGINE_HAVE_CUDA
#include "engine/cuda_resources.h"
#endif

using namespace engine;

namespace {

// K = 40 spans two warp strides; logits up to +-30 exercise the max subtraction.
constexpr int64_t kN = 37, kK = 40;

std::vector<float> logits() {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-30.f, 30.f);
  std::vector<float> z(static_cast<size_t>(kN * kK));
  for (float& v : z) v = u(rng);
  return z;
}
std::vector<int32_t> labels() {
  std::vector<int32_t> y(static_cast<size_t>(kN));
  for (int64_t i = 0; i < kN; ++i) y[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7) % kK);
  return y;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(SoftmaxAliasing, CpuInPlaceEqualsOutOfPlace) {
  const std::vector<float> z = logits();
  std::vector<float> out(z.size()), in_place = z;
  softmax_cpu(z.data(), out.data(), kN, kK);
  softmax_cpu(in_place.data(), in_place.data(), kN, kK);
  EXPECT_TRUE(same_bits(out, in_place));
}

#ifdef ENGINE_HAVE_CUDA
TEST(SoftmaxAliasing, CudaInPlaceEqualsOutOfPlace) {
  ENGINE_SKIP_WITHOUT_GPU(cuda_availability());
  const std::vector<float> z = logits();
  const std::vector<int32_t> y = labels();
  std::vector<float> w(static_cast<size_t>(kK));
  for (int64_t j = 0; j < kK; ++j) w[static_cast<size_t>(j)] = 0.5f + 0.05f * float(j);
  const CudaStream s = CudaStream::create("softmax aliasing test");
  const size_t count = z.size();
  DeviceBuffer<float> dz(count, "logits"), dp(count, "probs"), dinp(count, "in place"),
      dw(w.size(), "class weights"), loss(2, "loss"),
      scratch(static_cast<size_t>(2 * kN + 2), "scratch");
  DeviceBuffer<int32_t> dy(y.size(), "labels");
  dz.upload(z.data(), z.size(), s, "logits");
  dy.upload(y.data(), y.size(), s, "labels");
  dw.upload(w.data(), w.size(), s, "class weights");
  auto host = [&](const DeviceBuffer<float>& d) {
    std::vector<float> v(d.size());
    d.download(v.data(), v.size(), s, "download");
    CUDA_CHECK(cudaStreamSynchronize(s), "softmax aliasing test");
    return v;
  };

  // softmax: out of place, then in place on a copy of the logits.
  softmax_cuda(dz.data(), dp.data(), kN, kK, s);
  dinp.upload(z.data(), z.size(), s, "in place logits");
  softmax_cuda(dinp.data(), dinp.data(), kN, kK, s);
  EXPECT_TRUE(same_bits(host(dp), host(dinp))) << "softmax_cuda in place";

  // softmax_xent: dlogits out of place (loss[0]), then over the logits themselves (loss[1]).
  softmax_xent_cuda(dz.data(), dy.data(), dw.data(), kN, kK, dp.data(), loss.data(), scratch.data(),
                    s);
  dinp.upload(z.data(), z.size(), s, "in place logits");
  softmax_xent_cuda(dinp.data(), dy.data(), dw.data(), kN, kK, dinp.data(), loss.data() + 1,
                    scratch.data(), s);
  EXPECT_TRUE(same_bits(host(dp), host(dinp))) << "softmax_xent_cuda dlogits in place";
  const std::vector<float> l = host(loss);
  EXPECT_EQ(0, std::memcmp(&l[0], &l[1], sizeof(float)))
      << "loss out of place " << l[0] << ", in place " << l[1];
  EXPECT_TRUE(std::isfinite(l[0])) << l[0];
}
#endif
