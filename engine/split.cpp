// engine/split.cpp: see split.h.
#include "engine/split.h"

#include <array>
#include <cstdio>
#include <cstring>

#include "engine/error.h"
#include "engine/text_format.h"

namespace engine {

const char* subset_name(Subset s) {
  return s == Subset::Train ? "train" : s == Subset::Validation ? "validation" : "test";
}

std::string sha1_hex(const std::string& data) {
  uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
  std::string m = data;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  m += static_cast<char>(0x80);
  while (m.size() % 64 != 56) m += static_cast<char>(0);
  for (int i = 7; i >= 0; --i) m += static_cast<char>((bits >> (8 * i)) & 0xff);
  auto rol = [](uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      const auto* p = reinterpret_cast<const unsigned char*>(m.data() + off + 4 * i);
      w[i] = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    }
    for (int i = 16; i < 80; ++i) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      uint32_t f, k;
      if (i < 20)
        f = (b & c) | (~b & d), k = 0x5A827999u;
      else if (i < 40)
        f = b ^ c ^ d, k = 0x6ED9EBA1u;
      else if (i < 60)
        f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
      else
        f = b ^ c ^ d, k = 0xCA62C1D6u;
      const uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d, d = c, c = rol(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
  }
  char out[41];
  for (int i = 0; i < 5; ++i) std::snprintf(out + 8 * i, 9, "%08x", h[i]);
  return std::string(out, 40);
}

double retrain_percentage(const std::string& key) {
  std::string name =
      key.substr(key.find_last_of('/') == std::string::npos ? 0 : key.find_last_of('/') + 1);
  const size_t nohash = name.find("_nohash_");
  if (nohash != std::string::npos) name.erase(nohash);
  const std::string hex = sha1_hex(name);
  // int(hex, 16) % 2^27: the low 27 bits of the 160-bit number = the last 7 hex digits, masked.
  const uint64_t low = std::stoull(hex.substr(hex.size() - 7), nullptr, 16) & ((1ull << 27) - 1);
  return static_cast<double>(low) * (100.0 / static_cast<double>((1ull << 27) - 1));
}

Subset assign_subset(const std::string& path, const std::string& group, double validation_pct,
                     double test_pct) {
  const double p = retrain_percentage(group.empty() ? path : group);
  if (p < validation_pct) return Subset::Validation;
  if (p < validation_pct + test_pct) return Subset::Test;
  return Subset::Train;
}

std::vector<Subset> split_dataset(const std::vector<std::string>& paths,
                                  const std::vector<std::string>& groups,
                                  const std::vector<int32_t>& labels,
                                  const std::vector<std::string>& class_names,
                                  double validation_pct, double test_pct) {
  ENGINE_CHECK(validation_pct >= 0 && test_pct >= 0 && validation_pct + test_pct < 100,
               "split: validation% + test% must be in [0, 100), got ", validation_pct, " + ",
               test_pct);
  std::vector<Subset> out(paths.size());
  std::vector<std::array<int64_t, 3>> count(class_names.size(), {0, 0, 0});
  for (size_t i = 0; i < paths.size(); ++i) {
    out[i] = assign_subset(paths[i], i < groups.size() ? groups[i] : "", validation_pct, test_pct);
    if (labels[i] >= 0 && static_cast<size_t>(labels[i]) < class_names.size())
      ++count[static_cast<size_t>(labels[i])][static_cast<size_t>(out[i])];
  }
  const double pct[3] = {100 - validation_pct - test_pct, validation_pct, test_pct};
  for (size_t k = 0; k < class_names.size(); ++k)
    for (int s = 0; s < 3; ++s)
      if (pct[s] > 0 && count[k][static_cast<size_t>(s)] == 0)
        fail("split: class '", class_names[k], "' has ", count[k][0] + count[k][1] + count[k][2],
             " images, too few for a ", validation_pct, "% validation / ", test_pct,
             "% test split (train ", count[k][0], ", validation ", count[k][1], ", test ",
             count[k][2], "): add images or change --validation-percent/--test-percent");
  return out;
}

SplitIndices split_indices(const std::vector<Subset>& subsets, const std::vector<int32_t>& labels,
                           int classes) {
  ENGINE_CHECK(subsets.size() == labels.size(), "split: ", subsets.size(), " subsets for ",
               labels.size(), " labels");
  SplitIndices out;
  out.train_by_class.resize(static_cast<size_t>(classes));
  for (size_t i = 0; i < subsets.size(); ++i) {
    const auto row = static_cast<int64_t>(i);
    if (labels[i] < 0 || labels[i] >= classes)
      fail("split: row ", row, " has label ", labels[i], ", outside [0, ", classes, ")");
    if (subsets[i] == Subset::Train) {
      out.train.push_back(row);
      out.train_by_class[static_cast<size_t>(labels[i])].push_back(row);
    } else {
      (subsets[i] == Subset::Validation ? out.validation : out.test).push_back(row);
    }
  }
  return out;
}

std::string split_csv(const std::vector<std::string>& paths, const std::vector<int32_t>& labels,
                      const std::vector<std::string>& groups,
                      const std::vector<std::string>& class_names,
                      const std::vector<Subset>& subsets) {
  std::string s = csv_row({"path", "label", "group", "subset"}) + "\n";
  for (size_t i = 0; i < paths.size(); ++i)
    s += csv_row({paths[i], class_names.at(static_cast<size_t>(labels[i])), groups.at(i),
                  subset_name(subsets[i])}) +
         "\n";
  return s;
}

std::vector<float> balanced_class_weights(const std::vector<int64_t>& train_per_class) {
  int64_t n = 0;
  for (int64_t c : train_per_class) n += c;
  const auto k = static_cast<double>(train_per_class.size());
  std::vector<float> w;
  for (size_t i = 0; i < train_per_class.size(); ++i) {
    if (train_per_class[i] <= 0)
      fail("class weights: class ", i, " has no train image, so no balanced weight");
    w.push_back(
        static_cast<float>(static_cast<double>(n) / (k * static_cast<double>(train_per_class[i]))));
  }
  return w;
}

}  // namespace engine
