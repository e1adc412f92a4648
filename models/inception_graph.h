// models/inception_graph.h: Inception v3 written ONCE, as a device-free graph of ops over named
// tensors (ggml's habit: one graph that every backend executes). The weight table and loader
// (models/inception_weights), the CPU executor (models/inception_v3) and the CUDA executor
// (models/inception_v3_cuda) all walk this graph, so their conv order and concat order cannot
// diverge. tests/test_inception_graph.cpp checks it against facts from outside the code (Keras'
// own layer names and kernel shapes, block output channels, parameters, multiply-adds).
//
// Ops are listed in the order keras_applications/inception_v3.py creates its layers, which is a
// topological order. Names are the layers' Keras 2 names (1-based: conv2d_1..,
// batch_normalization_1.., max_pooling2d_1.., average_pooling2d_1.., mixed0..mixed10), the names
// in the published notop weight file; the last op is the global_average_pooling2d of
// InceptionV3(include_top=False, pooling='avg'), whose output is the 2048-value bottleneck. A conv
// op stands for Keras' conv2d_bn: Conv2D (no bias) -> BatchNormalization (scale=False) -> ReLU,
// which every executor runs fused with the batch norm folded in; its output tensor is named after
// the Activation layer (activation_N). Keras' inner concatenations of mixed9/mixed10 (mixed9_0 and
// concatenate_1, mixed9_1 and concatenate_2) are flattened into the block's one concat of six
// pieces: the same channel order, one copy fewer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/inception_contract.h"  // kInceptionInput, kBottleneckSize
#include "kernels/conv2d.h"

namespace engine {

constexpr int kInceptionConvs = 94;

enum class GraphOpType { Conv, MaxPool, AvgPool, Concat, GlobalAvgPool };
const char* graph_op_type_name(GraphOpType t);

struct GraphTensor {
  std::string name;  // the Keras layer whose output this is ("activation_5", "mixed3", ...)
  int64_t h = 0, w = 0, c = 0;  // per image, at a 299x299 input
  int producer = -1;            // op index; -1 for the graph input
  int uses = 0;                 // ops reading it
  int last_use = -1;            // index of the last op reading it (-1: the graph output)
  std::string tap;  // "stem", "mixed0".."mixed10": a block output executors report; else ""
};

struct GraphOp {
  GraphOpType type;
  std::string name;         // Keras layer name: "conv2d_17", "average_pooling2d_3", "mixed3", ...
  std::string block;        // "stem", "mixed0".."mixed10", "top": for profiles and messages
  std::vector<int> inputs;  // tensor ids; a Concat's in channel order
  int output = -1;          // tensor id
  // Conv and pools: window, stride and TF padding. Average pools are 'same' with the padded
  // positions EXCLUDED from the divisor (Keras/TF semantics, not PyTorch's default).
  int kh = 0, kw = 0, stride = 1;
  Padding padding = Padding::Valid;
  // Conv only.
  int weight = -1;  // position in the weight table (Keras creation order, 0-based)
  int64_t cin = 0, cout = 0;
  std::string bn_name;  // the BatchNormalization layer folded in: "batch_normalization_17"
};

struct InceptionGraph {
  std::vector<GraphTensor> tensors;
  std::vector<GraphOp> ops;     // topological (Keras creation) order
  std::vector<int> conv_ops;    // op index of each conv, in weight-table order
  int input = -1, output = -1;  // tensor ids: (299, 299, 3) and the (1, 1, 2048) global average

  const GraphTensor& tensor(int id) const { return tensors.at(static_cast<size_t>(id)); }
  const GraphOp& conv(int weight) const {
    return ops.at(static_cast<size_t>(conv_ops.at(static_cast<size_t>(weight))));
  }
  const GraphTensor& conv_input(int weight) const { return tensor(conv(weight).inputs.at(0)); }
  int find_tensor(const std::string& name) const;  // -1 when absent
  // A max pool whose only reader is a concat: executors may write it straight into the concat's
  // channel slice instead of a tensor of its own.
  bool feeds_only_concat(const GraphOp& op) const;
};

const InceptionGraph& inception_v3_graph();

// 2*kh*kw*cin*cout*Ho*Wo summed over the 94 convs (pools and concats not counted).
double inception_v3_flops_per_image();

}  // namespace engine
