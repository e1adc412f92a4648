// engine/dataset.cpp: listing images, labels and groups; see dataset.h.
#include "engine/dataset.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace engine {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

// Files (and symlinks, even broken ones: they are reported when decoded) under `dir`, recursively,
// hidden entries excluded. Paths are the names as listed, relative to the root ('/'-separated,
// `rel` is dir's): a symlink is never resolved for its name, so a file linked into two folders is
// two entries and a linked folder keeps its own name. Linked folders are followed, except one
// that leads back to a folder being walked (a cycle).
void walk_files(const fs::path& dir, const std::string& rel, std::vector<std::string>& out,
                std::vector<fs::path>& stack) {
  std::error_code ec;
  const fs::path canon = fs::canonical(dir, ec);
  if (!ec) {
    if (std::find(stack.begin(), stack.end(), canon) != stack.end()) return;  // link cycle
    stack.push_back(canon);
  }
  fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) fail(dir.string(), ": cannot list directory: ", ec.message());
  std::vector<fs::directory_entry> entries;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) fail(dir.string(), ": cannot list directory: ", ec.message());
    entries.push_back(*it);
  }
  for (const auto& e : entries) {
    if (hidden(e.path())) continue;
    std::error_code e2;
    const std::string name =
        rel.empty() ? e.path().filename().string() : rel + "/" + e.path().filename().string();
    if (e.is_directory(e2))
      walk_files(e.path(), name, out, stack);
    else
      out.push_back(name);
  }
  if (!canon.empty() && !stack.empty() && stack.back() == canon) stack.pop_back();
}

void walk_files(const fs::path& dir, const std::string& rel, std::vector<std::string>& out) {
  std::vector<fs::path> stack;
  walk_files(dir, rel, out, stack);
}

// The image id of a file name or CSV id: the base name without a known image extension (.jpg,
// .jpeg, .png, any case). Other dots are part of the id ("img.v1" stays "img.v1").
std::string stem_of(const std::string& rel) {
  std::string name = fs::path(rel).filename().string();
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return name;
  const std::string ext = lower(name.substr(dot + 1));
  return ext == "jpg" || ext == "jpeg" || ext == "png" ? name.substr(0, dot) : name;
}

bool is_binary_value(const std::string& v, int* out) {
  const std::string t = trim(v);
  if (t == "0" || t == "0.0" || t == "0.00") return *out = 0, true;
  if (t == "1" || t == "1.0" || t == "1.00") return *out = 1, true;
  return false;
}

}  // namespace

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open labels CSV");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  if (s.size() >= 3 && s.compare(0, 3, "\xEF\xBB\xBF") == 0) s.erase(0, 3);  // UTF-8 BOM
  if (s.find('\0') != std::string::npos) fail(path, ": not a CSV text file (contains NUL bytes)");
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, field_started = false;
  int64_t line = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"')
          field += '"', ++i;
        else
          quoted = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"' && !field_started) {
      quoted = field_started = true;
    } else if (c == ',') {
      row.push_back(field), field.clear(), field_started = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      row.push_back(field), field.clear(), field_started = false;
      if (!(row.size() == 1 && trim(row[0]).empty())) rows.push_back(row);
      row.clear();
      ++line;
    } else {
      field += c, field_started = true;
    }
  }
  if (quoted) fail(path, ": line ", line, ": unterminated quoted field");
  if (field_started || !row.empty()) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

bool in_shard(const std::string& relative_path, int k, int n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : relative_path) h = (h ^ c) * 1099511628211ull;
  return static_cast<int>(h % static_cast<uint64_t>(n)) == k - 1;
}

namespace {

// Labels from a CSV in one of the ISIC layouts; fills ds.class_names and labels per stem.
struct CsvLabels {
  std::map<std::string, int32_t> label;  // by image id (stem)
  std::map<std::string, std::string> group;
  std::vector<std::string> bad_rows;            // one-line notes
  std::map<std::string, std::string> unusable;  // id -> why its row gives no label
};

CsvLabels parse_labels(const std::string& path, const DatasetOptions& opt, Dataset& ds) {
  auto rows = read_csv(path);
  if (rows.empty()) fail(path, ": labels CSV is empty");
  // ISIC 2016 files have no header: the first cell is an image id.
  const std::string first = trim(rows[0][0]);
  const bool header = !(first.rfind("ISIC_", 0) == 0 && first.size() > 5 &&
                        std::isdigit(static_cast<unsigned char>(first[5])));
  std::vector<std::string> cols;
  if (header) {
    for (auto& c : rows[0]) cols.push_back(trim(c));
  } else {
    for (size_t i = 0; i < rows[0].size(); ++i)
      cols.push_back(i == 0 ? "image" : "column" + std::to_string(i + 1));
  }
  const size_t data_start = header ? 1 : 0;
  if (rows.size() <= data_start) fail(path, ": labels CSV has a header but no rows");
  auto find_col = [&](std::initializer_list<const char*> names) -> int {
    for (const char* n : names)
      for (size_t i = 0; i < cols.size(); ++i)
        if (lower(cols[i]) == n) return static_cast<int>(i);
    return -1;
  };
  const int id_col =
      find_col({"image", "image_id", "image_name", "isic_id", "isic_id", "image id"});
  if (id_col < 0)
    fail(path, ": no image id column (expected one of image, image_id, image_name, isic_id; found ",
         cols.size(), " columns starting '", cols[0], "')");
  int group_col = -1;
  if (!opt.group_column.empty()) {
    group_col = find_col({});
    for (size_t i = 0; i < cols.size(); ++i)
      if (cols[i] == opt.group_column) group_col = static_cast<int>(i);
    if (group_col < 0) fail(path, ": --group-column '", opt.group_column, "' is not a column");
  } else {
    // A patient can have several lesions: grouping by patient keeps all of a person's images in
    // one subset (ISIC 2020); lesion_id only when there is no patient column (HAM10000).
    group_col = find_col({"patient_id", "lesion_id"});
  }
  ds.group_source = group_col >= 0
                        ? "column '" + cols[static_cast<size_t>(group_col)] + "' of " + path
                        : "none (no patient_id or lesion_id column in " + path + ")";
  CsvLabels out;
  const size_t nrows = rows.size() - data_start;
  auto cell = [&](size_t r, int c) -> std::string {
    const auto& row = rows[data_start + r];
    return c < static_cast<int>(row.size()) ? trim(row[static_cast<size_t>(c)]) : std::string();
  };

  // Pick the label column(s).
  int label_col = -1;
  std::vector<int> onehot;
  if (!opt.label_column.empty()) {
    for (size_t i = 0; i < cols.size(); ++i)
      if (cols[i] == opt.label_column) label_col = static_cast<int>(i);
    if (label_col < 0) fail(path, ": --label-column '", opt.label_column, "' is not a column");
  } else {
    label_col =
        find_col({"benign_malignant", "target", "melanoma", "dx", "diagnosis", "label", "class"});
    if (label_col < 0) {
      // One-hot: every other non-id, non-group column is 0/1 in every row (2018/2019 layouts).
      for (size_t c = 0; c < cols.size(); ++c) {
        if (static_cast<int>(c) == id_col || static_cast<int>(c) == group_col) continue;
        bool binary = true;
        int v;
        for (size_t r = 0; r < nrows && binary; ++r)
          binary = is_binary_value(cell(r, static_cast<int>(c)), &v);
        if (binary) onehot.push_back(static_cast<int>(c));
      }
      if (onehot.size() < 2) {
        onehot.clear();
        if (cols.size() == 2) label_col = 1 - id_col;  // id + one label (2016)
      }
    }
  }
  if (label_col < 0 && onehot.empty())
    fail(path,
         ": cannot tell the label column (no benign_malignant/target/melanoma/dx column and no "
         "one-hot columns); use --label-column");

  std::vector<std::pair<std::string, int32_t>> labelled;  // (id, raw label index)
  if (!onehot.empty()) {
    for (int c : onehot) ds.class_names.push_back(cols[static_cast<size_t>(c)]);
    ds.label_source = path + ": one-hot columns";
  } else {
    // A 0/1 column is binary; anything else is a string class (sorted unique values).
    bool binary = true;
    int v;
    for (size_t r = 0; r < nrows && binary; ++r) binary = is_binary_value(cell(r, label_col), &v);
    const std::string name = cols[static_cast<size_t>(label_col)];
    if (binary) {
      if (lower(name) == "target" || !header)
        ds.class_names = {"benign", "malignant"};
      else
        ds.class_names = {"not_" + name, name};
    } else {
      std::set<std::string> values;
      for (size_t r = 0; r < nrows; ++r)
        if (!cell(r, label_col).empty()) values.insert(cell(r, label_col));
      ds.class_names.assign(values.begin(), values.end());
    }
    ds.label_source = path + ": column '" + name + "'";
  }
  for (size_t r = 0; r < nrows; ++r) {
    std::string id = cell(r, id_col);
    const size_t line = data_start + r + 1;
    if (id.empty()) {
      out.bad_rows.push_back(path + ": line " + std::to_string(line) + ": empty image id");
      continue;
    }
    id = stem_of(id);
    auto unusable = [&](const std::string& why) {
      out.bad_rows.push_back(path + ": line " + std::to_string(line) + ": " + id + " " + why);
      out.unusable.emplace(id, path + " line " + std::to_string(line) + ": " + why);
    };
    int32_t label = -1;
    if (!onehot.empty()) {
      int ones = 0;
      for (size_t k = 0; k < onehot.size(); ++k) {
        int bit = 0;
        is_binary_value(cell(r, onehot[k]), &bit);
        if (bit) ++ones, label = static_cast<int32_t>(k);
      }
      if (ones != 1) {
        unusable("has " + std::to_string(ones) + " one-hot labels set, expected exactly 1");
        continue;
      }
    } else {
      const std::string v = cell(r, label_col);
      int bit = 0;
      if (ds.class_names.size() == 2 && is_binary_value(v, &bit) &&
          (ds.class_names[0] == "benign" || ds.class_names[0].rfind("not_", 0) == 0)) {
        label = bit;
      } else {
        auto it = std::find(ds.class_names.begin(), ds.class_names.end(), v);
        if (v.empty() || it == ds.class_names.end()) {
          unusable(v.empty() ? "has no label (empty '" + cols[static_cast<size_t>(label_col)] + "')"
                             : "has no label (unknown value '" + v + "')");
          continue;
        }
        label = static_cast<int32_t>(it - ds.class_names.begin());
      }
    }
    if (out.label.count(id)) {
      out.bad_rows.push_back(path + ": line " + std::to_string(line) + ": duplicate image id " +
                             id + " (first row kept)");
      continue;
    }
    out.label[id] = label;
    if (group_col >= 0) out.group[id] = cell(r, group_col);
  }
  return out;
}

}  // namespace

Dataset list_dataset(const std::string& root_arg, const DatasetOptions& opt) {
  Dataset ds;
  std::error_code ec;
  fs::path root(root_arg);
  if (!fs::exists(root, ec)) fail(root_arg, ": image folder does not exist");
  if (!fs::is_directory(root, ec)) fail(root_arg, ": not a directory");
  ds.root = root_arg;

  std::vector<std::string> files;
  if (!opt.labels_csv.empty() || opt.unlabelled) {
    walk_files(root, "", files);
  } else {
    // Class folders when the root holds sub-directories; otherwise an unlabelled folder.
    std::vector<fs::path> dirs;
    std::vector<std::string> loose;
    for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (hidden(it->path())) continue;
      std::error_code e2;
      if (it->is_directory(e2))
        dirs.push_back(it->path());
      else
        loose.push_back(it->path().filename().string());
    }
    if (ec) fail(root_arg, ": cannot list directory: ", ec.message());
    if (dirs.empty()) {
      walk_files(root, "", files);
      ds.label_source = "none (no class folders and no labels CSV)";
    } else {
      std::sort(dirs.begin(), dirs.end());
      for (const auto& d : dirs) {
        const int32_t label = static_cast<int32_t>(ds.class_names.size());
        ds.class_names.push_back(d.filename().string());
        std::vector<std::string> in_class;
        walk_files(d, d.filename().string(), in_class);
        if (in_class.empty())
          ds.notes.push_back(d.string() + ": empty class folder '" + ds.class_names.back() + "'");
        for (auto& f : in_class) {
          ds.images.push_back({ImageMeta{f, label, ""}, (root / f).string()});
        }
      }
      for (const auto& f : loose)
        ds.notes.push_back((root / f).string() + ": file outside the class folders, ignored");
      ds.label_source = "class folders";
      ds.group_source = "none (class folders: split by file-name hash)";
    }
  }
  if (!opt.labels_csv.empty()) {
    CsvLabels csv = parse_labels(opt.labels_csv, opt, ds);
    ds.notes.insert(ds.notes.end(), csv.bad_rows.begin(), csv.bad_rows.end());
    std::set<std::string> matched;
    for (const auto& f : files) {
      const std::string id = stem_of(f);
      auto it = csv.label.find(id);
      if (it == csv.label.end()) {
        auto why = csv.unusable.find(id);
        ds.skipped.push_back(
            {f, why != csv.unusable.end() ? why->second : "no row in " + opt.labels_csv});
        continue;
      }
      if (matched.count(id)) {
        ds.skipped.push_back({f, "another file has the same image id " + id});
        continue;
      }
      matched.insert(id);
      auto g = csv.group.find(id);
      ds.images.push_back(
          {ImageMeta{f, it->second, g == csv.group.end() ? "" : g->second}, (root / f).string()});
    }
    size_t missing = 0;
    for (const auto& kv : csv.label)
      if (!matched.count(kv.first)) {
        if (++missing <= 10)
          ds.notes.push_back(opt.labels_csv + ": row for " + kv.first + " has no image file in " +
                             root_arg);
      }
    if (missing > 10)
      ds.notes.push_back(opt.labels_csv + ": " + std::to_string(missing - 10) +
                         " more rows have no image file");
  } else if (ds.images.empty()) {
    for (const auto& f : files) ds.images.push_back({ImageMeta{f, -1, ""}, (root / f).string()});
  }
  std::sort(ds.images.begin(), ds.images.end(),
            [](const DatasetImage& a, const DatasetImage& b) { return a.meta.path < b.meta.path; });
  if (ds.images.empty()) fail(root_arg, ": no images found");
  return ds;
}

}  // namespace engine
