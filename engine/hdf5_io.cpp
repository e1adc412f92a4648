// engine/hdf5_io.cpp: the engine's one HDF5 layer (declared in hdf5_io.h), part 1: checks,
// handles, opens and creates, objects and attributes, typed readers. Part 2, the typed writers and
// the layout queries the tests use, is engine/hdf5_io_write.cpp. Every H5* call of the tree is in
// these two files.
#include "engine/hdf5_io.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "engine/error.h"

namespace engine {

// ------------------------------------------------------------------------------ checks, handles
std::string h5_error_reason() {
  std::string reason;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &reason);
  return reason.empty() ? "" : " (" + reason + ")";
}

void h5_throw(const char* stmt, const char* file, int line, const std::string& where,
              const std::string& obj) {
  const char* paren = std::strchr(stmt, '(');
  const std::string call = paren ? std::string(stmt, static_cast<size_t>(paren - stmt)) : stmt;
  const char* slash = std::strrchr(file, '/');
  fail(where, ": ", call, " failed for '", obj, "'", h5_error_reason(), " [check '", stmt, "' at ",
       slash ? slash + 1 : file, ":", line, "]");
}

Hdf5Handle::~Hdf5Handle() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
}

Hdf5Handle& Hdf5Handle::operator=(Hdf5Handle&& o) noexcept {
  if (this != &o) {
    Hdf5Handle tmp(std::move(*this));
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void h5_silence_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

namespace {
void check_is_hdf5(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fail(path, ": cannot open: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  if (st.st_size == 0) fail(path, ": empty file (0 bytes), expected an HDF5 file");
  htri_t is = H5Fis_hdf5(path.c_str());  // HDF5 1.10 (Debian 12)
  if (is <= 0) fail(path, ": not an HDF5 file (no HDF5 signature)");
}
}  // namespace

H5File H5File::open_read(const std::string& path) {
  h5_silence_errors();
  check_is_hdf5(path);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) fail(path, ": HDF5 file cannot be opened (truncated or corrupt)", h5_error_reason());
  H5File f;
  f.path_ = path;
  f.id_ = H5Id(id);
  return f;
}

H5File H5File::open_rw(const std::string& path) {
  h5_silence_errors();
  check_is_hdf5(path);
  H5File f;
  f.path_ = path;
  f.id_ = H5Id(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), path, "/"));
  return f;
}

H5File H5File::create(const std::string& path) {
  h5_silence_errors();
  H5File f;
  f.path_ = path;
  f.id_ =
      H5Id(H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), path, "/"));
  return f;
}

void H5File::close() {
  if (id_.valid()) H5_CHECK(H5Fclose(id_.release()), path_, "/");
}

// ---------------------------------------------------------------------------- objects, attributes
bool h5_exists(hid_t loc, const std::string& obj) {
  // Walk the path so that missing intermediate groups are "false", not an error.
  size_t pos = 0;
  while (true) {
    size_t next = obj.find('/', pos + 1);
    std::string prefix = obj.substr(0, next);
    if (!prefix.empty() && prefix != "/") {
      if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    if (next == std::string::npos) break;
    pos = next;
  }
  return H5Oexists_by_name(loc, obj.c_str(), H5P_DEFAULT) > 0;
}

bool h5_has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

H5Id h5_open_group(hid_t loc, const std::string& obj, const std::string& where) {
  if (!h5_exists(loc, obj)) fail(where, ": missing group '", obj, "'");
  hid_t g = H5Gopen2(loc, obj.c_str(), H5P_DEFAULT);
  if (g < 0) fail(where, ": H5Gopen2 failed for '", obj, "' (not a group or corrupt)");
  return H5Id(g);
}

H5Id h5_open_object(hid_t loc, const std::string& obj, const std::string& where) {
  if (!h5_exists(loc, obj)) fail(where, ": missing object '", obj, "'");
  return H5Id(H5_CHECK(H5Oopen(loc, obj.c_str(), H5P_DEFAULT), where, obj));
}

std::vector<std::string> h5_group_members(hid_t loc, const std::string& grp,
                                          const std::string& where) {
  H5Id g = h5_open_group(loc, grp, where);
  H5G_info_t info;
  H5_CHECK(H5Gget_info(g.get(), &info), where, grp);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5_CHECK(
        H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT),
        where, grp);
    std::string s(static_cast<size_t>(len), '\0');
    H5_CHECK(H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size() + 1,
                                H5P_DEFAULT),
             where, grp);
    names.push_back(s);
  }
  return names;
}

std::string h5_dtype_desc(hid_t t) {
  switch (H5Tget_class(t)) {
    case H5T_FLOAT: return "float" + std::to_string(8 * H5Tget_size(t));
    case H5T_INTEGER:
      return std::string(H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int") +
             std::to_string(8 * H5Tget_size(t));
    case H5T_STRING: return H5Tis_variable_str(t) > 0 ? "vlen string" : "fixed string";
    case H5T_COMPOUND: return "compound";
    default: return "another type";
  }
}

std::string h5_dims_str(const std::vector<hsize_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

// A C-string memory type: variable length in `cset`, or `len` bytes NUL-padded.
H5Id h5_string_type(bool variable, size_t len, H5T_cset_t cset, const std::string& where,
                    const std::string& obj) {
  H5Id t(H5_CHECK(H5Tcopy(H5T_C_S1), where, obj));
  if (variable) {
    H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE), where, obj);
  } else {
    H5_CHECK(H5Tset_size(t.get(), len), where, obj);
    H5_CHECK(H5Tset_strpad(t.get(), H5T_STR_NULLPAD), where, obj);
  }
  H5_CHECK(H5Tset_cset(t.get(), cset), where, obj);
  return t;
}

std::vector<std::string> h5_read_string_array_attr(hid_t obj, const std::string& name,
                                                   const std::string& where) {
  if (!h5_has_attr(obj, name)) fail(where, ": missing attribute '", name, "'");
  H5Id attr(H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT), where, name));
  H5Id type(H5_CHECK(H5Aget_type(attr.get()), where, name));
  H5Id space(H5_CHECK(H5Aget_space(attr.get()), where, name));
  hssize_t n = H5_CHECK(H5Sget_simple_extent_npoints(space.get()), where, name);
  std::vector<std::string> out;
  // Keras writes an empty weight_names as np.asarray([]), a float64 array: empty of any type is
  // an empty list.
  if (n == 0) return out;
  if (H5Tget_class(type.get()) != H5T_STRING)
    fail(where, ": attribute '", name, "': expected strings, found ", h5_dtype_desc(type.get()));
  const H5T_cset_t cset = H5Tget_cset(type.get());  // h5py writes str as UTF-8
  if (H5Tis_variable_str(type.get()) > 0) {
    std::vector<char*> ptrs(static_cast<size_t>(n), nullptr);
    H5Id mem = h5_string_type(true, 0, cset, where, name);
    H5_CHECK(H5Aread(attr.get(), mem.get(), ptrs.data()), where, name);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    size_t len = H5Tget_size(type.get());
    std::vector<char> buf(len * static_cast<size_t>(n) + 1, 0);
    H5Id mem = h5_string_type(false, len, cset, where, name);
    H5_CHECK(H5Aread(attr.get(), mem.get(), buf.data()), where, name);
    for (hssize_t i = 0; i < n; ++i) {
      const char* s = buf.data() + static_cast<size_t>(i) * len;
      out.emplace_back(s, strnlen(s, len));
    }
  }
  return out;
}

std::string h5_read_string_attr(hid_t obj, const std::string& name, const std::string& where) {
  auto v = h5_read_string_array_attr(obj, name, where);
  if (v.size() != 1) fail(where, ": attribute '", name, "': expected one string, found ", v.size());
  return v[0];
}

namespace {
// Opens attribute `name`, checks its type class; returns it with its element count.
H5Id open_attr(hid_t obj, const std::string& name, H5T_class_t cls, const char* expected,
               const std::string& where, hssize_t* count) {
  if (!h5_has_attr(obj, name)) fail(where, ": missing attribute '", name, "'");
  H5Id attr(H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT), where, name));
  H5Id type(H5_CHECK(H5Aget_type(attr.get()), where, name));
  const H5T_class_t c = H5Tget_class(type.get());
  if (c != cls && !(cls == H5T_NO_CLASS && (c == H5T_INTEGER || c == H5T_FLOAT)))
    fail(where, ": attribute '", name, "': expected ", expected, ", found ",
         h5_dtype_desc(type.get()));
  H5Id space(H5_CHECK(H5Aget_space(attr.get()), where, name));
  *count = H5_CHECK(H5Sget_simple_extent_npoints(space.get()), where, name);
  return attr;
}
}  // namespace

int64_t h5_read_int_attr(hid_t obj, const std::string& name, const std::string& where) {
  hssize_t n = 0;
  H5Id attr = open_attr(obj, name, H5T_INTEGER, "an integer", where, &n);
  if (n != 1) fail(where, ": attribute '", name, "': expected one integer, found ", n);
  long long v = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_LLONG, &v), where, name);
  return v;
}

double h5_read_double_attr(hid_t obj, const std::string& name, const std::string& where) {
  hssize_t n = 0;
  H5Id attr = open_attr(obj, name, H5T_FLOAT, "a float", where, &n);
  if (n != 1) fail(where, ": attribute '", name, "': expected one float, found ", n);
  double v = 0;
  H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), where, name);
  return v;
}

std::vector<double> h5_read_double_array_attr(hid_t obj, const std::string& name,
                                              const std::string& where) {
  hssize_t n = 0;
  H5Id attr = open_attr(obj, name, H5T_NO_CLASS, "numbers", where, &n);
  std::vector<double> v(static_cast<size_t>(n));
  if (n > 0) H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, v.data()), where, name);
  return v;
}

// ------------------------------------------------------------------------------------ datasets
H5Dataset h5_open_dataset(hid_t loc, const std::string& obj, const std::string& where) {
  if (!h5_exists(loc, obj)) fail(where, ": missing dataset '", obj, "'");
  H5Dataset d;
  d.id = H5Id(H5Dopen2(loc, obj.c_str(), H5P_DEFAULT));
  if (!d.id.valid())
    fail(where, ": '", obj, "' is not a dataset (or is corrupt)", h5_error_reason());
  H5Id type(H5_CHECK(H5Dget_type(d.id.get()), where, obj));
  H5Id space(H5_CHECK(H5Dget_space(d.id.get()), where, obj));
  d.dtype = h5_dtype_desc(type.get());
  d.type_size = H5Tget_size(type.get());
  int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()), where, obj);
  d.dims.resize(static_cast<size_t>(rank));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), d.dims.data(), nullptr), where, obj);
  return d;
}

void h5_read_floats(const H5Dataset& d, float* out, const std::string& where,
                    const std::string& obj) {
  H5_CHECK(H5Dread(d.id.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), where, obj);
}

void h5_read_ints(const H5Dataset& d, int32_t* out, const std::string& where,
                  const std::string& obj) {
  H5_CHECK(H5Dread(d.id.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), where, obj);
}

std::vector<std::string> h5_read_strings(const H5Dataset& d, const std::string& where,
                                         const std::string& obj) {
  if (d.dtype != "vlen string" && d.dtype != "fixed string")
    fail(where, ": dataset '", obj, "': expected strings, found ", d.dtype);
  if (d.dims.size() != 1)
    fail(where, ": dataset '", obj, "': expected rank 1, found ", d.dims.size());
  const size_t count = d.dims[0];
  std::vector<std::string> out;
  if (count == 0) return out;
  out.reserve(count);
  if (d.dtype == "vlen string") {
    H5Id mem = h5_string_type(true, 0, H5T_CSET_UTF8, where, obj);
    H5Id space(H5_CHECK(H5Dget_space(d.id.get()), where, obj));
    std::vector<char*> ptrs(count, nullptr);
    H5_CHECK(H5Dread(d.id.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), where,
             obj);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    const size_t len = d.type_size;
    H5Id mem = h5_string_type(false, len, H5T_CSET_ASCII, where, obj);
    std::vector<char> buf(len * count);
    H5_CHECK(H5Dread(d.id.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), where, obj);
    for (size_t i = 0; i < count; ++i) out.emplace_back(&buf[i * len], strnlen(&buf[i * len], len));
  }
  return out;
}

namespace detail {
H5RowSpaces h5_row_spaces(hid_t dset, hsize_t first, hsize_t rows, const std::string& where,
                          const std::string& obj) {
  H5Id fspace(H5_CHECK(H5Dget_space(dset), where, obj));
  hsize_t dims[2] = {0, 0};
  H5_CHECK(H5Sget_simple_extent_dims(fspace.get(), dims, nullptr), where, obj);
  hsize_t start[2] = {first, 0}, count[2] = {rows, dims[1]};
  H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), where,
           obj);
  H5Id mspace(H5_CHECK(H5Screate_simple(2, count, nullptr), where, obj));
  return {std::move(fspace), std::move(mspace)};
}
}  // namespace detail

void h5_read_float_rows(hid_t dset, hsize_t first, hsize_t rows, float* out,
                        const std::string& where, const std::string& obj) {
  auto [fspace, mspace] = detail::h5_row_spaces(dset, first, rows, where, obj);
  H5_CHECK(H5Dread(dset, H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), H5P_DEFAULT, out), where,
           obj);
}

namespace {
H5Dataset open_float32(hid_t loc, const std::string& obj, const std::string& where) {
  H5Dataset d = h5_open_dataset(loc, obj, where);
  if (d.dtype != "float32") fail(where, ": dataset '", obj, "': expected float32, found ", d.dtype);
  return d;
}
std::vector<int64_t> dims64(const std::vector<hsize_t>& d) { return {d.begin(), d.end()}; }
// An H5FloatArray, H5DoubleArray or H5U8Array with the dataset's dims and room for its data.
template <typename Array>
Array sized_like(const H5Dataset& d) {
  Array a;
  a.dims = dims64(d.dims);
  a.data.resize(static_cast<size_t>(Shape(a.dims).numel()));
  return a;
}
}  // namespace

H5FloatArray h5_read_float_array(hid_t loc, const std::string& obj, const std::string& where) {
  H5Dataset d = open_float32(loc, obj, where);
  auto a = sized_like<H5FloatArray>(d);
  h5_read_floats(d, a.data.data(), where, obj);
  return a;
}

Tensor h5_read_tensor(hid_t loc, const std::string& obj, const std::string& where) {
  H5Dataset d = open_float32(loc, obj, where);
  Tensor t{Shape(dims64(d.dims))};
  h5_read_floats(d, t.data(), where, obj);
  return t;
}

std::vector<float> h5_read_float_checked(hid_t loc, const std::string& obj, const Shape& expected,
                                         const std::string& where) {
  H5Dataset d = open_float32(loc, obj, where);
  if (Shape(dims64(d.dims)) != expected)
    fail(where, ": dataset '", obj, "': expected shape ", expected.str(), ", found ",
         Shape(dims64(d.dims)).str());
  std::vector<float> v(static_cast<size_t>(expected.numel()));
  h5_read_floats(d, v.data(), where, obj);
  return v;
}

H5DoubleArray h5_read_double_array(hid_t loc, const std::string& obj, const std::string& where) {
  H5Dataset d = h5_open_dataset(loc, obj, where);
  if (d.dtype.rfind("float", 0) != 0 && d.dtype.rfind("int", 0) != 0 &&
      d.dtype.rfind("uint", 0) != 0)
    fail(where, ": dataset '", obj, "': expected numbers, found ", d.dtype);
  auto a = sized_like<H5DoubleArray>(d);
  H5_CHECK(H5Dread(d.id.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data()),
           where, obj);
  return a;
}

H5U8Array h5_read_u8_array(hid_t loc, const std::string& obj, const std::string& where) {
  H5Dataset d = h5_open_dataset(loc, obj, where);
  if (d.dtype != "uint8" && d.dtype != "int8")
    fail(where, ": dataset '", obj, "': expected uint8, found ", d.dtype);
  auto a = sized_like<H5U8Array>(d);
  H5_CHECK(H5Dread(d.id.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data()),
           where, obj);
  return a;
}

}  // namespace engine
