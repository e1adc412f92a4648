// tests/test_weights.cpp: the Keras HDF5 weight loader. Good files written by the PyTorch
// generator (1-based names at the root with the predictions top; 0-based names under
// /model_weights with split layer_names0..2, no top) must load to identical folded weights; every
// malformed file in build/reference/bad/ must give one engine::Error naming the file, the dataset
// or layer and the reason; the tool must turn that into one line and exit 1, never a crash.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include "engine/error.h"
#include "models/inception_weights.h"
#include "test_util.h"

using namespace engine;
using engine::test::reference_file;

TEST(InceptionArchitecture, ParameterCountMatchesKeras) {
  // Keras InceptionV3(include_top=False): 21,802,784 parameters, of which 34,432 non-trainable
  // (moving mean + variance, so sum(cout) = 17,216); kernels + beta make up the rest.
  int64_t kernels = 0, channels = 0;
  for (const ConvDef& d : inception_v3_conv_defs())
    kernels += d.kh * d.kw * d.cin * d.cout, channels += d.cout;
  EXPECT_EQ(inception_v3_conv_defs().size(), 94u);
  EXPECT_EQ(2 * channels, 34432);
  EXPECT_EQ(kernels + 3 * channels, 21802784);
  for (size_t i = 0; i < inception_v3_conv_defs().size(); ++i)
    EXPECT_EQ(inception_v3_conv_defs()[i].index, static_cast<int>(i) + 1);
}

TEST(InceptionArchitecture, FlopsPerImageMatchesIndependentCount) {
  // 11,422,336,192 = sum of 2*kh*kw*cin*cout*Ho*Wo over the 94 convs, counted independently by
  // tests/reference/torch_inception.py conv_flops() (its own conv table and shape walk).
  EXPECT_DOUBLE_EQ(inception_v3_flops_per_image(), 11422336192.0);
}

TEST(WeightLoader, OneBasedRootAndZeroBasedModelWeightsAgree) {
  InceptionWeights a = load_inception_v3_weights(reference_file("inception_v3_1based.h5"));
  InceptionWeights b =
      load_inception_v3_weights(reference_file("inception_v3_0based_model_weights.h5"));
  EXPECT_FALSE(a.zero_based);
  EXPECT_FALSE(a.under_model_weights);
  EXPECT_TRUE(a.random_weights);  // the generator marks its files; tools warn on them
  EXPECT_NE(random_weights_warning(a).find("RANDOM"), std::string::npos);
  EXPECT_TRUE(a.has_top);
  EXPECT_EQ(a.top_classes, 1000);
  EXPECT_EQ(a.top_kernel.size(), 2048u * 1000u);
  EXPECT_TRUE(b.zero_based);
  EXPECT_TRUE(b.under_model_weights);
  EXPECT_FALSE(b.has_top);
  ASSERT_EQ(a.convs.size(), 94u);
  ASSERT_EQ(b.convs.size(), 94u);
  for (size_t i = 0; i < 94; ++i) {
    // Same stored numbers and the same folding arithmetic: bitwise identical.
    EXPECT_EQ(a.convs[i].w_hwio, b.convs[i].w_hwio) << "conv C" << i + 1;
    EXPECT_EQ(a.convs[i].bias, b.convs[i].bias) << "conv C" << i + 1;
  }
}

TEST(WeightLoader, FoldingIsTheClosedForm) {
  // y = (conv(x) - mean)/sqrt(var + 1e-3) + beta == conv'(x) + b with w' = w*s, b = beta - mean*s.
  std::vector<float> w = {1.f, 2.f, 3.f, 4.f};  // (1,1,2,2): cin 2, cout 2
  std::vector<float> beta = {0.5f, -1.f}, mean = {1.f, 2.f}, var = {3.f, 0.f}, bias;
  fold_batch_norm(w, 2, beta.data(), mean.data(), var.data(), 1e-3f, bias);
  const double s0 = 1 / std::sqrt(3.001), s1 = 1 / std::sqrt(0.001);
  EXPECT_NEAR(w[0], 1 * s0, 1e-6);
  EXPECT_NEAR(w[1], 2 * s1, 1e-4);
  EXPECT_NEAR(w[2], 3 * s0, 1e-6);
  EXPECT_NEAR(w[3], 4 * s1, 1e-4);
  EXPECT_NEAR(bias[0], 0.5 - 1 * s0, 1e-6);
  EXPECT_NEAR(bias[1], -1 - 2 * s1, 1e-4);
}

struct BadFile {
  const char* file;
  std::array<const char*, 3> must_contain;  // besides the file path
};

void PrintTo(const BadFile& b, std::ostream* os) { *os << b.file; }

class BadWeightFile : public ::testing::TestWithParam<BadFile> {};

TEST_P(BadWeightFile, OneLineErrorNamingFileAndReason) {
  const BadFile& c = GetParam();
  const std::string path = reference_file(std::string("bad/") + c.file);
  try {
    load_inception_v3_weights(path);
    FAIL() << path << " loaded without error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const char* s : c.must_contain)
      if (s) {
        EXPECT_NE(msg.find(s), std::string::npos) << "'" << s << "' not in: " << msg;
      }
    std::printf("  %s -> %s\n", c.file, msg.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Loader, BadWeightFile,
    ::testing::Values(
        BadFile{"missing_layer.h5", {"missing layer", "conv2d_50", nullptr}},
        BadFile{"wrong_shape.h5", {"conv2d_10", "expected shape", "found"}},
        BadFile{"wrong_dtype.h5",
                {"batch_normalization_3", "moving_mean", "expected float32, found float64"}},
        BadFile{"nan_value.h5", {"conv2d_7", "expected finite values, found nan", nullptr}},
        BadFile{"inf_value.h5",
                {"batch_normalization_20", "expected finite values, found inf", nullptr}},
        BadFile{"negative_variance.h5", {"batch_normalization_5", "moving_variance", ">= 0"}},
        BadFile{"truncated.h5", {"truncated", nullptr, nullptr}},
        BadFile{"not_hdf5.h5", {"not an HDF5 file", nullptr, nullptr}},
        BadFile{"empty.h5", {"empty file", nullptr, nullptr}},
        BadFile{"no_layer_names.h5", {"layer_names", "not a Keras weight file", nullptr}},
        BadFile{"missing_weight_dataset.h5", {"batch_normalization_30", "beta:0", "missing"}},
        BadFile{"wrong_rank.h5", {"conv2d_2", "expected shape (3, 3, 32, 32)", "found"}}),
    [](const ::testing::TestParamInfo<BadFile>& info) {
      std::string n = info.param.file;
      return n.substr(0, n.find('.'));
    });

TEST(WeightLoader, MissingPathAndDirectory) {
  EXPECT_THROW(
      {
        try {
          load_inception_v3_weights("/nonexistent/weights.h5");
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("/nonexistent/weights.h5: cannot open"),
                    std::string::npos);
          throw;
        }
      },
      Error);
  EXPECT_THROW(load_inception_v3_weights(engine::test::reference_dir()), Error);
}

TEST(WeightLoader, ToolPrintsOneLineAndExitsNonZero) {
  // The command-line program must turn a bad file into exactly one line on stderr and exit 1.
  const std::string bad = reference_file("bad/wrong_shape.h5");
  const std::string cmd = std::string(ENGINE_BINARY_DIR) + "/tools/inception_forward --weights " +
                          bad + " --images 1 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status)) << "tool crashed: " << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_EQ(out.rfind("error: " + bad, 0), 0u) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}
