// models/inception_weights.cpp: the architecture table and the Keras HDF5 loader; see the header.
#include "models/inception_weights.h"

#include <cmath>
#include <map>
#include <set>

#include "engine/error.h"
#include "engine/hdf5_io.h"

namespace engine {

namespace {

// Appends the convs of one 35x35 "mixed0..2" block (branches 1x1, 5x5, 3x3dbl, pool).
void add_block35(std::vector<ConvDef>& d, int64_t cin, int64_t pool_filters) {
  auto c = [&](int64_t i, int64_t o, int kh, int kw) {
    d.push_back({static_cast<int>(d.size()) + 1, i, o, kh, kw, 1, Padding::Same, 0});
  };
  c(cin, 64, 1, 1);
  c(cin, 48, 1, 1), c(48, 64, 5, 5);
  c(cin, 64, 1, 1), c(64, 96, 3, 3), c(96, 96, 3, 3);
  c(cin, pool_filters, 1, 1);
}

// One 17x17 "mixed4..7" block with c channels in the 7x7 branches.
void add_block17(std::vector<ConvDef>& d, int64_t ch) {
  auto c = [&](int64_t i, int64_t o, int kh, int kw) {
    d.push_back({static_cast<int>(d.size()) + 1, i, o, kh, kw, 1, Padding::Same, 0});
  };
  c(768, 192, 1, 1);
  c(768, ch, 1, 1), c(ch, ch, 1, 7), c(ch, 192, 7, 1);
  c(768, ch, 1, 1), c(ch, ch, 7, 1), c(ch, ch, 1, 7), c(ch, ch, 7, 1), c(ch, 192, 1, 7);
  c(768, 192, 1, 1);
}

// One 8x8 "mixed9..10" block.
void add_block8(std::vector<ConvDef>& d, int64_t cin) {
  auto c = [&](int64_t i, int64_t o, int kh, int kw) {
    d.push_back({static_cast<int>(d.size()) + 1, i, o, kh, kw, 1, Padding::Same, 0});
  };
  c(cin, 320, 1, 1);
  c(cin, 384, 1, 1), c(384, 384, 1, 3), c(384, 384, 3, 1);
  c(cin, 448, 1, 1), c(448, 384, 3, 3), c(384, 384, 1, 3), c(384, 384, 3, 1);
  c(cin, 192, 1, 1);
}

std::vector<ConvDef> build_defs() {
  std::vector<ConvDef> d;
  auto c = [&](int64_t i, int64_t o, int kh, int kw, int s, Padding p) {
    d.push_back({static_cast<int>(d.size()) + 1, i, o, kh, kw, s, p, 0});
  };
  const Padding V = Padding::Valid, S = Padding::Same;
  c(3, 32, 3, 3, 2, V), c(32, 32, 3, 3, 1, V), c(32, 64, 3, 3, 1, S);  // C1-C3
  c(64, 80, 1, 1, 1, V), c(80, 192, 3, 3, 1, V);                       // C4-C5
  add_block35(d, 192, 32);                                              // mixed0 C6-C12
  add_block35(d, 256, 64);                                              // mixed1 C13-C19
  add_block35(d, 288, 64);                                              // mixed2 C20-C26
  c(288, 384, 3, 3, 2, V);                                              // mixed3 C27
  c(288, 64, 1, 1, 1, S), c(64, 96, 3, 3, 1, S), c(96, 96, 3, 3, 2, V); // C28-C30
  add_block17(d, 128);                                                  // mixed4 C31-C40
  add_block17(d, 160);                                                  // mixed5
  add_block17(d, 160);                                                  // mixed6
  add_block17(d, 192);                                                  // mixed7 C61-C70
  c(768, 192, 1, 1, 1, S), c(192, 320, 3, 3, 2, V);                     // mixed8 C71-C72
  c(768, 192, 1, 1, 1, S), c(192, 192, 1, 7, 1, S), c(192, 192, 7, 1, 1, S);
  c(192, 192, 3, 3, 2, V);                                              // C73-C76
  add_block8(d, 1280);                                                  // mixed9 C77-C85
  add_block8(d, 2048);                                                  // mixed10 C86-C94
  // Input sizes: the stem shrinks 299 -> 149 -> 147 -> (pool) 73 -> 71 -> (pool) 35; the
  // reductions C27/C30 read 35x35 and C72/C76 read 17x17.
  for (ConvDef& c : d) {
    const int i = c.index;
    c.in_hw = i == 1 ? 299 : i == 2 ? 149 : i == 3 ? 147 : i <= 5 ? 73
            : i <= 30 ? 35 : i <= 76 ? 17 : 8;
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

struct LayerFile {
  const H5File& file;
  hid_t root;
  std::string prefix;  // "" or "/model_weights"

  // Reads weight `suffix` (e.g. "kernel:0") of `layer`, found through its weight_names attribute.
  std::vector<float> weight(const std::string& layer, const std::string& suffix, const Shape& shape,
                            bool required = true, bool* found = nullptr,
                            std::string* shown_name = nullptr) const {
    H5Id g = h5_open_group(root, layer, file.path());
    auto names = h5_read_string_array_attr(g.get(), "weight_names",
                                           file.path() + ": layer '" + layer + "'");
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

double inception_v3_flops_per_image() {
  double total = 0;
  for (const ConvDef& d : inception_v3_conv_defs()) {
    int64_t ho = tf_padding(d.in_hw, d.kh, d.stride, d.padding).out;
    int64_t wo = tf_padding(d.in_hw, d.kw, d.stride, d.padding).out;
    total += 2.0 * d.kh * d.kw * static_cast<double>(d.cin * d.cout * ho * wo);
  }
  return total;
}

std::string random_weights_warning(const InceptionWeights& w) {
  if (!w.random_weights) return "";
  return "WARNING: " + w.path + " holds RANDOM Inception weights (generated for tests and the demo), "
         "not the ImageNet ones: features only make sense on the synthetic demo images. For real "
         "images place the Keras file as weights/README.md says.";
}

InceptionWeights load_inception_v3_weights(const std::string& path) {
  H5File file = H5File::open_read(path);
  InceptionWeights out;
  out.path = path;
  out.under_model_weights = h5_exists(file.id(), "/model_weights");
  out.random_weights = h5_has_attr(file.id(), "engine_random_weights");
  H5Id root(H5Gopen2(file.id(), out.under_model_weights ? "/model_weights" : "/", H5P_DEFAULT));
  if (!root.valid()) fail(path, ": cannot open the root group");
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
  const int offset = out.zero_based ? 1 : 0;  // C# = number + offset
  std::map<int, std::string> conv_layer, bn_layer;
  for (const std::string& n : layers) {
    int c = name_number(n, "conv2d"), b = name_number(n, "batch_normalization");
    if (c >= 0) conv_layer[c + offset] = n;
    if (b >= 0) bn_layer[b + offset] = n;
  }
  const char* numbering = out.zero_based ? "0-based" : "1-based";
  if (conv_layer.size() != kInceptionConvs || bn_layer.size() != kInceptionConvs ||
      conv_layer.begin()->first != 1 || bn_layer.begin()->first != 1) {
    // Name the first missing layer: the most useful line for a damaged file.
    for (int i = 1; i <= kInceptionConvs; ++i) {
      std::string want = out.zero_based ? (i == 1 ? "" : "_" + std::to_string(i - 1))
                                        : "_" + std::to_string(i);
      if (!conv_layer.count(i))
        fail(where, ": missing layer 'conv2d", want, "' (conv ", i, " of ", kInceptionConvs,
             ", ", numbering, " names) in layer_names: expected ", kInceptionConvs,
             " conv layers, found ", conv_layer.size());
      if (!bn_layer.count(i))
        fail(where, ": missing layer 'batch_normalization", want, "' (batch norm ", i, " of ",
             kInceptionConvs, ", ", numbering, " names): expected ", kInceptionConvs, ", found ",
             bn_layer.size());
    }
    fail(where, ": expected ", kInceptionConvs, " conv and batch-norm layers (Inception v3), found ",
         conv_layer.size(), " and ", bn_layer.size());
  }

  LayerFile lf{file, root.get(), out.under_model_weights ? "/model_weights" : ""};
  for (const ConvDef& d : inception_v3_conv_defs()) {
    const std::string& cl = conv_layer.at(d.index);
    const std::string& bl = bn_layer.at(d.index);
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
        fail(path, ": dataset '", var_name, "': expected values >= 0, found ", var[o], " at index ", o);
      // Fold an optional conv bias into the mean and an optional gamma into beta/scale below.
      if (has_conv_bias) mean[o] -= conv_bias[o];
    }
    if (has_gamma) {
      // BN with gamma: y = gamma*(x-mean)/s + beta; scale the kernel by gamma first.
      for (size_t i = 0; i < fc.w_hwio.size(); ++i) fc.w_hwio[i] *= gamma[i % d.cout];
      for (int64_t o = 0; o < d.cout; ++o) mean[o] *= gamma[o];
    }
    fold_batch_norm(fc.w_hwio, d.cout, beta.data(), mean.data(), var.data(), kKerasBnEpsilon, fc.bias);
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
      H5FloatArray b = h5_read_float_array(file.id(), lf.prefix + "/predictions/" + bias_name, path);
      if (b.dims.size() != 1 || b.dims[0] < 1)
        fail(where, ": dataset '", lf.prefix, "/predictions/", bias_name,
             "': expected rank 1 (classes,), found ", Shape(b.dims).str());
      out.top_classes = b.dims[0];
      out.top_bias = lf.weight("predictions", "bias:0", Shape{out.top_classes});
      out.top_kernel = lf.weight("predictions", "kernel:0", Shape{kBottleneckSize, out.top_classes});
      out.has_top = true;
    }
  }
  return out;
}

}  // namespace engine
