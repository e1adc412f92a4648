// models/inception_graph.cpp: the Inception v3 graph, built the way
// keras_applications/inception_v3.py builds the model (same calls, same order, so Keras' layer
// counters give the same names); see the header.
#include "models/inception_graph.h"

#include "engine/error.h"

namespace engine {

namespace {

constexpr Padding kSame = Padding::Same, kValid = Padding::Valid;

// Appends ops and tensors; numbers each layer kind as Keras 2 does (1-based, per kind).
class Builder {
 public:
  InceptionGraph g;
  std::string block = "stem";

  int input(int64_t h, int64_t w, int64_t c) {
    g.input = add_tensor("input_1", h, w, c);
    return g.input;
  }
  // Keras' conv2d_bn(x, filters, num_row, num_col, padding='same', strides=(1, 1)).
  int conv(int x, int64_t cout, int kh, int kw, int stride = 1, Padding p = kSame) {
    const std::string n = std::to_string(++convs_);
    GraphOp op = make(GraphOpType::Conv, "conv2d_" + n, {x}, kh, kw, stride, p);
    op.weight = convs_ - 1;
    op.cin = g.tensor(x).c;
    op.cout = cout;
    op.bn_name = "batch_normalization_" + n;
    g.conv_ops.push_back(static_cast<int>(g.ops.size()));
    return add_op(op, "activation_" + n, cout);
  }
  // MaxPooling2D((3, 3), strides=(2, 2)): 'valid'.
  int max_pool(int x) {
    const std::string name = "max_pooling2d_" + std::to_string(++max_pools_);
    return add_op(make(GraphOpType::MaxPool, name, {x}, 3, 3, 2, kValid), name, g.tensor(x).c);
  }
  // AveragePooling2D((3, 3), strides=(1, 1), padding='same').
  int avg_pool(int x) {
    const std::string name = "average_pooling2d_" + std::to_string(++avg_pools_);
    return add_op(make(GraphOpType::AvgPool, name, {x}, 3, 3, 1, kSame), name, g.tensor(x).c);
  }
  // concatenate(xs, axis=channels, name=name); the block's output, reported as a tap.
  int concat(const std::vector<int>& xs, const std::string& name) {
    int64_t c = 0;
    for (int x : xs) {
      ENGINE_CHECK(g.tensor(x).h == g.tensor(xs[0]).h && g.tensor(x).w == g.tensor(xs[0]).w,
                   "inception graph: ", name, ": concat inputs differ in size");
      c += g.tensor(x).c;
    }
    GraphOp op = make(GraphOpType::Concat, name, xs, 0, 0, 1, kValid);
    const int y = add_op(op, name, c, g.tensor(xs[0]).h, g.tensor(xs[0]).w);
    g.tensors.back().tap = name;
    return y;
  }
  // GlobalAveragePooling2D(): what InceptionV3(include_top=False, pooling='avg') ends in.
  int global_avg_pool(int x) {
    const std::string name = "global_average_pooling2d";
    g.output = add_op(make(GraphOpType::GlobalAvgPool, name, {x}, 0, 0, 1, kValid), name,
                      g.tensor(x).c, 1, 1);
    return g.output;
  }

 private:
  int add_tensor(const std::string& name, int64_t h, int64_t w, int64_t c) {
    GraphTensor t;
    t.name = name, t.h = h, t.w = w, t.c = c;
    g.tensors.push_back(t);
    return static_cast<int>(g.tensors.size()) - 1;
  }
  GraphOp make(GraphOpType type, const std::string& name, std::vector<int> inputs, int kh, int kw,
               int stride, Padding p) const {
    GraphOp op;
    op.type = type, op.name = name, op.block = block, op.inputs = std::move(inputs);
    op.kh = kh, op.kw = kw, op.stride = stride, op.padding = p;
    return op;
  }
  // Windowed ops get their output size from TF's padding rule; others pass h, w explicitly.
  int add_op(GraphOp op, const std::string& out_name, int64_t c, int64_t h = -1, int64_t w = -1) {
    const GraphTensor& x = g.tensor(op.inputs.at(0));
    if (h < 0) h = tf_padding(x.h, op.kh, op.stride, op.padding).out;
    if (w < 0) w = tf_padding(x.w, op.kw, op.stride, op.padding).out;
    const int index = static_cast<int>(g.ops.size());
    for (int in : op.inputs) {
      GraphTensor& t = g.tensors.at(static_cast<size_t>(in));
      ++t.uses;
      t.last_use = index;
    }
    op.output = add_tensor(out_name, h, w, c);
    g.tensors.back().producer = index;
    g.ops.push_back(std::move(op));
    return g.ops.back().output;
  }
  int convs_ = 0, max_pools_ = 0, avg_pools_ = 0;
};

// mixed0..2 (35x35): [1x1, 1x1->5x5, 1x1->3x3->3x3, avgpool->1x1].
int block35(Builder& b, int x, int64_t pool_filters, const std::string& name) {
  b.block = name;
  const int b1 = b.conv(x, 64, 1, 1);
  const int b5 = b.conv(b.conv(x, 48, 1, 1), 64, 5, 5);
  const int b3 = b.conv(b.conv(b.conv(x, 64, 1, 1), 96, 3, 3), 96, 3, 3);
  const int bp = b.conv(b.avg_pool(x), pool_filters, 1, 1);
  return b.concat({b1, b5, b3, bp}, name);
}

// mixed3 (35x35 -> 17x17): [3x3/2, 1x1->3x3->3x3/2, maxpool].
int block_reduce35(Builder& b, int x) {
  b.block = "mixed3";
  const int b3 = b.conv(x, 384, 3, 3, 2, kValid);
  const int bd = b.conv(b.conv(b.conv(x, 64, 1, 1), 96, 3, 3), 96, 3, 3, 2, kValid);
  const int bp = b.max_pool(x);
  return b.concat({b3, bd, bp}, "mixed3");
}

// mixed4..7 (17x17) with c channels inside the 7x7 branches:
// [1x1, 1x1->1x7->7x1, 1x1->7x1->1x7->7x1->1x7, avgpool->1x1].
int block17(Builder& b, int x, int64_t c, const std::string& name) {
  b.block = name;
  const int b1 = b.conv(x, 192, 1, 1);
  const int b7 = b.conv(b.conv(b.conv(x, c, 1, 1), c, 1, 7), 192, 7, 1);
  int d = b.conv(b.conv(x, c, 1, 1), c, 7, 1);
  d = b.conv(b.conv(b.conv(d, c, 1, 7), c, 7, 1), 192, 1, 7);
  const int bp = b.conv(b.avg_pool(x), 192, 1, 1);
  return b.concat({b1, b7, d, bp}, name);
}

// mixed8 (17x17 -> 8x8): [1x1->3x3/2, 1x1->1x7->7x1->3x3/2, maxpool].
int block_reduce17(Builder& b, int x) {
  b.block = "mixed8";
  const int b3 = b.conv(b.conv(x, 192, 1, 1), 320, 3, 3, 2, kValid);
  int b7 = b.conv(b.conv(b.conv(x, 192, 1, 1), 192, 1, 7), 192, 7, 1);
  b7 = b.conv(b7, 192, 3, 3, 2, kValid);
  const int bp = b.max_pool(x);
  return b.concat({b3, b7, bp}, "mixed8");
}

// mixed9..10 (8x8): [1x1, 1x1->[1x3, 3x1], 1x1->3x3->[1x3, 3x1], avgpool->1x1]; the bracketed
// pairs are Keras' inner concats, flattened into six pieces (same channels in the same order).
int block8(Builder& b, int x, const std::string& name) {
  b.block = name;
  const int b1 = b.conv(x, 320, 1, 1);
  const int t = b.conv(x, 384, 1, 1);
  const int b3a = b.conv(t, 384, 1, 3), b3b = b.conv(t, 384, 3, 1);
  const int t2 = b.conv(b.conv(x, 448, 1, 1), 384, 3, 3);
  const int bda = b.conv(t2, 384, 1, 3), bdb = b.conv(t2, 384, 3, 1);
  const int bp = b.conv(b.avg_pool(x), 192, 1, 1);
  return b.concat({b1, b3a, b3b, bda, bdb, bp}, name);
}

InceptionGraph build_graph() {
  Builder b;
  int x = b.input(kInceptionInput, kInceptionInput, 3);
  x = b.conv(x, 32, 3, 3, 2, kValid);
  x = b.conv(x, 32, 3, 3, 1, kValid);
  x = b.conv(x, 64, 3, 3);
  x = b.max_pool(x);
  x = b.conv(x, 80, 1, 1, 1, kValid);
  x = b.conv(x, 192, 3, 3, 1, kValid);
  x = b.max_pool(x);
  b.g.tensors.at(static_cast<size_t>(x)).tap = "stem";
  x = block35(b, x, 32, "mixed0");
  x = block35(b, x, 64, "mixed1");
  x = block35(b, x, 64, "mixed2");
  x = block_reduce35(b, x);
  x = block17(b, x, 128, "mixed4");
  x = block17(b, x, 160, "mixed5");
  x = block17(b, x, 160, "mixed6");
  x = block17(b, x, 192, "mixed7");
  x = block_reduce17(b, x);
  x = block8(b, x, "mixed9");
  x = block8(b, x, "mixed10");
  b.block = "top";
  b.global_avg_pool(x);
  ENGINE_CHECK(b.g.conv_ops.size() == static_cast<size_t>(kInceptionConvs),
               "inception graph: built ", b.g.conv_ops.size(), " convs, expected ",
               kInceptionConvs);
  return b.g;
}

}  // namespace

const char* graph_op_type_name(GraphOpType t) {
  switch (t) {
    case GraphOpType::Conv: return "conv";
    case GraphOpType::MaxPool: return "max pool";
    case GraphOpType::AvgPool: return "average pool";
    case GraphOpType::Concat: return "concat";
    case GraphOpType::GlobalAvgPool: return "global average pool";
  }
  return "?";
}

int InceptionGraph::find_tensor(const std::string& name) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == name) return static_cast<int>(i);
  return -1;
}

bool InceptionGraph::feeds_only_concat(const GraphOp& op) const {
  const GraphTensor& t = tensor(op.output);
  return op.type == GraphOpType::MaxPool && t.uses == 1 &&
         ops.at(static_cast<size_t>(t.last_use)).type == GraphOpType::Concat;
}

const InceptionGraph& inception_v3_graph() {
  static const InceptionGraph graph = build_graph();
  return graph;
}

double inception_v3_flops_per_image() {
  const InceptionGraph& g = inception_v3_graph();
  double total = 0;
  for (int op_index : g.conv_ops) {
    const GraphOp& op = g.ops[static_cast<size_t>(op_index)];
    const GraphTensor& y = g.tensor(op.output);
    total += 2.0 * op.kh * op.kw * static_cast<double>(op.cin * op.cout * y.h * y.w);
  }
  return total;
}

}  // namespace engine
