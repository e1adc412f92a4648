// tests/test_layers.cpp: layer tests of the CPU kernels (conv, pools, concat, global average pool,
// dense) against PyTorch float64 reference tensors in reference.h5 (written by
// tests/reference/make_reference.py), plus closed-form tests that need no reference file (TF
// padding table, average-pool divisors, error messages). Run: ctest -R test_layers, or
// ENGINE_REFERENCE_DIR=<dir> ./test_layers. Each expected case is its own CTest test
// (Reference/LayerCase.Matches/<case>); ReferenceFile.EveryCase also runs any case added later.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "kernels/conv2d.h"
#include "kernels/dense.h"
#include "kernels/pool2d.h"
#include "tests/kernel_cases_layers.h"
#include "tests/test_util.h"

namespace engine {
namespace {

using test::tensors_close;

const std::vector<std::string> kExpectedCases = {"conv_1x1",
                                                 "conv_3x3_same",
                                                 "conv_3x3_valid",
                                                 "conv_5x5_same",
                                                 "conv_1x7_same",
                                                 "conv_7x1_same",
                                                 "conv_1x3_same",
                                                 "conv_3x1_same",
                                                 "conv_3x3_s2_valid",
                                                 "conv_3x3_s2_same",
                                                 "conv_1x1_s2_valid",
                                                 "max_pool_3x3_s2_valid",
                                                 "max_pool_3x3_s2_same",
                                                 "avg_pool_3x3_s1_same",
                                                 "avg_pool_3x3_s2_same",
                                                 "avg_pool_3x3_s1_valid",
                                                 "concat",
                                                 "global_avg_pool",
                                                 "dense"};

// Keras BatchNormalization epsilon (docs/ARCHITECTURE.md), also used by the generator.
constexpr float kBnEps = 1e-3f;

// Tolerances (|got - want| <= atol + rtol*|want|, want is float64 rounded to fp32):
// - conv: fp32 products and fp32 accumulation over K = kh*kw*cin terms (oneDNN), plus the fp32
//   rounding of the BN-folded weights, against a float64 reference. A K-term fp32 dot product
//   errs by at most ~K*u*sum|x*w| (u = 2^-24), typically sqrt(K)*u*sum|x*w| since the roundings
//   are independent; so the absolute tolerance is max(1e-5, 2*sqrt(K)*u*M), M = the largest
//   sum|x*w| over outputs (computed with the reference conv on |x|, |w|): 1e-5 to 1e-4 for the
//   small reference cases, growing only for wide layers; wrong taps or padding give errors of
//   the order of the terms themselves (~0.1), far above it. rtol 1e-5 (~170 ulps) covers large
//   outputs. The double-accumulating reference conv sees only the folding rounding (u*M).
// (kConvAtol = 1e-5, kConvRtol = 1e-5 and conv_atol() live in tests/kernel_cases_layers.h, shared
// with the per-device conv cases of tests/test_kernels_layers.cpp.)
using kernel_cases::conv_atol;
using kernel_cases::kConvAtol;
using kernel_cases::kConvRtol;
// - pools: max is exact; the average is <= 9 fp32 additions and one multiply by 1/count, so a
//   few ulps (~1e-7 relative for O(1) data): 1e-6.
constexpr double kPoolAtol = 1e-6, kPoolRtol = 1e-6;
// - global average pool: double sum, one rounding: 1e-6.
// - dense: reference version double accumulation (1e-6); sgemm fp32 accumulation over cin
//   terms, same argument as the conv (1e-5).
constexpr double kDenseRefTol = 1e-6, kDenseSgemmTol = 1e-5;

Padding parse_padding(const std::string& s, const std::string& where) {
  if (s == "same") return Padding::Same;
  if (s == "valid") return Padding::Valid;
  fail(where, ": padding '", s, "' is neither 'same' nor 'valid'");
}

// Opens reference.h5 and checks its format version before anything else is read.
H5File open_reference() {
  H5File f = H5File::open_read(test::reference_file("reference.h5"));
  const int64_t v = h5_read_int_attr(f.id(), "format_version", f.path());
  if (v != 1) fail(f.path(), ": format_version ", v, ", this test reads version 1");
  return f;
}

std::vector<std::string> list_cases(const H5File& f) {
  return h5_group_members(f.id(), "layers", f.path());
}

void check_conv_case(hid_t g, const std::string& where) {
  Tensor x = h5_read_tensor(g, "x", where);
  Tensor want = h5_read_tensor(g, "y", where);
  H5FloatArray k = h5_read_float_array(g, "kernel", where);
  ASSERT_EQ(k.dims.size(), 4u) << where << ": kernel rank";
  Conv2dSpec spec;
  spec.kh = static_cast<int>(h5_read_int_attr(g, "kh", where));
  spec.kw = static_cast<int>(h5_read_int_attr(g, "kw", where));
  spec.stride = static_cast<int>(h5_read_int_attr(g, "stride", where));
  spec.padding = parse_padding(h5_read_string_attr(g, "padding", where), where);
  spec.relu = true;
  const int64_t cin = k.dims[2], cout = k.dims[3];
  ASSERT_EQ(k.dims[0], spec.kh) << where;
  ASSERT_EQ(k.dims[1], spec.kw) << where;
  auto beta = h5_read_float_checked(g, "beta", Shape{cout}, where);
  auto mean = h5_read_float_checked(g, "moving_mean", Shape{cout}, where);
  auto var = h5_read_float_checked(g, "moving_variance", Shape{cout}, where);
  std::vector<float> w = k.data, bias;
  fold_batch_norm(w, cout, beta.data(), mean.data(), var.data(), kBnEps, bias);

  const double atol = conv_atol(x, w, cout, spec);
  Tensor y_ref(conv2d_output_shape(x.shape(), cout, spec));
  conv2d_forward_ref_cpu(x, w.data(), bias.data(), cout, spec, y_ref);
  EXPECT_CLOSE((y_ref, want, atol, kConvRtol, where + " conv2d_forward_ref_cpu"));

  Conv2dCpu conv(where, w, bias, cin, cout, spec);
  Tensor y(conv.output_shape(x.shape()));
  conv.forward(x, y);
  EXPECT_CLOSE((y, want, atol, kConvRtol, where + " Conv2dCpu"));
  conv.forward(x, y);  // second call: cached primitive, same answer
  EXPECT_CLOSE((y, want, atol, kConvRtol, where + " Conv2dCpu (cached)"));
}

void check_pool_case(hid_t g, const std::string& where, bool is_max) {
  Tensor x = h5_read_tensor(g, "x", where);
  Tensor want = h5_read_tensor(g, "y", where);
  const int k = static_cast<int>(h5_read_int_attr(g, "k", where));
  const int s = static_cast<int>(h5_read_int_attr(g, "stride", where));
  const Padding p = parse_padding(h5_read_string_attr(g, "padding", where), where);
  Tensor y(pool2d_output_shape(x.shape(), k, s, p));
  if (is_max)
    max_pool2d_forward_cpu(x, k, s, p, y);
  else
    avg_pool2d_forward_cpu(x, k, s, p, y);
  EXPECT_CLOSE((y, want, kPoolAtol, kPoolRtol, where));
}

void check_concat_case(hid_t g, const std::string& where) {
  Tensor x0 = h5_read_tensor(g, "x0", where), x1 = h5_read_tensor(g, "x1", where),
         x2 = h5_read_tensor(g, "x2", where);
  Tensor want = h5_read_tensor(g, "y", where);
  Tensor y(want.shape());
  concat_channels_cpu({&x0, &x1, &x2}, y);
  EXPECT_CLOSE((y, want, 0, 0, where));  // a copy: bit exact
}

void check_gap_case(hid_t g, const std::string& where) {
  Tensor x = h5_read_tensor(g, "x", where);
  Tensor want = h5_read_tensor(g, "y", where);
  Tensor y(Shape{x.n(), x.c()});
  global_avg_pool_cpu(x, y);
  EXPECT_CLOSE((y, want, kPoolAtol, kPoolRtol, where));
}

void check_dense_case(hid_t g, const std::string& where) {
  Tensor x = h5_read_tensor(g, "x", where);
  Tensor want = h5_read_tensor(g, "y", where);
  ASSERT_EQ(x.rank(), 2) << where;
  H5FloatArray k = h5_read_float_array(g, "kernel", where);
  ASSERT_EQ(k.dims.size(), 2u) << where;
  ASSERT_EQ(k.dims[0], x.dim(1)) << where;
  const int64_t cout = k.dims[1];
  auto b = h5_read_float_checked(g, "bias", Shape{cout}, where);
  Tensor y(Shape{x.dim(0), cout});
  dense_forward_ref_cpu(x, k.data.data(), b.data(), cout, y);
  EXPECT_CLOSE((y, want, kDenseRefTol, kDenseRefTol, where + " dense_forward_ref_cpu"));
  Tensor y2(Shape{x.dim(0), cout});
  dense_forward_cpu(x, k.data.data(), b.data(), cout, y2);
  EXPECT_CLOSE((y2, want, kDenseSgemmTol, kDenseSgemmTol, where + " dense_forward_cpu"));
}

// Runs one /layers/<name> case, dispatching on its 'op' attribute.
void run_case(const H5File& f, const std::string& name) {
  const std::string obj = "layers/" + name;
  ASSERT_TRUE(h5_exists(f.id(), obj)) << f.path() << ": missing case /" << obj;
  H5Id g = h5_open_group(f.id(), obj, f.path());
  const std::string where = f.path() + ":/" + obj;
  const std::string op = h5_read_string_attr(g.get(), "op", where);
  if (op == "conv_bn_relu")
    check_conv_case(g.get(), where);
  else if (op == "max_pool" || op == "avg_pool")
    check_pool_case(g.get(), where, op == "max_pool");
  else if (op == "concat")
    check_concat_case(g.get(), where);
  else if (op == "global_avg_pool")
    check_gap_case(g.get(), where);
  else if (op == "dense")
    check_dense_case(g.get(), where);
  else
    ADD_FAILURE() << where << ": unknown op '" << op << "'";
}

class LayerCase : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerCase, Matches) {
  H5File f = open_reference();
  run_case(f, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Reference, LayerCase, ::testing::ValuesIn(kExpectedCases),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// The file must hold every expected case, and any case added later is run here too (the
// parameter list above is fixed at compile time because CTest discovers tests before the
// generator has written the file).
TEST(ReferenceFile, EveryCase) {
  H5File f = open_reference();
  const auto names = list_cases(f);
  for (const auto& e : kExpectedCases)
    EXPECT_NE(std::find(names.begin(), names.end(), e), names.end())
        << f.path() << ": expected case /layers/" << e << " is missing";
  for (const auto& n : names)
    if (std::find(kExpectedCases.begin(), kExpectedCases.end(), n) == kExpectedCases.end()) {
      SCOPED_TRACE("extra case " + n);
      run_case(f, n);
    }
}

// ---------------------------------------------------------------------------------------------
// Closed-form tests: no reference file needed.

TEST(TfPadding, Table) {
  struct Row {
    int64_t in, k, s;
    Padding p;
    PadInfo want;
  };
  const Row rows[] = {
      {299, 3, 2, Padding::Valid, {149, 0, 0}},  // stem conv 1
      {149, 3, 1, Padding::Valid, {147, 0, 0}},
      {147, 3, 1, Padding::Same, {147, 1, 1}},
      {147, 3, 2, Padding::Valid, {73, 0, 0}},
      {35, 3, 2, Padding::Valid, {17, 0, 0}},  // mixed3
      {17, 3, 2, Padding::Valid, {8, 0, 0}},   // mixed8
      {7, 3, 2, Padding::Same, {4, 1, 1}},
      {8, 3, 2, Padding::Same, {4, 0, 1}},  // odd total: the extra pixel goes after
      {17, 7, 1, Padding::Same, {17, 3, 3}},
      {35, 5, 1, Padding::Same, {35, 2, 2}},
      {8, 1, 1, Padding::Same, {8, 0, 0}},
      {9, 1, 2, Padding::Valid, {5, 0, 0}},
  };
  for (const Row& r : rows) {
    PadInfo got = tf_padding(r.in, r.k, r.s, r.p);
    EXPECT_EQ(got.out, r.want.out)
        << "in=" << r.in << " k=" << r.k << " s=" << r.s << " " << padding_name(r.p);
    EXPECT_EQ(got.before, r.want.before) << "in=" << r.in << " k=" << r.k << " s=" << r.s;
    EXPECT_EQ(got.after, r.want.after) << "in=" << r.in << " k=" << r.k << " s=" << r.s;
  }
  EXPECT_THROW(tf_padding(2, 3, 1, Padding::Valid), Error);
  EXPECT_EQ(conv2d_output_shape(Shape{2, 299, 299, 3}, 32, {3, 3, 2, Padding::Valid, true}),
            (Shape{2, 149, 149, 32}));
}

TEST(AvgPool, DividesByValidCells) {
  // One 36 at (0,0), zeros elsewhere, 3x3 s1 'same' on 5x5: the corner window holds 4 valid
  // cells (36/4 = 9), the edge window (0,1) 6 (36/6 = 6), the interior (1,1) 9 (36/9 = 4).
  // torch's count_include_pad=True would give 4 everywhere.
  const int64_t C = 3;
  Tensor x = Tensor::zeros(Shape{1, 5, 5, C});
  for (int64_t c = 0; c < C; ++c) x.data()[c] = 36.f;
  Tensor y(pool2d_output_shape(x.shape(), 3, 1, Padding::Same));
  avg_pool2d_forward_cpu(x, 3, 1, Padding::Same, y);
  auto at = [&](int h, int w, int c) { return y.data()[(h * 5 + w) * C + c]; };
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_FLOAT_EQ(at(0, 0, c), 9.f);
    EXPECT_FLOAT_EQ(at(0, 1, c), 6.f);
    EXPECT_FLOAT_EQ(at(1, 0, c), 6.f);
    EXPECT_FLOAT_EQ(at(1, 1, c), 4.f);
    EXPECT_FLOAT_EQ(at(2, 2, c), 0.f);
  }
  // Ones in, ones out everywhere: the divisor always equals the number of cells summed.
  Tensor ones = Tensor::zeros(Shape{2, 6, 7, 5});
  std::fill(ones.data(), ones.data() + ones.numel(), 1.f);
  Tensor y2(pool2d_output_shape(ones.shape(), 3, 2, Padding::Same));
  avg_pool2d_forward_cpu(ones, 3, 2, Padding::Same, y2);
  for (int64_t i = 0; i < y2.numel(); ++i) ASSERT_FLOAT_EQ(y2.data()[i], 1.f) << "index " << i;
}

TEST(MaxPool, SameIgnoresPadding) {
  // All -5: a max that let zero padding in would output 0 on the border.
  Tensor x = Tensor::zeros(Shape{1, 8, 8, 4});
  std::fill(x.data(), x.data() + x.numel(), -5.f);
  Tensor y(pool2d_output_shape(x.shape(), 3, 2, Padding::Same));
  max_pool2d_forward_cpu(x, 3, 2, Padding::Same, y);
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data()[i], -5.f) << "index " << i;
}

Tensor random_tensor(Shape s, uint32_t seed) {
  Tensor t(std::move(s));
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = d(gen);
  return t;
}

std::vector<float> random_vector(size_t n, float scale, uint32_t seed) {
  std::vector<float> v(n);
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, scale);
  for (auto& e : v) e = d(gen);
  return v;
}

// oneDNN vs the reference on Inception-like channel counts (wider K than the reference file)
// and several input shapes through one Conv2dCpu, exercising the per-shape primitive cache.
TEST(Conv2dCpu, MatchesReferenceAcrossShapes) {
  struct Case {
    int kh, kw, stride;
    Padding p;
    int64_t cin, cout;
  };
  const Case cases[] = {{1, 7, 1, Padding::Same, 64, 48},
                        {3, 3, 2, Padding::Valid, 32, 40},
                        {3, 3, 1, Padding::Same, 48, 64},
                        {1, 1, 1, Padding::Same, 96, 32}};
  uint32_t seed = 1;
  for (const Case& c : cases) {
    Conv2dSpec spec{c.kh, c.kw, c.stride, c.p, true};
    const float wscale = 1.f / std::sqrt(static_cast<float>(c.kh * c.kw * c.cin));
    auto w = random_vector(static_cast<size_t>(c.kh) * c.kw * c.cin * c.cout, wscale, seed++);
    auto b = random_vector(static_cast<size_t>(c.cout), 0.5f, seed++);
    Conv2dCpu conv("test_conv", w, b, c.cin, c.cout, spec);
    for (Shape xs : {Shape{2, 17, 17, c.cin}, Shape{1, 9, 11, c.cin}, Shape{3, 17, 17, c.cin}}) {
      Tensor x = random_tensor(xs, seed++);
      Tensor want(conv.output_shape(xs)), got(conv.output_shape(xs));
      conv2d_forward_ref_cpu(x, w.data(), b.data(), c.cout, spec, want);
      conv.forward(x, got);
      EXPECT_CLOSE((got, want, conv_atol(x, w, c.cout, spec), kConvRtol,
                    "k" + std::to_string(c.kh) + "x" + std::to_string(c.kw) + " " + xs.str()));
    }
  }
}

TEST(Dense, SgemmMatchesReference) {
  Tensor x = random_tensor(Shape{5, 2048}, 7);
  auto w = random_vector(2048 * 9, 0.02f, 8), b = random_vector(9, 1.f, 9);
  Tensor want(Shape{5, 9}), got(Shape{5, 9});
  dense_forward_ref_cpu(x, w.data(), b.data(), 9, want);
  dense_forward_cpu(x, w.data(), b.data(), 9, got);
  EXPECT_CLOSE((got, want, kDenseSgemmTol, kDenseSgemmTol, "dense 2048->9"));
}

// Expects `f` to throw engine::Error whose message contains `needle`.
template <typename F>
void expect_error_naming(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no engine::Error thrown (expected one naming '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not name '" << needle << "'";
  }
}

TEST(Conv2dCpu, ErrorsNameTheLayer) {
  Conv2dSpec spec{3, 3, 1, Padding::Same, true};
  std::vector<float> w(3 * 3 * 8 * 4, 0.1f), b(4, 0.f);
  Conv2dCpu conv("mixed5_conv_17", w, b, 8, 4, spec);
  Tensor x_bad = Tensor::zeros(Shape{1, 6, 6, 7});  // cin 7 instead of 8
  Tensor y(Shape{1, 6, 6, 4});
  expect_error_naming([&] { conv.forward(x_bad, y); }, "mixed5_conv_17");
  Tensor x = Tensor::zeros(Shape{1, 6, 6, 8});
  Tensor y_bad(Shape{1, 5, 6, 4});
  expect_error_naming([&] { conv.forward(x, y_bad); }, "mixed5_conv_17");
  Tensor x3 = Tensor::zeros(Shape{6, 6, 8});
  expect_error_naming([&] { conv.forward(x3, y); }, "mixed5_conv_17");
  expect_error_naming([&] { Conv2dCpu("bad_weights", std::vector<float>(5), b, 8, 4, spec); },
                      "bad_weights");
}

TEST(Pool2d, WrongOutputShapeThrows) {
  Tensor x = Tensor::zeros(Shape{1, 9, 9, 2});
  Tensor y(Shape{1, 5, 5, 2});  // valid 3x3 s2 gives 4x4
  expect_error_naming([&] { max_pool2d_forward_cpu(x, 3, 2, Padding::Valid, y); }, "max_pool2d");
  expect_error_naming([&] { avg_pool2d_forward_cpu(x, 3, 2, Padding::Valid, y); }, "avg_pool2d");
  Tensor a = Tensor::zeros(Shape{1, 4, 4, 2}), c = Tensor::zeros(Shape{1, 4, 4, 3});
  Tensor yc(Shape{1, 4, 4, 4});
  expect_error_naming([&] { concat_channels_cpu({&a, &c}, yc); }, "concat_channels");
}

}  // namespace
}  // namespace engine
