// engine/split.h: the train/validation/test split of the TF retrain tutorial
// (tensorflow/examples/image_retraining/retrain.py, ../shared/REFERENCE.md): strip `_nohash_.*`
// from the file name, SHA-1 it, (int(hex, 16) % 2^27) * (100 / (2^27 - 1)) is a percentage;
// below validation% -> validation, below validation% + test% -> test, else train. Stable when
// images are added. With groups (lesion_id / patient_id) the group id is hashed instead, so one
// lesion or patient never straddles two sets.
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

}  // namespace engine
