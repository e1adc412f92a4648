// models/inception_weights.cpp: the weight table (from the graph) and the Keras HDF5 loader; see
// the header.
#include "models/inception_weights.h"

#include <cmath>
#include <set>

#include "engine/error.h"
#include "engine/hdf5_io.h"

namespace engine {

namespace {

// The weight table: the graph's conv ops in weight order, with their input size.
std::vector<ConvDef> build_defs() {
  const InceptionGraph& g = inception_v3_graph();
  std::vector<ConvDef> d;
  for (int i = 0; i < static_cast<int>(g.conv_ops.size()); ++i) {
    const GraphOp& op = g.conv(i);
    const GraphTensor& x = g.conv_input(i);
    ENGINE_CHECK(x.h == x.w, "inception graph: ", op.name, " reads a non-square input");
    d.push_back(
        {i + 1, op.cin, op.cout, op.kh, op.kw, op.stride, op.padding, x.h, op.name, op.bn_name});
  }
  return d;
}

// "conv2d" -> 0, "conv2d_12" -> 12, anything else -> -1 (for prefix "conv2d").
int name_number(const std::string& name, const std::string& prefix) {
  if (name == prefix) return 0;
  if (name.size() <= prefix.size() + 1 || name.compare(0, prefix.size() + 1, prefix + "_") != 0)
    return -1;
  int v = 0;
  for (size_t i = prefix.size() + 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || v > 100000) return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

// The name Keras 2 layer `keras2` ("conv2d_7", kind "conv2d") has in a file: itself, or shifted
// to tf.keras / Keras 3's 0-based numbering ("conv2d_6"; "conv2d_1" -> "conv2d").
std::string file_layer_name(const std::string& keras2, const std::string& kind, bool zero_based) {
  const int k = name_number(keras2, kind);
  ENGINE_CHECK(k >= 1, "inception graph: '", keras2, "' is not a 1-based ", kind, " layer name");
  if (!zero_based) return keras2;
  return k == 1 ? kind : kind + "_" + std::to_string(k - 1);
}

struct LayerFile {
  const H5File& file;
  hid_t root;
  std::string prefix;  // "" or "/model_weights"

  // Reads weight `suffix` (e.g. "kernel:0") of `layer`, found through its weight_names attribute.
  std::vector<float> weight(const std::string& layer, const std::string& suffix, const Shape& shape,
                            bool required = true, bool* found = nullptr,
                            std::string* shown_name = nullptr) const {
    H5Id g = h5_open_group(root, layer, file.path());
    auto names =
        h5_read_string_array_attr(g.get(), "weight_names", file.path() + ": layer '" + layer + "'");
    for (const std::string& n : names) {
      if (n.size() >= suffix.size() &&
          n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0 &&
          (n.size() == suffix.size() || n[n.size() - suffix.size() - 1] == '/')) {
        // Absolute paths, so every message names the dataset as h5py would show it.
        const std::string shown = prefix + "/" + layer + "/" + n;
        if (!h5_exists(file.id(), shown))
          fail(file.path(), ": dataset '", shown, "' is listed in weight_names of layer '", layer,
               "' but missing");
        auto v = h5_read_float_checked(file.id(), shown, shape, file.path());
        for (size_t i = 0; i < v.size(); ++i)
          if (!std::isfinite(v[i]))
            fail(file.path(), ": dataset '", shown, "': expected finite values, found ", v[i],
                 " at flat index ", i);
        if (found) *found = true;
        if (shown_name) *shown_name = shown;
        return v;
      }
    }
    if (required)
      fail(file.path(), ": layer '", layer, "': expected a weight named '*", suffix,
           "' in weight_names, found ", names.size(), " other names");
    if (found) *found = false;
    return {};
  }
};

}  // namespace

const std::vector<ConvDef>& inception_v3_conv_defs() {
  static const std::vector<ConvDef> defs = build_defs();
  return defs;
}

std::string random_weights_warning(const InceptionWeights& w) {
  if (!w.random_weights) return "";
  return "WARNING: " + w.path +
         " holds RANDOM Inception weights (generated for tests and the demo), "
         "not the ImageNet ones: features only make sense on the synthetic demo images. For real "
         "images place the Keras file as weights/README.md says.";
}

InceptionWeights load_inception_v3_weights(const std::string& path) {
  H5File file = H5File::open_read(path);
  InceptionWeights out;
  out.path = path;
  out.under_model_weights = h5_exists(file.id(), "/model_weights");
  out.random_weights = h5_has_attr(file.id(), "engine_random_weights");
  H5Id root = h5_open_group(file.id(), out.under_model_weights ? "/model_weights" : "/", path);
  const std::string where = path + (out.under_model_weights ? " (/model_weights)" : "");

  // layer_names, or its split form layer_names0, layer_names1, ...
  std::vector<std::string> layers;
  if (h5_has_attr(root.get(), "layer_names")) {
    layers = h5_read_string_array_attr(root.get(), "layer_names", where);
  } else if (h5_has_attr(root.get(), "layer_names0")) {
    for (int k = 0; h5_has_attr(root.get(), "layer_names" + std::to_string(k)); ++k) {
      auto part = h5_read_string_array_attr(root.get(), "layer_names" + std::to_string(k), where);
      layers.insert(layers.end(), part.begin(), part.end());
    }
  } else {
    fail(where, ": missing attribute 'layer_names' (not a Keras weight file)");
  }

  std::set<std::string> names(layers.begin(), layers.end());
  out.zero_based = names.count("conv2d") > 0 || names.count("batch_normalization") > 0;
  // Layers are found by the names the graph gives each conv (Keras 2, 1-based), shifted to this
  // file's numbering; the counts catch extra layers.
  std::set<int> conv_numbers, bn_numbers;
  for (const std::string& n : layers) {
    int c = name_number(n, "conv2d"), b = name_number(n, "batch_normalization");
    if (c >= 0) conv_numbers.insert(c);
    if (b >= 0) bn_numbers.insert(b);
  }
  const char* numbering = out.zero_based ? "0-based" : "1-based";
  const auto& defs = inception_v3_conv_defs();
  std::vector<std::string> conv_layer, bn_layer;  // per conv, as named in this file
  for (const ConvDef& d : defs) {
    // Name the first missing layer: the most useful line for a damaged file.
    conv_layer.push_back(file_layer_name(d.conv_layer, "conv2d", out.zero_based));
    bn_layer.push_back(file_layer_name(d.bn_layer, "batch_normalization", out.zero_based));
    if (!names.count(conv_layer.back()))
      fail(where, ": missing layer '", conv_layer.back(), "' (conv ", d.index, " of ",
           kInceptionConvs, ", ", numbering, " names) in layer_names: expected ", kInceptionConvs,
           " conv layers, found ", conv_numbers.size());
    if (!names.count(bn_layer.back()))
      fail(where, ": missing layer '", bn_layer.back(), "' (batch norm ", d.index, " of ",
           kInceptionConvs, ", ", numbering, " names): expected ", kInceptionConvs, ", found ",
           bn_numbers.size());
  }
  if (conv_numbers.size() != kInceptionConvs || bn_numbers.size() != kInceptionConvs)
    fail(where, ": expected ", kInceptionConvs,
         " conv and batch-norm layers (Inception v3), found ", conv_numbers.size(), " and ",
         bn_numbers.size());

  LayerFile lf{file, root.get(), out.under_model_weights ? "/model_weights" : ""};
  for (const ConvDef& d : defs) {
    const std::string& cl = conv_layer.at(static_cast<size_t>(d.index - 1));
    const std::string& bl = bn_layer.at(static_cast<size_t>(d.index - 1));
    FoldedConv fc;
    fc.w_hwio = lf.weight(cl, "kernel:0", Shape{d.kh, d.kw, d.cin, d.cout});
    bool has_conv_bias = false;
    auto conv_bias = lf.weight(cl, "bias:0", Shape{d.cout}, false, &has_conv_bias);
    auto beta = lf.weight(bl, "beta:0", Shape{d.cout});
    auto mean = lf.weight(bl, "moving_mean:0", Shape{d.cout});
    std::string var_name;
    auto var = lf.weight(bl, "moving_variance:0", Shape{d.cout}, true, nullptr, &var_name);
    bool has_gamma = false;
    auto gamma = lf.weight(bl, "gamma:0", Shape{d.cout}, false, &has_gamma);
    for (int64_t o = 0; o < d.cout; ++o) {
      if (var[o] < 0)
        fail(path, ": dataset '", var_name, "': expected values >= 0, found ", var[o], " at index ",
             o);
      // Fold an optional conv bias into the mean and an optional gamma into beta/scale below.
      if (has_conv_bias) mean[o] -= conv_bias[o];
    }
    if (has_gamma) {
      // BN with gamma: y = gamma*(x-mean)/s + beta; scale the kernel by gamma first.
      for (size_t i = 0; i < fc.w_hwio.size(); ++i) fc.w_hwio[i] *= gamma[i % d.cout];
      for (int64_t o = 0; o < d.cout; ++o) mean[o] *= gamma[o];
    }
    fold_batch_norm(fc.w_hwio, d.cout, beta.data(), mean.data(), var.data(), kKerasBnEpsilon,
                    fc.bias);
    out.convs.push_back(std::move(fc));
  }

  if (names.count("predictions")) {
    H5Id g = h5_open_group(root.get(), "predictions", where);
    auto wn = h5_read_string_array_attr(g.get(), "weight_names", where + ": layer 'predictions'");
    if (!wn.empty()) {
      // The class count comes from the bias; the kernel must then be (2048, classes).
      std::string bias_name;
      for (auto& n : wn)
        if (n.size() >= 6 && n.compare(n.size() - 6, 6, "bias:0") == 0) bias_name = n;
      if (bias_name.empty()) fail(where, ": layer 'predictions': no bias:0 in weight_names");
      H5FloatArray b =
          h5_read_float_array(file.id(), lf.prefix + "/predictions/" + bias_name, path);
      if (b.dims.size() != 1 || b.dims[0] < 1)
        fail(where, ": dataset '", lf.prefix, "/predictions/", bias_name,
             "': expected rank 1 (classes,), found ", Shape(b.dims).str());
      out.top_classes = b.dims[0];
      out.top_bias = lf.weight("predictions", "bias:0", Shape{out.top_classes});
      out.top_kernel =
          lf.weight("predictions", "kernel:0", Shape{kBottleneckSize, out.top_classes});
      out.has_top = true;
    }
  }
  return out;
}

}  // namespace engine
