// engine/hdf5_io.h: checked, RAII access to HDF5 files through the C API. Every call is checked;
// a failure throws engine::Error with one line naming the file, the object and the reason
// (expected vs found for dtype, rank and shape). HDF5's own error-stack printing is switched off
// so that bad files give exactly that one line. Used by the weight loader, the reference-tensor
// tests and (later) the bottleneck cache.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// A move-only owner of one hid_t, closed with the right H5*close for its type.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id();
  H5Id(H5Id&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  H5Id& operator=(H5Id&& o) noexcept;
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

void h5_silence_errors();  // idempotent; called by every open

class H5File {
 public:
  // Opens read-only; a missing, empty, truncated or non-HDF5 file throws naming `path`.
  static H5File open_read(const std::string& path);
  const std::string& path() const { return path_; }
  hid_t id() const { return id_.get(); }

 private:
  std::string path_;
  H5Id id_;
};

// `where` is the file path used in messages; `obj` an HDF5 path relative to `loc`.
bool h5_exists(hid_t loc, const std::string& obj);
bool h5_has_attr(hid_t obj, const std::string& name);
H5Id h5_open_group(hid_t loc, const std::string& obj, const std::string& where);
// A string-array attribute (fixed or variable length); a missing one throws.
std::vector<std::string> h5_read_string_array_attr(hid_t obj, const std::string& name,
                                                   const std::string& where);
std::string h5_read_string_attr(hid_t obj, const std::string& name, const std::string& where);
int64_t h5_read_int_attr(hid_t obj, const std::string& name, const std::string& where);

// Reads a float32 dataset (anything else: "expected float32, found <type>").
struct H5FloatArray {
  std::vector<int64_t> dims;
  std::vector<float> data;
};
H5FloatArray h5_read_float_array(hid_t loc, const std::string& obj, const std::string& where);
Tensor h5_read_tensor(hid_t loc, const std::string& obj, const std::string& where);
// Checks the dataset's shape before reading; mismatch throws "expected (..), found (..)".
std::vector<float> h5_read_float_checked(hid_t loc, const std::string& obj, const Shape& expected,
                                         const std::string& where);

}  // namespace engine
