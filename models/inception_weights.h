// models/inception_weights.h: the Inception v3 weight table (the 94 convolutions in Keras
// creation order, C1..C94, derived from the graph of models/inception_graph.h) and the loader for a
// Keras InceptionV3 HDF5 weight file (weights/README.md documents the format). The loader finds
// each conv's layers by the Keras names the graph gives it (1-based Keras 2 names, or the same
// names shifted to 0-based for tf.keras/Keras 3), never by the depth-sorted order of
// `layer_names`, checks every shape, dtype and value, and folds each batch norm into its conv.
#pragma once
#include <string>
#include <vector>

#include "engine/inception_contract.h"  // kBottleneckSize, kInceptionInput
#include "kernels/conv2d.h"
#include "models/inception_graph.h"

namespace engine {

// One row of the weight table: a conv op of inception_v3_graph(), as the loader reads it.
struct ConvDef {
  int index;  // C#, 1..94, creation order (the graph op's weight + 1)
  int64_t cin, cout;
  int kh, kw, stride;
  Padding padding;
  int64_t in_hw;           // spatial size (square) of this conv's input at 299x299
  std::string conv_layer;  // Keras 2 names of the layers its weights come from:
  std::string bn_layer;    // "conv2d_<C#>" and "batch_normalization_<C#>"
};
constexpr float kKerasBnEpsilon = 1e-3f;
const std::vector<ConvDef>& inception_v3_conv_defs();  // size 94, [i].index == i + 1

struct FoldedConv {
  std::vector<float> w_hwio;  // (kh, kw, cin, cout), BN scale folded in
  std::vector<float> bias;    // (cout), BN shift
};

struct InceptionWeights {
  std::string path;
  bool zero_based = false;  // tf.keras / Keras 3 names
  bool under_model_weights = false;
  bool random_weights = false;    // file marked `engine_random_weights` (tests/demo generator)
  std::vector<FoldedConv> convs;  // 94, in C# order
  bool has_top = false;           // `predictions` Dense 2048 -> classes
  int64_t top_classes = 0;
  std::vector<float> top_kernel, top_bias;
};

// Throws engine::Error with one line naming the file, the dataset and expected vs found.
InceptionWeights load_inception_v3_weights(const std::string& path);

// The line tools print (to stderr) when the weights are the generated random ones, or "".
std::string random_weights_warning(const InceptionWeights& w);

}  // namespace engine
