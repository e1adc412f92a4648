// tools/predict.cpp: classifies images with the Inception weights and a head trained by
// tools/train, and writes an ISIC-style CSV: `image` (the file name without extension) and one
// probability column per class, in the head's class order.
//
//   predict --weights inception.h5 --head run/head_keras.h5 --out predictions.csv IMAGE_OR_DIR...
//
// The preprocessing (resize filter, DCT scaling) is read from the head file, which records the
// cache it was trained on, so features are made exactly as in training; a head trained with
// other Inception weights is refused. Bad images are skipped with one line each (exit 3).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "engine/bottleneck_cache.h"
#include "engine/cuda_device.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/image_io.h"
#include "engine/progress.h"
#include "kernels/resize.h"
#include "models/head.h"
#include "models/inception_v3.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

struct KerasHead {
  HeadConfig config;
  std::vector<std::vector<float>> kernels, biases;
  std::vector<std::string> class_names;
  std::string preprocessing, weights_sha256;
};

// Reads the Dense stack written by tools/train (Keras layout: layer_names dense_1..dense_L, each
// with weight_names [kernel:0, bias:0]) and its attributes; every shape is checked.
KerasHead load_keras_head(const std::string& path) {
  H5File f = H5File::open_read(path);
  KerasHead h;
  const auto layers = h5_read_string_array_attr(f.id(), "layer_names", path);
  if (layers.size() < 1) fail(path, ": no layers in layer_names");
  h.class_names = h5_read_string_array_attr(f.id(), "class_names", path);
  h.preprocessing = h5_read_string_attr(f.id(), "preprocessing", path);
  h.weights_sha256 = h5_read_string_attr(f.id(), "inception_weights_sha256", path);
  int64_t in = kCacheFeatureSize;
  for (const auto& l : layers) {
    H5Id g = h5_open_group(f.id(), "/" + l, path);
    auto names = h5_read_string_array_attr(g.get(), "weight_names", path + ": layer '" + l + "'");
    if (names.size() != 2) fail(path, ": layer '", l, "': expected kernel and bias, found ", names.size(), " weights");
    H5FloatArray k = h5_read_float_array(f.id(), "/" + l + "/" + names[0], path);
    if (k.dims.size() != 2 || k.dims[0] != in)
      fail(path, ": dataset '/", l, "/", names[0], "': expected shape (", in, ", out), found ", Shape(k.dims).str());
    const int64_t out = k.dims[1];
    h.kernels.push_back(std::move(k.data));
    h.biases.push_back(h5_read_float_checked(f.id(), "/" + l + "/" + names[1], Shape{out}, path));
    h.config.hidden.push_back(out);
    in = out;
  }
  h.config.classes = h.config.hidden.back();
  h.config.hidden.pop_back();
  h.config.dropout = 0;
  if (static_cast<int64_t>(h.class_names.size()) != h.config.classes)
    fail(path, ": ", h.class_names.size(), " class names for a head with ", h.config.classes, " outputs");
  return h;
}

std::string setting(const std::string& pre, const std::string& key, const std::string& file) {
  const std::string k = key + "=";
  size_t p = pre.find(k);
  if (p == std::string::npos) fail(file, ": preprocessing '", pre, "' has no ", key);
  size_t e = pre.find(';', p);
  return pre.substr(p + k.size(), e == std::string::npos ? std::string::npos : e - p - k.size());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Classify images with Inception v3 + a trained head; writes an ISIC-style CSV"};
  std::string weights, head_path, out, device = "auto";
  std::vector<std::string> inputs;
  int batch = 16;
  bool quiet = false;
  app.add_option("--weights", weights, "Keras InceptionV3 HDF5 weights (the ones the head was trained with)")->required();
  app.add_option("--head", head_path, "head_keras.h5 written by tools/train")->required();
  app.add_option("--out", out, "CSV to write")->required();
  app.add_option("--batch", batch, "images per network batch")->check(CLI::Range(1, 4096));
  app.add_option("--device", device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_flag("--quiet", quiet, "no progress output");
  app.add_option("images", inputs, "image files or folders (searched recursively)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    if (resolve_device(device) == Device::CUDA && device == "cuda")
      fail("--device cuda: the cuDNN inference backend is not in this build yet; use --device cpu");
    KerasHead kh = load_keras_head(head_path);
    if (sha256_file(weights) != kh.weights_sha256)
      fail(head_path, ": the head was trained on features of other Inception weights (sha256 ",
           kh.weights_sha256.substr(0, 12), "...) than ", weights);
    DecodeOptions dopt;
    dopt.dct_min_side = std::stoll(setting(kh.preprocessing, "dct_min_side", head_path));
    const ResizeFilter filter = parse_resize_filter(setting(kh.preprocessing, "resize", head_path));

    std::vector<std::string> files;
    for (const auto& in : inputs) {
      std::error_code ec;
      if (fs::is_directory(in, ec)) {
        Dataset ds = list_dataset(in, DatasetOptions{"", "", "", true});
        for (const auto& im : ds.images) files.push_back(im.full_path);
      } else {
        files.push_back(in);  // missing or bad files are reported when read
      }
    }
    InceptionWeights iw = load_inception_v3_weights(weights);
    if (!random_weights_warning(iw).empty()) std::fprintf(stderr, "%s\n", random_weights_warning(iw).c_str());
    InceptionV3Cpu model(iw);
    HeadCpu head(kh.config);
    for (size_t l = 0; l < kh.kernels.size(); ++l) head.set_layer(static_cast<int>(l), kh.kernels[l].data(), kh.biases[l].data());

    const std::string tmp = out + ".tmp";
    std::ofstream csv(tmp);
    if (!csv) fail(out, ": cannot write");
    csv << "image";
    for (const auto& c : kh.class_names) csv << "," << c;
    csv << "\n";
    csv.precision(6);
    Progress progress("predict", static_cast<int64_t>(files.size()));
    progress.set_quiet(quiet);
    std::vector<std::string> skipped;
    const int64_t image = kInceptionInput * kInceptionInput * 3;
    for (size_t start = 0; start < files.size(); start += static_cast<size_t>(batch)) {
      const size_t n = std::min(files.size() - start, static_cast<size_t>(batch));
      Tensor x(Shape{static_cast<int64_t>(n), kInceptionInput, kInceptionInput, 3});
      std::vector<std::string> errors(n);
#pragma omp parallel for schedule(dynamic)
      for (size_t i = 0; i < n; ++i) {
        try {
          Image8 img = decode_image_file(files[start + i], dopt);
          resize_to_unit_range_cpu(img, kInceptionInput, kInceptionInput, filter, x.data() + static_cast<int64_t>(i) * image);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      }
      Tensor b(Shape{static_cast<int64_t>(n), kBottleneckSize});
      model.forward(x, b);
      std::vector<float> probs(n * static_cast<size_t>(kh.config.classes));
      head.predict(b.data(), static_cast<int64_t>(n), probs.data());
      for (size_t i = 0; i < n; ++i) {
        if (!errors[i].empty()) {
          skipped.push_back(errors[i]);
          std::fprintf(stderr, "%sskip: %s\n", isatty(fileno(stderr)) ? "\r\033[K" : "", errors[i].c_str());
          continue;
        }
        std::string id = fs::path(files[start + i]).filename().string();
        if (id.find('.') != std::string::npos && id.find('.') > 0) id = id.substr(0, id.rfind('.'));
        csv << id;
        for (int64_t k = 0; k < kh.config.classes; ++k) csv << "," << probs[i * static_cast<size_t>(kh.config.classes) + static_cast<size_t>(k)];
        csv << "\n";
      }
      progress.advance(static_cast<int64_t>(n));
    }
    progress.finish();
    csv.close();
    if (!csv) fail(out, ": write failed");
    fs::rename(tmp, out);
    std::printf("predictions: %s: %zu images, %zu skipped\n", out.c_str(), files.size() - skipped.size(), skipped.size());
    return skipped.empty() ? 0 : 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%serror: %s\n", isatty(fileno(stderr)) ? "\n" : "", e.what());
    return 1;
  }
}
