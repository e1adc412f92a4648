// models/head_keras.h: the one reader and writer of the head file tools/train writes and
// tools/predict reads (run/head_keras.h5). It is a Keras 2 HDF5 model file, laid out as
// tf_keras `model.save('x.h5')` writes it, so `tf_keras.models.load_model` opens it:
//   root attributes  model_config (JSON: Sequential, InputLayer (None, input), Dense relu ...,
//                    Dense softmax), training_config (JSON: categorical cross-entropy, RMSprop),
//                    keras_version, backend
//                    + ours: class_names (K strings), preprocessing, inception_weights_sha256,
//                    feature_precision (fp32 when absent: files written before it),
//                    feature_calibration (int8 features only: the cache's calibration text,
//                    models/inception_v3_lowp.h; absent otherwise)
//   /model_weights   attributes layer_names [dense_1..dense_L], keras_version, backend;
//                    /dense_k (weight_names [dense_k/kernel:0, dense_k/bias:0])
//                    /dense_k/dense_k/kernel:0 (in, out) float32, bias:0 (out,)
// The reader also takes files Keras itself wrote (any layer names, Sequential or Functional,
// weightless InputLayer/Dropout layers skipped; model_config checked: Dense layers only, relu
// hidden, softmax output, biases) and the older layout of our own files (layer groups at the
// root, no model_config). Every shape is checked; errors are one line naming the file and the
// dataset or attribute. The writer writes `path.tmp.<pid>` and renames it into place.
#pragma once
#include <string>
#include <vector>

#include "models/head.h"

namespace engine {

// What a head file holds beside the weights: predict's columns and how its features were made.
struct KerasHeadInfo {
  std::vector<std::string> class_names;    // one per output, in output order
  std::string preprocessing;               // the cache's preprocessing string (weights/CACHE.md)
  std::string inception_weights_sha256;    // sha256 of the Inception weight file of the features
  std::string feature_precision = "fp32";  // the cache's precision (weights/CACHE.md); absent: fp32
  // int8 only: the cache's calibration (Int8Calibration::serialize), so that predict quantizes
  // its features exactly as extract did; "" otherwise (and when the attribute is absent).
  std::string feature_calibration;
};

struct KerasHead {
  HeadConfig config;  // input, hidden, classes from the kernels' shapes; dropout 0
  std::vector<std::string> layer_names;             // the Dense layers, input to output
  std::vector<std::vector<float>> kernels, biases;  // per layer: (in, out) row-major, (out)
  KerasHeadInfo info;
  std::string keras_version;  // as recorded in the file
  HeadCpu to_cpu() const;     // a CPU head holding these weights
};

// Writes the parameter section of `params` (laid out for `config`) with `info`. Throws (and
// leaves no temp file) on any failure; class_names must have config.classes entries.
void write_keras_head(const std::string& path, const HeadConfig& config, const HeadParams& params,
                      const KerasHeadInfo& info);
KerasHead read_keras_head(const std::string& path);

}  // namespace engine
