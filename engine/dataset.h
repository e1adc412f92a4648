// engine/dataset.h: which images a run covers and what their labels and groups are. Two
// conventions, as the TF retrain tutorial and the ISIC challenges use them:
//  - class folders: <root>/<class name>/... ; the class is the folder name (sorted);
//  - an image folder plus a labels CSV in an ISIC layout (docs/DATASETS.md): an id column
//    (image, image_id, image_name, isic_id; or none, for the 2016 files), and either one label
//    column (strings such as benign/malignant, or 0/1) or one-hot class columns (2018/2019);
//    ids match files with or without their extension (.jpg/.jpeg/.png only: other dots belong to
//    the id). An optional group column is kept for the split: patient_id when the CSV has one,
//    else lesion_id (HAM10000), or --group-column.
// Paths are the names as listed under the root (symlinks are followed for their contents, never
// resolved for their names): a file linked into two class folders is two entries.
// A folder with files and no CSV is unlabelled (for predict). Problems that are not fatal (an
// empty class folder, a CSV row with no file, a file with no CSV row, a bad row) are collected as
// one-line notes; files with no usable label are listed as skipped, not extracted.
#pragma once
#include <string>
#include <vector>

#include "engine/bottleneck_cache.h"

namespace engine {

struct DatasetOptions {
  std::string labels_csv;  // empty: class folders or unlabelled
  std::string
      label_column;  // empty: auto (benign_malignant, target, melanoma, one-hot, 2nd column)
  std::string group_column;  // empty: auto (patient_id, else lesion_id) when present in the CSV
  bool unlabelled = false;   // every file under root, recursively, no labels (predict)
};

struct DatasetImage {
  ImageMeta meta;         // path relative to the root ('/'-separated), label, group
  std::string full_path;  // root + '/' + meta.path
};

struct Dataset {
  std::string root;
  std::vector<std::string> class_names;  // empty when unlabelled
  std::vector<DatasetImage> images;      // sorted by relative path
  std::vector<SkippedFile> skipped;      // files found but not usable (no CSV row, bad label)
  std::vector<std::string> notes;        // one-line problems worth telling the user
  std::string label_source;              // "class folders", "labels.csv column 'MEL'..." or "none"
  std::string group_source =
      "none";  // which CSV column gave the groups (patient_id first), or why none
};

// Throws engine::Error (one line naming the file) for a missing root, an unreadable or
// malformed CSV (no id column, no label column, no rows), an empty dataset.
Dataset list_dataset(const std::string& root, const DatasetOptions& opt);

// Deterministic shard membership for --shard K/N (1-based K): by a hash of the relative path, so
// adding images never moves existing ones between shards.
bool in_shard(const std::string& relative_path, int k, int n);

// Minimal RFC 4180 CSV: quoted fields, doubled quotes, CRLF, BOM. Throws naming `path` and line.
std::vector<std::vector<std::string>> read_csv(const std::string& path);

}  // namespace engine
