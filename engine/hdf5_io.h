// engine/hdf5_io.h: the engine's one HDF5 layer: the only code that calls the HDF5 C API
// (engine/hdf5_io.cpp, engine/hdf5_io_write.cpp). Every call is checked with H5_CHECK, which throws
// engine::Error with one line: the file and object, the call, HDF5's own innermost error-stack
// reason (e.g. "No space left on device") and the statement with file:line. HDF5's error-stack
// printing is switched off so that a bad file gives exactly that line. Readers check name, dtype,
// rank and shape (expected vs found). Writers create exactly the types h5py and Keras write
// (little-endian numbers, variable-length UTF-8 or fixed NUL-padded ASCII strings), so files stay
// readable by both. Users: the weight loader, the Keras head and checkpoint files (models/), the
// bottleneck cache (engine/cache_file.cpp), and the tests (reference tensors; deliberately
// malformed files are written with these typed writers, never with raw H5* calls).
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// Throws the one-line error of a failed HDF5 call (see H5_CHECK); the reason is read from
// HDF5's error stack (H5Ewalk2, innermost entry), which the failed call has just filled.
[[noreturn]] void h5_throw(const char* stmt, const char* file, int line, const std::string& where,
                           const std::string& obj);
// The innermost description on HDF5's error stack as " (reason)", or "" when it is empty.
std::string h5_error_reason();

namespace detail {
template <typename T>
T h5_check_result(T r, const char* stmt, const char* file, int line, const std::string& where,
                  const std::string& obj) {
  if (r < 0) h5_throw(stmt, file, line, where, obj);
  return r;
}
}  // namespace detail

}  // namespace engine

// H5_CHECK(stmt, where, obj): evaluates an HDF5 call returning hid_t/herr_t/htri_t; a negative
// result throws "<where>: <call> failed for '<obj>' (<HDF5's reason>) [check '<stmt>' at f:l]".
// `where` is the file path, `obj` the dataset/attribute/group. Yields the call's value.
#define H5_CHECK(stmt, where, obj) \
  ::engine::detail::h5_check_result((stmt), #stmt, __FILE__, __LINE__, (where), (obj))

namespace engine {

// A move-only owner of one hid_t, closed with the right H5*close for its type. (Named
// Hdf5Handle, used as H5Id: the short name the code has always used.)
class Hdf5Handle {
 public:
  Hdf5Handle() = default;
  explicit Hdf5Handle(hid_t id) : id_(id) {}
  ~Hdf5Handle();
  Hdf5Handle(Hdf5Handle&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Hdf5Handle& operator=(Hdf5Handle&& o) noexcept;
  Hdf5Handle(const Hdf5Handle&) = delete;
  Hdf5Handle& operator=(const Hdf5Handle&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() {
    hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};
using H5Id = Hdf5Handle;

namespace detail {
// The file dataspace of a 2-D dataset with rows [first, first + rows) selected, and the memory
// dataspace of those rows: the one selection h5_read_float_rows and h5_write_float_rows share.
struct H5RowSpaces {
  H5Id file;
  H5Id mem;
};
H5RowSpaces h5_row_spaces(hid_t dset, hsize_t first, hsize_t rows, const std::string& where,
                          const std::string& obj);
}  // namespace detail

void h5_silence_errors();  // idempotent; called by every open and create

class H5File {
 public:
  // Opens read-only; a missing, empty, truncated or non-HDF5 file throws naming `path`.
  static H5File open_read(const std::string& path);
  // Opens an existing file for reading and writing (tests that damage a file on purpose).
  static H5File open_rw(const std::string& path);
  // Creates `path`, truncating an existing file.
  static H5File create(const std::string& path);
  const std::string& path() const { return path_; }
  hid_t id() const { return id_.get(); }
  // Closes now, so that a failure of the final flush (e.g. disk full) is reported; the
  // destructor closes too, but cannot report.
  void close();

 private:
  std::string path_;
  H5Id id_;
};

// ------------------------------------------------------------------------------------ reading
// `where` is the file path used in messages; `obj` an HDF5 path relative to `loc`.
bool h5_exists(hid_t loc, const std::string& obj);
bool h5_has_attr(hid_t obj, const std::string& name);
H5Id h5_open_group(hid_t loc, const std::string& obj, const std::string& where);
H5Id h5_open_object(hid_t loc, const std::string& obj, const std::string& where);  // any kind
// The names of a group's members, in name order.
std::vector<std::string> h5_group_members(hid_t loc, const std::string& grp,
                                          const std::string& where);
// A string-array attribute (fixed or variable length); a missing one throws.
std::vector<std::string> h5_read_string_array_attr(hid_t obj, const std::string& name,
                                                   const std::string& where);
std::string h5_read_string_attr(hid_t obj, const std::string& name, const std::string& where);
int64_t h5_read_int_attr(hid_t obj, const std::string& name, const std::string& where);
double h5_read_double_attr(hid_t obj, const std::string& name, const std::string& where);
// Any numeric attribute (scalar or array), converted to double.
std::vector<double> h5_read_double_array_attr(hid_t obj, const std::string& name,
                                              const std::string& where);

// "float32", "int32", "uint8", "vlen string", "fixed string", "compound", "another type".
std::string h5_dtype_desc(hid_t type);
// "(4, 2048)", "(3,)": shapes in messages, as numpy prints them.
std::string h5_dims_str(const std::vector<hsize_t>& dims);

// An open dataset with its element type described (h5_dtype_desc) and its shape. A missing
// dataset throws "missing dataset '<obj>'"; the caller checks dtype and shape.
struct H5Dataset {
  H5Id id;
  std::string dtype;
  size_t type_size = 0;
  std::vector<hsize_t> dims;
};
H5Dataset h5_open_dataset(hid_t loc, const std::string& obj, const std::string& where);
// Whole-dataset reads converted to the memory type named (HDF5 converts numbers).
void h5_read_floats(const H5Dataset& d, float* out, const std::string& where,
                    const std::string& obj);
void h5_read_ints(const H5Dataset& d, int32_t* out, const std::string& where,
                  const std::string& obj);
// A 1-D string dataset, fixed or variable length.
std::vector<std::string> h5_read_strings(const H5Dataset& d, const std::string& where,
                                         const std::string& obj);
// Rows [first, first + rows) of a 2-D float dataset (one hyperslab; filters such as Fletcher-32
// are checked by HDF5 on the way).
void h5_read_float_rows(hid_t dset, hsize_t first, hsize_t rows, float* out,
                        const std::string& where, const std::string& obj);

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
// Any numeric dataset as double (float64 references that float32 would round).
struct H5DoubleArray {
  std::vector<int64_t> dims;
  std::vector<double> data;
};
H5DoubleArray h5_read_double_array(hid_t loc, const std::string& obj, const std::string& where);
// A uint8 dataset (reference images) with its shape.
struct H5U8Array {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
H5U8Array h5_read_u8_array(hid_t loc, const std::string& obj, const std::string& where);

// ------------------------------------------------------------------------------------ writing
// Element types in the file (little-endian, as numpy's '<f4', '<f8', '<i4', '<i8').
enum class H5Type { F32, F64, I32, I64 };
// Attribute string encodings: what h5py writes for Python str (variable-length UTF-8) and for
// numpy 'S' arrays (fixed length, NUL-padded ASCII, as long as the longest value, at least 1).
enum class H5Strings { VarUtf8, FixedAscii };

struct H5DatasetOptions {
  bool track_times = true;      // false: no object times, so equal contents give equal bytes
  std::vector<hsize_t> chunk;   // chunk shape; empty = contiguous
  bool unlimited_rows = false;  // first dimension extendible (needs `chunk`)
  bool fletcher32 = false;      // per-chunk Fletcher-32 checksum (needs `chunk`)
};

// A C-string memory/file type: variable length in `cset`, or `len` bytes NUL-padded.
H5Id h5_string_type(bool variable, size_t len, H5T_cset_t cset, const std::string& where,
                    const std::string& obj);

H5Id h5_create_group(hid_t loc, const std::string& obj, const std::string& where,
                     bool track_times = true);
// Creates a dataset without writing it (see h5_write_float_rows for row-wise writes).
H5Id h5_create_dataset(hid_t loc, const std::string& obj, H5Type type,
                       const std::vector<hsize_t>& dims, const std::string& where,
                       const H5DatasetOptions& opt = {});
// Writes a whole dataset of any rank; `type` is the element type in the file.
void h5_write_floats(hid_t loc, const std::string& obj, const float* data,
                     const std::vector<hsize_t>& dims, const std::string& where,
                     const H5DatasetOptions& opt = {}, H5Type type = H5Type::F32);
void h5_write_ints(hid_t loc, const std::string& obj, const int32_t* data,
                   const std::vector<hsize_t>& dims, const std::string& where,
                   const H5DatasetOptions& opt = {}, H5Type type = H5Type::I32);
void h5_write_ints(hid_t loc, const std::string& obj, const int64_t* data,
                   const std::vector<hsize_t>& dims, const std::string& where,
                   const H5DatasetOptions& opt = {}, H5Type type = H5Type::I64);
// Rows [first, first + rows) of a 2-D float dataset made by h5_create_dataset.
void h5_write_float_rows(hid_t dset, hsize_t first, hsize_t rows, const float* data,
                         const std::string& where, const std::string& obj);
// A 1-D string dataset: variable-length UTF-8 when `fixed_len` is 0, else `fixed_len` bytes
// (ASCII, NUL-padded; a longer value throws).
void h5_write_strings(hid_t loc, const std::string& obj, const std::vector<std::string>& v,
                      size_t fixed_len, const std::string& where, const H5DatasetOptions& opt = {});

// Attributes: scalar unless an array is written. Int attributes are int64, doubles float64.
void h5_write_string_attr(hid_t obj, const std::string& name, const std::string& v,
                          const std::string& where, H5Strings enc = H5Strings::VarUtf8);
void h5_write_string_array_attr(hid_t obj, const std::string& name,
                                const std::vector<std::string>& v, const std::string& where,
                                H5Strings enc = H5Strings::VarUtf8);
void h5_write_int_attr(hid_t obj, const std::string& name, int64_t v, const std::string& where);
void h5_write_double_attr(hid_t obj, const std::string& name, double v, const std::string& where);

// Removing things (tests that damage a file on purpose).
void h5_delete_attr(hid_t obj, const std::string& name, const std::string& where);
void h5_delete_link(hid_t loc, const std::string& obj, const std::string& where);

// ------------------------------------------------------------------ layout checks (for tests)
// How a dataset is stored, so tests can check a writer's layout without calling HDF5.
struct H5StorageInfo {
  std::string dtype;     // h5_dtype_desc
  size_t type_size = 0;  // bytes per element (fixed strings: their length)
  bool utf8 = false;     // strings: character set UTF-8
  std::vector<hsize_t> dims;
  std::vector<hsize_t> chunk;        // empty: not chunked
  std::vector<std::string> filters;  // "fletcher32", "deflate", "shuffle", "filter <id>"
};
H5StorageInfo h5_dataset_info(hid_t loc, const std::string& obj, const std::string& where);
// The element type of an attribute (h5_dtype_desc) and its size in bytes.
std::pair<std::string, size_t> h5_attr_type(hid_t obj, const std::string& name,
                                            const std::string& where);
// True when the object (dataset or group) records modification/change times.
bool h5_has_times(hid_t loc, const std::string& obj, const std::string& where);

}  // namespace engine
