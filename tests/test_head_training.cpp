// tests/test_head_training.cpp: HeadCpu trained for 100 steps against an independent PyTorch run
// (tests/reference/train_reference.py, written into ENGINE_REFERENCE_DIR by the CTest fixture):
// same initial weights and batches (read from the file), dropout off, class weights [1, 3], four
// RMSProp variants (TF1 momentum 0 / 0.9, torch momentum 0 / 0.9; smooth and staircase decay).
// Compared per step: the loss, |got - want| <= 1e-4 + 1e-3 * |want| (float32 vs float32 with
// different GEMM summation orders: differences start at ~1e-7 relative and grow as the weights
// diverge by rounding; the bound leaves ~10x headroom over what was measured), and the final
// weights, |got - want| <= lr0 + 1e-2 * |want| on each tensor (RMSProp normalises each step to
// ~lr in size, so a rounding difference in a tiny gradient, e.g. its sign, becomes a difference of
// up to one full ~lr step in a few weights: atol is one step; measured maxima are printed: a few
// of 1.3M weights of torch_m09_stair differ by 2.6e-4 at lr0 1e-3, the bulk by < 1e-6).
// The momentum-0 variants use lr 1e-4: at 1e-3 without momentum this problem trains chaotically
// (loss spikes to 2.7 at step 5) and the two float32 runs, identical to 1e-7 for 15 steps, then
// amplify rounding differences to O(1) loss differences: a property of the trajectory, not a bug
// (the momentum 0.9 staircase variant at lr 1e-3 matches to 1e-7 over all 100 steps).
// HEAD_TRAINING_VERBOSE=1 prints the loss of every 5th step beside torch's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/hdf5_io.h"
#include "models/head.h"
#include "test_util.h"

using namespace engine;

namespace {
struct Variant {
  const char* name;
  RmsPropFormula formula;
  double lr, rho, momentum, eps, decay_rate;
  int64_t decay_steps;
  bool staircase;
};
const Variant kVariants[] = {
    {"tf1_m0", RmsPropFormula::TF1, 1e-4, 0.9, 0.0, 1e-10, 0.9, 10, false},
    {"tf1_m09_stair", RmsPropFormula::TF1, 1e-3, 0.9, 0.9, 1e-10, 0.5, 30, true},
    {"torch_m0", RmsPropFormula::Torch, 1e-4, 0.9, 0.0, 1e-8, 0.9, 10, false},
    {"torch_m09_stair", RmsPropFormula::Torch, 1e-3, 0.9, 0.9, 1e-8, 0.5, 30, true},
};
constexpr int64_t kSteps = 100, kBatch = 128, kIn = 2048, kH = 512, kK = 2;

class HeadTraining : public ::testing::TestWithParam<int> {};
}  // namespace

TEST_P(HeadTraining, MatchesPyTorchFor100Steps) {
  const Variant& v = kVariants[GetParam()];
  const std::string path = test::reference_file("train_reference.h5");
  H5File f = H5File::open_read(path);
  ASSERT_EQ(h5_read_int_attr(f.id(), "format_version", path), 1) << path;
  ASSERT_EQ(h5_read_int_attr(f.id(), "complete", path), 1) << path;
  H5Id g = h5_open_group(f.id(), v.name, path);
  ASSERT_EQ(h5_read_string_attr(g.get(), "formula", path),
            v.formula == RmsPropFormula::TF1 ? "tf1" : "torch");
  ASSERT_EQ(h5_read_int_attr(g.get(), "decay_steps", path), v.decay_steps);
  ASSERT_EQ(h5_read_int_attr(g.get(), "staircase", path), v.staircase ? 1 : 0);

  HeadConfig c;
  c.input = kIn;
  c.hidden = {kH, kH};
  c.classes = kK;
  c.dropout = 0.f;
  c.class_weights = h5_read_float_checked(f.id(), "class_weights", Shape{kK}, path);
  c.optimizer = RmsPropConfig{v.formula, v.lr, v.rho, v.momentum, v.eps,
                              v.decay_rate, v.decay_steps, v.staircase};
  HeadCpu head(c);
  const int64_t dims[3][2] = {{kIn, kH}, {kH, kH}, {kH, kK}};
  for (int l = 0; l < 3; ++l) {
    const std::string n = "init/dense_" + std::to_string(l + 1);
    auto k = h5_read_float_checked(f.id(), n + "/kernel", Shape{dims[l][0], dims[l][1]}, path);
    auto b = h5_read_float_checked(f.id(), n + "/bias", Shape{dims[l][1]}, path);
    head.set_layer(l, k.data(), b.data());
  }
  const auto x = h5_read_float_checked(f.id(), "x", Shape{kSteps, kBatch, kIn}, path);
  const auto yf = h5_read_float_checked(f.id(), "y", Shape{kSteps, kBatch}, path);
  const auto want_loss = h5_read_float_checked(g.get(), "losses", Shape{kSteps}, path);
  std::vector<int32_t> y(yf.begin(), yf.end());
  std::vector<float> losses;
  for (int64_t s = 0; s < kSteps; ++s)
    losses.push_back(head.train_step(x.data() + s * kBatch * kIn, y.data() + s * kBatch, kBatch));
  if (std::getenv("HEAD_TRAINING_VERBOSE"))
    for (int64_t s = 0; s < kSteps; s += 5)
      std::printf("    step %3lld loss %.7f torch %.7f diff %.3g\n", (long long)s, losses[s], want_loss[s], losses[s] - want_loss[s]);
  double worst = 0, worst_rel = 0;
  int64_t worst_at = 0;
  for (int64_t s = 0; s < kSteps; ++s) {
    const double d = std::fabs(losses[s] - want_loss[s]);
    if (d > worst) worst = d, worst_at = s, worst_rel = d / std::fabs(want_loss[s]);
  }
  std::printf("  %s: loss %.6f -> %.6f (torch %.6f -> %.6f); max |dloss| %.3g (rel %.3g) at step %lld\n",
              v.name, losses[0], losses.back(), want_loss[0], want_loss.back(), worst, worst_rel,
              (long long)worst_at);
  const auto lr = test::tensors_close(losses.data(), want_loss.data(), kSteps, 1e-4, 1e-3,
                                      std::string(v.name) + " losses");
  EXPECT_TRUE(lr);
  EXPECT_NEAR(losses[0], want_loss[0], 1e-6 * std::fabs(want_loss[0]) + 1e-7) << "step 0 (same weights)";
  for (int l = 0; l < 3; ++l) {
    const std::string n = "dense_" + std::to_string(l + 1);
    auto k = h5_read_float_checked(g.get(), n + "/kernel", Shape{dims[l][0], dims[l][1]}, path);
    auto b = h5_read_float_checked(g.get(), n + "/bias", Shape{dims[l][1]}, path);
    Tensor gk = head.params().kernel(HeadSection::Params, l);
    Tensor gb = head.params().bias(HeadSection::Params, l);
    const auto rk = test::tensors_close(gk.data(), k.data(), k.size(), v.lr, 1e-2,
                                        std::string(v.name) + " " + n + " kernel");
    const auto rb = test::tensors_close(gb.data(), b.data(), b.size(), v.lr, 1e-2,
                                        std::string(v.name) + " " + n + " bias");
    std::printf("  %s\n  %s\n", rk.message(), rb.message());
    EXPECT_TRUE(rk);
    EXPECT_TRUE(rb);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, HeadTraining, ::testing::Range(0, 4),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return std::string(kVariants[i.param].name);
                         });
