// tests/test_inception_graph.cpp: the Inception v3 graph (models/inception_graph.h) against facts
// from outside the code that builds it: Keras' own weight file (every layer name, every kernel
// and batch-norm shape, the order of the pools and concats), the published block output sizes
// (35x35x288, 17x17x768, 8x8x1280, 8x8x2048), Keras' parameter count for include_top=False, and
// the multiply-adds per image as a closed form per block and as the published 5.7 G figure. Also
// that the CPU executor reports its taps in graph order with the graph's shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "engine/hdf5_io.h"
#include "models/inception_graph.h"
#include "models/inception_v3.h"
#include "models/inception_weights.h"
#include "test_util.h"

using namespace engine;
using engine::test::reference_file;

namespace {

int count_ops(GraphOpType t) {
  const auto& ops = inception_v3_graph().ops;
  return static_cast<int>(
      std::count_if(ops.begin(), ops.end(), [&](const GraphOp& o) { return o.type == t; }));
}

}  // namespace

TEST(InceptionGraph, OpCountsAndKeras2NamesInCreationOrder) {
  const InceptionGraph& g = inception_v3_graph();
  EXPECT_EQ(count_ops(GraphOpType::Conv), 94);
  EXPECT_EQ(count_ops(GraphOpType::MaxPool), 4);  // 2 in the stem, mixed3, mixed8
  EXPECT_EQ(count_ops(GraphOpType::AvgPool), 9);  // one per mixed0..2, 4..7, 9..10
  EXPECT_EQ(count_ops(GraphOpType::Concat), 11);  // mixed0..mixed10
  EXPECT_EQ(count_ops(GraphOpType::GlobalAvgPool), 1);
  ASSERT_EQ(g.conv_ops.size(), 94u);
  for (int i = 0; i < 94; ++i) {
    const GraphOp& op = g.conv(i);
    EXPECT_EQ(op.weight, i);
    EXPECT_EQ(op.name, "conv2d_" + std::to_string(i + 1));
    EXPECT_EQ(op.bn_name, "batch_normalization_" + std::to_string(i + 1));
    EXPECT_EQ(g.tensor(op.output).name, "activation_" + std::to_string(i + 1));
    if (i > 0) {
      EXPECT_LT(g.conv_ops[i - 1], g.conv_ops[i]) << "weight order = op order";
    }
  }
  EXPECT_EQ(g.tensor(g.input).name, "input_1");
  EXPECT_EQ(g.tensor(g.input).h, 299);
  EXPECT_EQ(g.tensor(g.input).c, 3);
  EXPECT_EQ(g.tensor(g.output).c, 2048);
  EXPECT_EQ(g.tensor(g.output).h * g.tensor(g.output).w, 1);
}

TEST(InceptionGraph, TopologicalAndShapeConsistent) {
  const InceptionGraph& g = inception_v3_graph();
  std::vector<int> produced(g.tensors.size(), 0), uses(g.tensors.size(), 0);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const GraphOp& op = g.ops[i];
    ASSERT_FALSE(op.inputs.empty()) << op.name;
    for (int in : op.inputs) {
      ASSERT_TRUE(in == g.input || produced[in]) << op.name << " reads a tensor not yet produced";
      ++uses[in];
    }
    EXPECT_EQ(produced[op.output]++, 0) << op.name;
    EXPECT_EQ(g.tensor(op.output).producer, static_cast<int>(i));
    const GraphTensor& x = g.tensor(op.inputs[0]);
    const GraphTensor& y = g.tensor(op.output);
    switch (op.type) {
      case GraphOpType::Conv:
        EXPECT_EQ(op.cin, x.c) << op.name;
        EXPECT_EQ(op.cout, y.c) << op.name;
        break;
      case GraphOpType::MaxPool:  // 3x3 stride 2 'valid': (h - 3) / 2 + 1
        EXPECT_TRUE(op.kh == 3 && op.kw == 3 && op.stride == 2 && op.padding == Padding::Valid)
            << op.name;
        EXPECT_EQ(y.h, (x.h - 3) / 2 + 1) << op.name;
        EXPECT_EQ(y.c, x.c) << op.name;
        break;
      case GraphOpType::AvgPool:  // 3x3 stride 1 'same': size kept
        EXPECT_TRUE(op.kh == 3 && op.kw == 3 && op.stride == 1 && op.padding == Padding::Same)
            << op.name;
        EXPECT_EQ(y.h, x.h) << op.name;
        EXPECT_EQ(y.c, x.c) << op.name;
        break;
      case GraphOpType::Concat: {
        int64_t c = 0;
        for (int in : op.inputs) {
          c += g.tensor(in).c;
          EXPECT_EQ(g.tensor(in).h, y.h) << op.name;
        }
        EXPECT_EQ(c, y.c) << op.name;
        break;
      }
      case GraphOpType::GlobalAvgPool: EXPECT_EQ(y.c, x.c); break;
    }
  }
  for (size_t t = 0; t < g.tensors.size(); ++t) {
    EXPECT_EQ(uses[t], g.tensors[t].uses) << g.tensors[t].name;
    EXPECT_EQ(uses[t] == 0, static_cast<int>(t) == g.output)
        << g.tensors[t].name << " is never read";
  }
}

TEST(InceptionGraph, BlockOutputsAreThePublishedSizes) {
  // Szegedy et al. 2016, Table 1 / keras_applications comments: 35x35x288 (after mixed0's 256),
  // 17x17x768, 8x8x1280, 8x8x2048; the stem ends at 35x35x192.
  const std::map<std::string, std::array<int64_t, 3>> want = {
      {"stem", {35, 35, 192}},   {"mixed0", {35, 35, 256}}, {"mixed1", {35, 35, 288}},
      {"mixed2", {35, 35, 288}}, {"mixed3", {17, 17, 768}}, {"mixed4", {17, 17, 768}},
      {"mixed5", {17, 17, 768}}, {"mixed6", {17, 17, 768}}, {"mixed7", {17, 17, 768}},
      {"mixed8", {8, 8, 1280}},  {"mixed9", {8, 8, 2048}},  {"mixed10", {8, 8, 2048}}};
  const InceptionGraph& g = inception_v3_graph();
  std::vector<std::string> taps;
  for (const GraphOp& op : g.ops) {
    const GraphTensor& t = g.tensor(op.output);
    if (t.tap.empty()) continue;
    taps.push_back(t.tap);
    ASSERT_TRUE(want.count(t.tap)) << t.tap;
    EXPECT_EQ((std::array<int64_t, 3>{t.h, t.w, t.c}), want.at(t.tap)) << t.tap;
  }
  const std::vector<std::string> order = {"stem",   "mixed0", "mixed1", "mixed2",
                                          "mixed3", "mixed4", "mixed5", "mixed6",
                                          "mixed7", "mixed8", "mixed9", "mixed10"};
  EXPECT_EQ(taps, order);
  EXPECT_EQ(g.tensor(g.find_tensor("mixed10")).last_use, static_cast<int>(g.ops.size()) - 1);
}

TEST(InceptionGraph, ParametersMatchKerasIncludeTopFalse) {
  // Keras InceptionV3(include_top=False).count_params() = 21,802,784; non-trainable (moving mean
  // and variance) 34,432. A conv has kh*kw*cin*cout weights, its batch norm beta, mean, variance.
  int64_t params = 0, non_trainable = 0;
  for (int op : inception_v3_graph().conv_ops) {
    const GraphOp& c = inception_v3_graph().ops[static_cast<size_t>(op)];
    params += int64_t(c.kh) * c.kw * c.cin * c.cout + 3 * c.cout;
    non_trainable += 2 * c.cout;
  }
  EXPECT_EQ(params, 21802784);
  EXPECT_EQ(non_trainable, 34432);
}

TEST(InceptionGraph, MultiplyAddsMatchClosedFormAndPublishedFigure) {
  // Per block, written from the block diagrams (Ho*Wo times the sum of kh*kw*cin*cout), not from
  // the graph: the stem's five convs at 149^2, 147^2, 147^2, 73^2, 71^2; mixed0..2 at 35^2;
  // mixed3 (two stride-2 convs at 17^2); mixed4..7 at 17^2 with c channels in the 7x7 branches;
  // mixed8 (stride-2 convs at 8^2); mixed9..10 at 8^2.
  auto b35 = [](int64_t cin, int64_t pf) {
    return 1225 * (cin * (64 + 48 + 64 + pf) + 25 * 48 * 64 + 9 * 64 * 96 + 9 * 96 * 96);
  };
  auto b17 = [](int64_t c) {
    return 289 * (2 * 768 * 192 + 2 * 768 * c + 4 * 7 * c * c + 2 * 7 * c * 192);
  };
  auto b8 = [](int64_t cin) {
    return 64 * (cin * (320 + 384 + 448 + 192) + 12 * 384 * 384 + 9 * 448 * 384);
  };
  const int64_t stem = 149 * 149 * 27 * 32 + 147 * 147 * 9 * 32 * 32 + 147 * 147 * 9 * 32 * 64 +
                       73 * 73 * 64 * 80 + 71 * 71 * 9 * 80 * 192;
  const int64_t m3 = 289 * 9 * 288 * 384 + 1225 * 288 * 64 + 1225 * 9 * 64 * 96 + 289 * 9 * 96 * 96;
  const int64_t m8 =
      2 * 289 * 768 * 192 + 64 * 9 * 192 * 320 + 2 * 289 * 7 * 192 * 192 + 64 * 9 * 192 * 192;
  const int64_t macs = stem + b35(192, 32) + b35(256, 64) + b35(288, 64) + m3 + b17(128) +
                       2 * b17(160) + b17(192) + m8 + b8(1280) + b8(2048);
  EXPECT_EQ(macs, 5711168096);
  EXPECT_DOUBLE_EQ(inception_v3_flops_per_image(), 2.0 * double(macs));
  // torchvision's Inception_V3_Weights lists 5.71 GFLOPS (multiply-adds) at 299x299: the convs
  // are all but 0.1% of it.
  EXPECT_NEAR(double(macs) / 1e9, 5.71, 0.01);
  // The weight table is the graph's convs: same shapes and input sizes.
  const auto& defs = inception_v3_conv_defs();
  ASSERT_EQ(defs.size(), 94u);
  for (int i = 0; i < 94; ++i) {
    const GraphOp& op = inception_v3_graph().conv(i);
    EXPECT_EQ(defs[i].conv_layer, op.name);
    EXPECT_EQ(defs[i].in_hw, inception_v3_graph().conv_input(i).h) << op.name;
  }
}

TEST(InceptionGraph, EveryNameAndKernelShapeIsInKerasOwnWeightFile) {
  // Written by tf_keras' model.save_weights for InceptionV3(include_top=False, pooling='avg'),
  // renamed to the Keras 2 (1-based) layout (tests/reference/keras_reference.py).
  const std::string path = reference_file("keras/inception_v3_keras_1based.h5");
  H5File f = H5File::open_read(path);
  const std::vector<std::string> layers = h5_read_string_array_attr(f.id(), "layer_names", path);
  const InceptionGraph& g = inception_v3_graph();
  std::set<std::string> ours;
  for (const GraphTensor& t : g.tensors) ours.insert(t.name);
  for (const GraphOp& op : g.ops) {
    ours.insert(op.name);
    if (op.type == GraphOpType::Conv) ours.insert(op.bn_name);
  }
  std::set<std::string> keras(layers.begin(), layers.end()), missing, extra;
  for (const std::string& n : ours)
    if (!keras.count(n)) missing.insert(n);
  for (const std::string& n : keras)
    if (!ours.count(n)) extra.insert(n);
  EXPECT_TRUE(missing.empty()) << "graph names absent from Keras' file, e.g. " << *missing.begin();
  // Only the inner concats of mixed9/mixed10, which the graph flattens into the block's concat.
  EXPECT_EQ(extra,
            (std::set<std::string>{"mixed9_0", "concatenate_1", "mixed9_1", "concatenate_2"}));
  // Keras lists pools and concats in the order it created them; so does the graph.
  std::vector<std::string> keras_order, graph_order;
  for (const std::string& n : layers)
    if (ours.count(n) &&
        (n.rfind("max_", 0) == 0 || n.rfind("average_", 0) == 0 || n.rfind("mixed", 0) == 0))
      keras_order.push_back(n);
  for (const GraphOp& op : g.ops)
    if (op.type != GraphOpType::Conv && op.type != GraphOpType::GlobalAvgPool)
      graph_order.push_back(op.name);
  EXPECT_EQ(graph_order, keras_order);
  // Kernel (kh, kw, cin, cout) and batch-norm (cout) shapes as Keras stored them.
  for (int i = 0; i < 94; ++i) {
    const GraphOp& op = g.conv(i);
    H5Dataset k = h5_open_dataset(f.id(), "/" + op.name + "/" + op.name + "/kernel:0", path);
    EXPECT_EQ(k.dims, (std::vector<hsize_t>{hsize_t(op.kh), hsize_t(op.kw), hsize_t(op.cin),
                                            hsize_t(op.cout)}))
        << op.name;
    H5Dataset b =
        h5_open_dataset(f.id(), "/" + op.bn_name + "/" + op.bn_name + "/moving_mean:0", path);
    EXPECT_EQ(b.dims, (std::vector<hsize_t>{hsize_t(op.cout)})) << op.bn_name;
  }
}

TEST(InceptionGraph, CpuExecutorTapsFollowTheGraph) {
  // Zero weights: the numbers do not matter here, the order and shapes of the taps do.
  InceptionWeights w;
  for (const ConvDef& d : inception_v3_conv_defs())
    w.convs.push_back({std::vector<float>(size_t(d.kh * d.kw * d.cin * d.cout), 0.f),
                       std::vector<float>(size_t(d.cout), 0.5f)});
  InceptionV3Cpu model(w);
  Tensor x = Tensor::zeros(Shape{1, 299, 299, 3});
  Tensor b(Shape{1, kBottleneckSize});
  std::vector<std::string> seen;
  const InceptionGraph& g = inception_v3_graph();
  model.forward(x, b, [&](const std::string& name, const Tensor& t, int64_t) {
    seen.push_back(name);
    int id = -1;
    for (size_t i = 0; i < g.tensors.size(); ++i)
      if (g.tensors[i].tap == name) id = static_cast<int>(i);
    ASSERT_GE(id, 0) << name;
    EXPECT_EQ(t.shape(), (Shape{1, g.tensor(id).h, g.tensor(id).w, g.tensor(id).c})) << name;
  });
  EXPECT_EQ(seen.size(), 12u);
  EXPECT_EQ(seen.front(), "stem");
  EXPECT_EQ(seen.back(), "mixed10");
  // Zero kernels and bias 0.5: every ReLU output is 0.5 (pools of 0.5 too), so the bottleneck is.
  for (int64_t i = 0; i < kBottleneckSize; ++i) ASSERT_EQ(b.data()[i], 0.5f) << i;
}
