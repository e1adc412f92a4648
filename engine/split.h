// engine/split.h: the train/validation/test split of the TF retrain tutorial
// (tensorflow/examples/image_retraining/retrain.py; docs/DATASETS.md): strip `_nohash_.*`
// from the file name, SHA-1 it, (int(hex, 16) % 2^27) * (100 / (2^27 - 1)) is a percentage;
// below validation% -> validation, below validation% + test% -> test, else train. Stable when
// images are added. With groups (lesion_id / patient_id) the group id is hashed instead, so one
// lesion or patient never straddles two sets. Also what a training run derives from the split:
// the index lists per subset (and the train images per class, for balanced sampling), the
// split.csv record, and the "balanced" class weights. Tests: tests/test_split.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace engine {

enum class Subset : int8_t { Train = 0, Validation = 1, Test = 2 };
const char* subset_name(Subset s);

std::string sha1_hex(const std::string& data);  // FIPS 180-4 SHA-1, lower-case hex

// The retrain.py percentage in [0, 100] for a path ('/'-separated; only the base name counts).
double retrain_percentage(const std::string& key);
Subset assign_subset(const std::string& path, const std::string& group, double validation_pct,
                     double test_pct);

// Assigns every image; throws engine::Error naming the class when a subset with a non-zero
// percentage (or train) gets no image of some class ("too few images for the split").
std::vector<Subset> split_dataset(const std::vector<std::string>& paths,
                                  const std::vector<std::string>& groups,
                                  const std::vector<int32_t>& labels,
                                  const std::vector<std::string>& class_names,
                                  double validation_pct, double test_pct);

// The rows of each subset, in cache order, and the train rows of each class (labels in
// [0, classes); throws naming the row otherwise).
struct SplitIndices {
  std::vector<int64_t> train, validation, test;
  std::vector<std::vector<int64_t>> train_by_class;  // [class] -> train rows of that class
};
SplitIndices split_indices(const std::vector<Subset>& subsets, const std::vector<int32_t>& labels,
                           int classes);

// split.csv: header path,label,group,subset, then one row per image (label as its class name),
// every field through csv_field. Ends with a newline.
std::string split_csv(const std::vector<std::string>& paths, const std::vector<int32_t>& labels,
                      const std::vector<std::string>& groups,
                      const std::vector<std::string>& class_names,
                      const std::vector<Subset>& subsets);

// --class-weights balanced: w_k = n / (K * n_k), n the train images, n_k those of class k -- the
// formula of scikit-learn's compute_class_weight('balanced'), so each class carries the same total
// weight in the loss. Computed in double and rounded once to float. Throws when a class has no
// train image (its weight would be infinite).
std::vector<float> balanced_class_weights(const std::vector<int64_t>& train_per_class);

}  // namespace engine
