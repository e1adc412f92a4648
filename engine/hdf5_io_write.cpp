// engine/hdf5_io_write.cpp: the engine's one HDF5 layer (declared in hdf5_io.h), part 2: typed
// writers (groups, float/int datasets, row writes, strings, attributes, deletions) and the layout
// queries the tests use (storage, filters, attribute types, times). Part 1 (checks, opens,
// readers) is engine/hdf5_io.cpp; every H5* call of the tree is in these two files.
#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "engine/hdf5_io.h"

namespace engine {

// ------------------------------------------------------------------------------------- writing
namespace {
hid_t file_type(H5Type t) {
  switch (t) {
    case H5Type::F32: return H5T_IEEE_F32LE;
    case H5Type::F64: return H5T_IEEE_F64LE;
    case H5Type::I32: return H5T_STD_I32LE;
    case H5Type::I64: return H5T_STD_I64LE;
  }
  return H5T_IEEE_F32LE;
}

// Creation properties of a dataset or group; none (H5P_DEFAULT) when `opt` asks for nothing,
// exactly as the writers made their files before this layer existed.
H5Id create_props(hid_t cls, const H5DatasetOptions& opt, int rank, const std::string& where,
                  const std::string& obj) {
  if (opt.track_times && opt.chunk.empty() && !opt.fletcher32) return H5Id();
  H5Id p(H5_CHECK(H5Pcreate(cls), where, obj));
  if (!opt.track_times) H5_CHECK(H5Pset_obj_track_times(p.get(), 0), where, obj);
  if (!opt.chunk.empty()) {
    if (static_cast<int>(opt.chunk.size()) != rank)
      fail(where, ": dataset '", obj, "': chunk rank ", opt.chunk.size(), " for rank ", rank);
    H5_CHECK(H5Pset_chunk(p.get(), rank, opt.chunk.data()), where, obj);
  }
  if (opt.fletcher32) H5_CHECK(H5Pset_fletcher32(p.get()), where, obj);
  return p;
}

H5Id create_dataset(hid_t loc, const std::string& obj, hid_t type, const std::vector<hsize_t>& dims,
                    const std::string& where, const H5DatasetOptions& opt) {
  const int rank = static_cast<int>(dims.size());
  std::vector<hsize_t> maxdims = dims;
  if (opt.unlimited_rows && !maxdims.empty()) maxdims[0] = H5S_UNLIMITED;
  H5Id space(
      H5_CHECK(H5Screate_simple(rank, dims.data(), opt.unlimited_rows ? maxdims.data() : nullptr),
               where, obj));
  H5Id dcpl = create_props(H5P_DATASET_CREATE, opt, rank, where, obj);
  const hid_t dcpl_id = dcpl.valid() ? dcpl.get() : H5P_DEFAULT;
  return H5Id(
      H5_CHECK(H5Dcreate2(loc, obj.c_str(), type, space.get(), H5P_DEFAULT, dcpl_id, H5P_DEFAULT),
               where, obj));
}

size_t count_of(const std::vector<hsize_t>& dims) {
  size_t n = 1;
  for (hsize_t d : dims) n *= static_cast<size_t>(d);
  return n;
}

void write_numbers(hid_t loc, const std::string& obj, hid_t mem_type, const void* data,
                   const std::vector<hsize_t>& dims, const std::string& where,
                   const H5DatasetOptions& opt, H5Type type) {
  H5Id d = create_dataset(loc, obj, file_type(type), dims, where, opt);
  if (count_of(dims) > 0)
    H5_CHECK(H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where, obj);
}
}  // namespace

H5Id h5_create_group(hid_t loc, const std::string& obj, const std::string& where,
                     bool track_times) {
  H5DatasetOptions opt;
  opt.track_times = track_times;
  H5Id gcpl = create_props(H5P_GROUP_CREATE, opt, 0, where, obj);
  const hid_t gcpl_id = gcpl.valid() ? gcpl.get() : H5P_DEFAULT;
  return H5Id(
      H5_CHECK(H5Gcreate2(loc, obj.c_str(), H5P_DEFAULT, gcpl_id, H5P_DEFAULT), where, obj));
}

H5Id h5_create_dataset(hid_t loc, const std::string& obj, H5Type type,
                       const std::vector<hsize_t>& dims, const std::string& where,
                       const H5DatasetOptions& opt) {
  return create_dataset(loc, obj, file_type(type), dims, where, opt);
}

void h5_write_floats(hid_t loc, const std::string& obj, const float* data,
                     const std::vector<hsize_t>& dims, const std::string& where,
                     const H5DatasetOptions& opt, H5Type type) {
  write_numbers(loc, obj, H5T_NATIVE_FLOAT, data, dims, where, opt, type);
}

void h5_write_ints(hid_t loc, const std::string& obj, const int32_t* data,
                   const std::vector<hsize_t>& dims, const std::string& where,
                   const H5DatasetOptions& opt, H5Type type) {
  write_numbers(loc, obj, H5T_NATIVE_INT32, data, dims, where, opt, type);
}

void h5_write_ints(hid_t loc, const std::string& obj, const int64_t* data,
                   const std::vector<hsize_t>& dims, const std::string& where,
                   const H5DatasetOptions& opt, H5Type type) {
  write_numbers(loc, obj, H5T_NATIVE_INT64, data, dims, where, opt, type);
}

void h5_write_float_rows(hid_t dset, hsize_t first, hsize_t rows, const float* data,
                         const std::string& where, const std::string& obj) {
  auto [fspace, mem] = detail::h5_row_spaces(dset, first, rows, where, obj);
  H5_CHECK(H5Dwrite(dset, H5T_NATIVE_FLOAT, mem.get(), fspace.get(), H5P_DEFAULT, data), where,
           obj);
}

void h5_write_strings(hid_t loc, const std::string& obj, const std::vector<std::string>& v,
                      size_t fixed_len, const std::string& where, const H5DatasetOptions& opt) {
  const bool variable = fixed_len == 0;
  H5Id type =
      h5_string_type(variable, fixed_len, variable ? H5T_CSET_UTF8 : H5T_CSET_ASCII, where, obj);
  H5Id d = create_dataset(loc, obj, type.get(), {v.size()}, where, opt);
  if (v.empty()) return;
  if (variable) {
    std::vector<const char*> ptrs;
    for (const std::string& s : v) ptrs.push_back(s.c_str());
    H5_CHECK(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), where, obj);
  } else {
    std::string buf(v.size() * fixed_len, '\0');
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].size() > fixed_len)
        fail(where, ": dataset '", obj, "': string longer than ", fixed_len);
      std::memcpy(&buf[i * fixed_len], v[i].data(), v[i].size());
    }
    H5_CHECK(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), where, obj);
  }
}

namespace {
void write_strings_attr(hid_t obj, const std::string& name, const std::vector<std::string>& v,
                        bool scalar, H5Strings enc, const std::string& where) {
  const hsize_t n = v.size();
  H5Id space(
      H5_CHECK(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr), where, name));
  if (enc == H5Strings::VarUtf8) {
    std::vector<const char*> ptrs;
    for (const auto& s : v) ptrs.push_back(s.c_str());
    H5Id type = h5_string_type(true, 0, H5T_CSET_UTF8, where, name);
    H5Id a(
        H5_CHECK(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                 where, name));
    H5_CHECK(H5Awrite(a.get(), type.get(), ptrs.data()), where, name);
  } else {
    size_t len = 1;
    for (const auto& s : v) len = std::max(len, s.size());
    std::vector<char> buf(len * v.size(), '\0');
    for (size_t i = 0; i < v.size(); ++i)
      std::memcpy(buf.data() + i * len, v[i].data(), v[i].size());
    H5Id type = h5_string_type(false, len, H5T_CSET_ASCII, where, name);
    H5Id a(
        H5_CHECK(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                 where, name));
    H5_CHECK(H5Awrite(a.get(), type.get(), buf.data()), where, name);
  }
}

void write_scalar_attr(hid_t obj, const std::string& name, hid_t ftype, hid_t mtype, const void* v,
                       const std::string& where) {
  H5Id space(H5_CHECK(H5Screate(H5S_SCALAR), where, name));
  H5Id a(H5_CHECK(H5Acreate2(obj, name.c_str(), ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                  where, name));
  H5_CHECK(H5Awrite(a.get(), mtype, v), where, name);
}
}  // namespace

void h5_write_string_attr(hid_t obj, const std::string& name, const std::string& v,
                          const std::string& where, H5Strings enc) {
  write_strings_attr(obj, name, {v}, true, enc, where);
}

void h5_write_string_array_attr(hid_t obj, const std::string& name,
                                const std::vector<std::string>& v, const std::string& where,
                                H5Strings enc) {
  write_strings_attr(obj, name, v, false, enc, where);
}

void h5_write_int_attr(hid_t obj, const std::string& name, int64_t v, const std::string& where) {
  write_scalar_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, where);
}

void h5_write_double_attr(hid_t obj, const std::string& name, double v, const std::string& where) {
  write_scalar_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, where);
}

void h5_delete_attr(hid_t obj, const std::string& name, const std::string& where) {
  H5_CHECK(H5Adelete(obj, name.c_str()), where, name);
}

void h5_delete_link(hid_t loc, const std::string& obj, const std::string& where) {
  H5_CHECK(H5Ldelete(loc, obj.c_str(), H5P_DEFAULT), where, obj);
}

// -------------------------------------------------------------------------------- layout checks
H5StorageInfo h5_dataset_info(hid_t loc, const std::string& obj, const std::string& where) {
  H5Dataset d = h5_open_dataset(loc, obj, where);
  H5StorageInfo info;
  info.dtype = d.dtype;
  info.type_size = d.type_size;
  info.dims = d.dims;
  H5Id type(H5_CHECK(H5Dget_type(d.id.get()), where, obj));
  info.utf8 = H5Tget_class(type.get()) == H5T_STRING && H5Tget_cset(type.get()) == H5T_CSET_UTF8;
  H5Id dcpl(H5_CHECK(H5Dget_create_plist(d.id.get()), where, obj));
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    info.chunk.resize(d.dims.size());
    H5_CHECK(H5Pget_chunk(dcpl.get(), static_cast<int>(info.chunk.size()), info.chunk.data()),
             where, obj);
  }
  const int nf = H5_CHECK(H5Pget_nfilters(dcpl.get()), where, obj);
  for (int i = 0; i < nf; ++i) {
    unsigned flags = 0, cd[8] = {};
    size_t ncd = 8;
    H5Z_filter_t f = H5_CHECK(
        H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &ncd, cd, 0, nullptr, nullptr),
        where, obj);
    info.filters.push_back(f == H5Z_FILTER_FLETCHER32 ? "fletcher32"
                           : f == H5Z_FILTER_DEFLATE  ? "deflate"
                           : f == H5Z_FILTER_SHUFFLE  ? "shuffle"
                                                      : "filter " + std::to_string(f));
  }
  return info;
}

std::pair<std::string, size_t> h5_attr_type(hid_t obj, const std::string& name,
                                            const std::string& where) {
  if (!h5_has_attr(obj, name)) fail(where, ": missing attribute '", name, "'");
  H5Id attr(H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT), where, name));
  H5Id type(H5_CHECK(H5Aget_type(attr.get()), where, name));
  return {h5_dtype_desc(type.get()), H5Tget_size(type.get())};
}

bool h5_has_times(hid_t loc, const std::string& obj, const std::string& where) {
  H5O_info_t info{};
  H5_CHECK(H5Oget_info_by_name2(loc, obj.c_str(), &info, H5O_INFO_TIME, H5P_DEFAULT), where, obj);
  return info.mtime != 0 || info.ctime != 0;
}

}  // namespace engine
