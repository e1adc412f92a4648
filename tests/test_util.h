// tests/test_util.h: shared test helpers: where the PyTorch reference files live, and the
// tensor comparison every test uses: |got - want| <= atol + rtol * |want| element-wise; on
// failure it reports the count of bad elements and the worst element (index, both values).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/tensor.h"

namespace engine::test {

// Directory written by tests/reference/make_reference.py (the CTest fixture sets the variable).
inline std::string reference_dir() {
  const char* d = std::getenv("ENGINE_REFERENCE_DIR");
  return d ? d : ENGINE_DEFAULT_REFERENCE_DIR;
}
inline std::string reference_file(const std::string& name) { return reference_dir() + "/" + name; }

struct CompareResult {
  int64_t bad = 0, worst = -1;
  double worst_excess = 0, max_abs = 0, max_rel = 0;
};

// Element-wise check; returns a gtest assertion that prints the worst element on failure.
inline ::testing::AssertionResult tensors_close(const float* got, const float* want, int64_t n,
                                                double atol, double rtol,
                                                const std::string& what = "") {
  CompareResult r;
  for (int64_t i = 0; i < n; ++i) {
    double g = got[i], w = want[i];
    double diff = std::fabs(g - w);
    double lim = atol + rtol * std::fabs(w);
    if (!(diff <= lim)) {  // NaN counts as bad
      ++r.bad;
      double excess = std::isnan(diff) ? INFINITY : diff - lim;
      if (r.worst < 0 || excess > r.worst_excess) r.worst = i, r.worst_excess = excess;
    }
    if (diff > r.max_abs) r.max_abs = diff;
    if (std::fabs(w) > 1e-3 && diff / std::fabs(w) > r.max_rel) r.max_rel = diff / std::fabs(w);
  }
  std::ostringstream os;
  os << what << ": " << n << " elements, max |diff| " << r.max_abs << ", max rel (|want|>1e-3) "
     << r.max_rel << " (atol " << atol << ", rtol " << rtol << ")";
  if (r.bad == 0) return ::testing::AssertionSuccess() << os.str();
  os << "; " << r.bad << " elements out of tolerance, worst at flat index " << r.worst
     << ": got " << got[r.worst] << ", want " << want[r.worst];
  return ::testing::AssertionFailure() << os.str();
}

// Checks and prints the achieved max abs / rel error (also on success, so the log records the
// margin under each tolerance): EXPECT_CLOSE((got, want, n, atol, rtol, "what")).
#define EXPECT_CLOSE(args)                                                    \
  do {                                                                        \
    const ::testing::AssertionResult engine_close_ = ::engine::test::tensors_close args; \
    std::printf("  %s\n", engine_close_.message());                          \
    EXPECT_TRUE(engine_close_);                                               \
  } while (0)

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::fmax(m, std::fabs(t.data()[i]));
  return m;
}

inline ::testing::AssertionResult tensors_close(const Tensor& got, const Tensor& want, double atol,
                                                double rtol, const std::string& what = "") {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure()
           << what << ": shape " << got.shape().str() << " vs reference " << want.shape().str();
  return tensors_close(got.data(), want.data(), got.numel(), atol, rtol, what);
}

// GPU tests: without a device they skip with the reason, unless ENGINE_REQUIRE_GPU=1 (set on the
// GPU machine), where a missing device is a failure. Use inside a TEST body (it may return).
inline bool gpu_required() {
  const char* r = std::getenv("ENGINE_REQUIRE_GPU");
  return r && std::string(r) == "1";
}
#define ENGINE_SKIP_WITHOUT_GPU(availability)                                              \
  do {                                                                                     \
    const auto engine_gpu_a_ = (availability);                                             \
    if (engine_gpu_a_.devices == 0) {                                                      \
      if (::engine::test::gpu_required())                                                  \
        FAIL() << "ENGINE_REQUIRE_GPU=1 but no GPU: " << engine_gpu_a_.reason;             \
      GTEST_SKIP() << "no GPU: " << engine_gpu_a_.reason;                                  \
    }                                                                                      \
  } while (0)

// A uint8 HDF5 dataset (reference images) with its shape; one-line errors naming the dataset.
struct U8Array {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

inline U8Array read_u8(hid_t loc, const std::string& obj, const std::string& where) {
  if (!h5_exists(loc, obj)) fail(where, ": missing dataset ", obj);
  H5Id ds(H5Dopen2(loc, obj.c_str(), H5P_DEFAULT));
  H5Id type(H5Dget_type(ds.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1)
    fail(where, ": ", obj, ": expected uint8");
  H5Id space(H5Dget_space(ds.get()));
  int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> d(size_t(std::max(rank, 0)));
  H5Sget_simple_extent_dims(space.get(), d.data(), nullptr);
  U8Array a;
  size_t n = 1;
  for (hsize_t v : d) a.dims.push_back(int64_t(v)), n *= size_t(v);
  a.data.resize(n);
  if (H5Dread(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data.data()) < 0)
    fail(where, ": ", obj, ": H5Dread failed");
  return a;
}

// The names of a group's members, in name order; a missing group is an error naming it.
inline std::vector<std::string> group_members(hid_t loc, const std::string& grp) {
  H5Id g(H5Gopen2(loc, grp.c_str(), H5P_DEFAULT));
  if (!g.valid()) fail("missing group ", grp);
  H5G_info_t info;
  H5Gget_info(g.get(), &info);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    char buf[512];
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buf, sizeof buf, H5P_DEFAULT);
    names.push_back(buf);
  }
  return names;
}

}  // namespace engine::test
