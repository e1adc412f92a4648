// engine/hdf5_io.cpp: implementation of the checked HDF5 helpers in hdf5_io.h.
#include "engine/hdf5_io.h"

#include <sys/stat.h>

#include <cstring>
#include <mutex>

#include "engine/error.h"

namespace engine {

namespace {
std::string dtype_name(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_FLOAT: return "float" + std::to_string(8 * H5Tget_size(type));
    case H5T_INTEGER: return "int" + std::to_string(8 * H5Tget_size(type));
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    default: return "non-numeric type";
  }
}
}  // namespace

H5Id::~H5Id() {
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

H5Id& H5Id::operator=(H5Id&& o) noexcept {
  if (this != &o) {
    H5Id tmp(std::move(*this));
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void h5_silence_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

H5File H5File::open_read(const std::string& path) {
  h5_silence_errors();
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fail(path, ": cannot open: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, ": not a regular file");
  if (st.st_size == 0) fail(path, ": empty file (0 bytes), expected an HDF5 file");
  htri_t is = H5Fis_hdf5(path.c_str());  // HDF5 1.10 (Debian 12)
  if (is <= 0) fail(path, ": not an HDF5 file (no HDF5 signature)");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) fail(path, ": HDF5 file cannot be opened (truncated or corrupt)");
  H5File f;
  f.path_ = path;
  f.id_ = H5Id(id);
  return f;
}

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

bool h5_has_attr(hid_t obj, const std::string& name) {
  return H5Aexists(obj, name.c_str()) > 0;
}

H5Id h5_open_group(hid_t loc, const std::string& obj, const std::string& where) {
  if (!h5_exists(loc, obj)) fail(where, ": missing group '", obj, "'");
  hid_t g = H5Gopen2(loc, obj.c_str(), H5P_DEFAULT);
  if (g < 0) fail(where, ": H5Gopen2 failed for '", obj, "' (not a group or corrupt)");
  return H5Id(g);
}

std::vector<std::string> h5_read_string_array_attr(hid_t obj, const std::string& name,
                                                   const std::string& where) {
  if (!h5_has_attr(obj, name)) fail(where, ": missing attribute '", name, "'");
  H5Id attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  if (!attr.valid()) fail(where, ": H5Aopen failed for attribute '", name, "'");
  H5Id type(H5Aget_type(attr.get()));
  H5Id space(H5Aget_space(attr.get()));
  if (!type.valid() || !space.valid()) fail(where, ": cannot read attribute '", name, "'");
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0) fail(where, ": attribute '", name, "': bad dataspace");
  std::vector<std::string> out;
  // Keras writes an empty weight_names as np.asarray([]), a float64 array: empty of any type is
  // an empty list.
  if (n == 0) return out;
  if (H5Tget_class(type.get()) != H5T_STRING)
    fail(where, ": attribute '", name, "': expected strings, found ", dtype_name(type.get()));
  if (H5Tis_variable_str(type.get()) > 0) {
    std::vector<char*> ptrs(static_cast<size_t>(n), nullptr);
    H5Id mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));  // h5py writes str as UTF-8
    if (H5Aread(attr.get(), mem.get(), ptrs.data()) < 0)
      fail(where, ": H5Aread failed for attribute '", name, "'");
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    size_t len = H5Tget_size(type.get());
    std::vector<char> buf(len * static_cast<size_t>(n) + 1, 0);
    H5Id mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), len);
    H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    if (H5Aread(attr.get(), mem.get(), buf.data()) < 0)
      fail(where, ": H5Aread failed for attribute '", name, "'");
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

int64_t h5_read_int_attr(hid_t obj, const std::string& name, const std::string& where) {
  if (!h5_has_attr(obj, name)) fail(where, ": missing attribute '", name, "'");
  H5Id attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  H5Id type(attr.valid() ? H5Aget_type(attr.get()) : H5I_INVALID_HID);
  if (!type.valid()) fail(where, ": cannot open attribute '", name, "'");
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    fail(where, ": attribute '", name, "': expected an integer, found ", dtype_name(type.get()));
  long long v = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_LLONG, &v) < 0)
    fail(where, ": H5Aread failed for attribute '", name, "'");
  return v;
}

namespace {
struct OpenDataset {
  H5Id dset, type, space;
  std::vector<int64_t> dims;
};

OpenDataset open_float_dataset(hid_t loc, const std::string& obj, const std::string& where) {
  if (!h5_exists(loc, obj)) fail(where, ": missing dataset '", obj, "'");
  OpenDataset d;
  d.dset = H5Id(H5Dopen2(loc, obj.c_str(), H5P_DEFAULT));
  if (!d.dset.valid()) fail(where, ": H5Dopen2 failed for '", obj, "' (not a dataset or corrupt)");
  d.type = H5Id(H5Dget_type(d.dset.get()));
  d.space = H5Id(H5Dget_space(d.dset.get()));
  if (!d.type.valid() || !d.space.valid()) fail(where, ": cannot read header of '", obj, "'");
  if (H5Tget_class(d.type.get()) != H5T_FLOAT || H5Tget_size(d.type.get()) != 4)
    fail(where, ": dataset '", obj, "': expected float32, found ", dtype_name(d.type.get()));
  int rank = H5Sget_simple_extent_ndims(d.space.get());
  if (rank < 0) fail(where, ": dataset '", obj, "': bad dataspace");
  std::vector<hsize_t> hd(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(d.space.get(), hd.data(), nullptr);
  for (hsize_t x : hd) d.dims.push_back(static_cast<int64_t>(x));
  return d;
}

void read_into(const OpenDataset& d, const std::string& obj, const std::string& where, float* out) {
  if (H5Dread(d.dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    fail(where, ": H5Dread failed for '", obj, "' (truncated or corrupt data)");
}
}  // namespace

H5FloatArray h5_read_float_array(hid_t loc, const std::string& obj, const std::string& where) {
  OpenDataset d = open_float_dataset(loc, obj, where);
  H5FloatArray a;
  a.dims = d.dims;
  a.data.resize(static_cast<size_t>(Shape(d.dims).numel()));
  read_into(d, obj, where, a.data.data());
  return a;
}

Tensor h5_read_tensor(hid_t loc, const std::string& obj, const std::string& where) {
  OpenDataset d = open_float_dataset(loc, obj, where);
  Tensor t{Shape(d.dims)};
  read_into(d, obj, where, t.data());
  return t;
}

std::vector<float> h5_read_float_checked(hid_t loc, const std::string& obj, const Shape& expected,
                                         const std::string& where) {
  OpenDataset d = open_float_dataset(loc, obj, where);
  if (Shape(d.dims) != expected)
    fail(where, ": dataset '", obj, "': expected shape ", expected.str(), ", found ",
         Shape(d.dims).str());
  std::vector<float> v(static_cast<size_t>(expected.numel()));
  read_into(d, obj, where, v.data());
  return v;
}

}  // namespace engine
