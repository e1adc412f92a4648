// tests/kernel_test.h: one test body for every kernel family, instantiated per device (Caffe's
// typed tests over devices, ggml's test-backend-ops): ENGINE_KERNEL_TEST(Suite, Family) defines
// Suite.MatchesOracle and instantiates it as Cpu/Suite.MatchesOracle/<case> over
// Family::cases(Device::CPU) and Cuda/Suite.MatchesOracle/<case> over Family::cases(Device::CUDA).
//  - Cpu:  got = Family::cpu (the CPU kernel), want = reference(case, inputs): an independent
//          reference the test file defines (double loops or closed forms) for each case type.
//  - Cuda: got = the CUDA kernel through cuda_run (tests/kernel_cases_cuda.h), want = Family::cpu.
//          Skips with the printed reason without a GPU (or in a CPU-only build); with
//          ENGINE_REQUIRE_GPU=1 a missing GPU is a failure (ENGINE_SKIP_WITHOUT_GPU).
// Every output is compared with EXPECT_CLOSE (tests/test_util.h) at Family::tol, whose reason is
// printed with the achieved error. A case that throws fails alone, with its name and the error.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <tuple>

#include "engine/cuda_device.h"
#include "tests/kernel_cases.h"
#include "tests/test_util.h"
#ifdef ENGINE_HAVE_CUDA
#include "tests/kernel_cases_cuda.h"
#endif

namespace engine::test {

template <typename F>
class KernelTest : public ::testing::TestWithParam<std::tuple<Device, typename F::Case>> {
 protected:
  Device device() const { return std::get<0>(this->GetParam()); }

  // Each case is its own gtest test; an exception (a refused cuDNN plan, a CUDA error) is caught
  // here and reported as this case's failure naming family, case and device, and the next case
  // runs. (A sticky CUDA error, e.g. an illegal address, poisons the context for the rest of the
  // process; compute-sanitizer in the device run names the kernel then.)
  void check() {
    const typename F::Case& c = std::get<1>(this->GetParam());
    try {
      compare(c);
    } catch (const std::exception& e) {
      ADD_FAILURE() << F::kName << " case " << std::string(c.name) << " on "
                    << device_name(device()) << " threw: " << e.what();
    }
  }

 private:
  void compare(const typename F::Case& c) {
    using namespace ::engine::kernel_cases;
    const Device d = device();
    const typename F::Inputs in = F::inputs(c);
    Outputs want, got;
    if (d == Device::CPU) {
      std::printf("  %s %s: %s vs the independent reference\n", F::kName,
                  std::string(c.name).c_str(), F::kCpuEntry);
      want = reference(c, in);
      got = F::cpu(c, in);
    } else if constexpr (F::kHasCuda) {
#ifdef ENGINE_HAVE_CUDA
      std::printf("  %s %s: %s vs %s\n", F::kName, std::string(c.name).c_str(), F::kCudaEntry,
                  F::kCpuEntry);
      want = F::cpu(c, in);
      const CudaStream s = CudaStream::create(std::string("test ") + F::kName);
      auto run = cuda_run(c, in, s);
      for (int i = 0; i < run->launches(); ++i) run->launch(s);
      got = run->download(s);
#else
      FAIL() << "a CUDA case ran in a build without CUDA (the skip did not happen)";
#endif
    } else {
      FAIL() << F::kName << " has no CUDA twin";
    }
    ASSERT_EQ(got.size(), want.size()) << "outputs";
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].name, want[i].name);
      ASSERT_EQ(got[i].v.size(), want[i].v.size()) << want[i].name;
      const Tol t = F::tol(c, d, in, want[i]);
      EXPECT_CLOSE((got[i].v.data(), want[i].v.data(), static_cast<int64_t>(want[i].v.size()),
                    t.atol, t.rtol, want[i].name + " [" + t.why + "]"));
    }
  }
};

template <typename F>
std::string kernel_case_name(
    const ::testing::TestParamInfo<std::tuple<Device, typename F::Case>>& i) {
  return std::string(std::get<1>(i.param).name);
}

}  // namespace engine::test

#define ENGINE_KERNEL_TEST(Suite, Family)                                             \
  class Suite : public ::engine::test::KernelTest<Family> {};                         \
  TEST_P(Suite, MatchesOracle) {                                                      \
    if (device() == ::engine::Device::CUDA)                                           \
      ENGINE_SKIP_WITHOUT_GPU(::engine::cuda_availability());                         \
    check();                                                                          \
  }                                                                                   \
  INSTANTIATE_TEST_SUITE_P(                                                           \
      Cpu, Suite,                                                                     \
      ::testing::Combine(::testing::Values(::engine::Device::CPU),                    \
                         ::testing::ValuesIn(Family::cases(::engine::Device::CPU))),  \
      ::engine::test::kernel_case_name<Family>);                                      \
  INSTANTIATE_TEST_SUITE_P(                                                           \
      Cuda, Suite,                                                                    \
      ::testing::Combine(::testing::Values(::engine::Device::CUDA),                   \
                         ::testing::ValuesIn(Family::cases(::engine::Device::CUDA))), \
      ::engine::test::kernel_case_name<Family>)

// A family without a CUDA twin (Family::kHasCuda false): the Cpu instantiation only.
#define ENGINE_KERNEL_TEST_CPU_ONLY(Suite, Family)                                   \
  class Suite : public ::engine::test::KernelTest<Family> {};                        \
  TEST_P(Suite, MatchesOracle) { check(); }                                          \
  INSTANTIATE_TEST_SUITE_P(                                                          \
      Cpu, Suite,                                                                    \
      ::testing::Combine(::testing::Values(::engine::Device::CPU),                   \
                         ::testing::ValuesIn(Family::cases(::engine::Device::CPU))), \
      ::engine::test::kernel_case_name<Family>)
