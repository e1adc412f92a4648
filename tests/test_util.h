// tests/test_util.h: shared test helpers: where the PyTorch reference files live, and the
// tensor comparison every test uses: |got - want| <= atol + rtol * |want| element-wise; on
// failure it reports the count of bad elements and the worst element (index, both values).
// Also the one TempDir, slurp and tool runner (run_command / run_tool) of the tool tests, and
// the 8-bit pixel difference (u8_diff) of the decode tests.
#pragma once
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
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
  os << "; " << r.bad << " elements out of tolerance, worst at flat index " << r.worst << ": got "
     << got[r.worst] << ", want " << want[r.worst];
  return ::testing::AssertionFailure() << os.str();
}

// Checks and prints the achieved max abs / rel error (also on success, so the log records the
// margin under each tolerance): EXPECT_CLOSE((got, want, n, atol, rtol, "what")).
#define EXPECT_CLOSE(args)                                                               \
  do {                                                                                   \
    const ::testing::AssertionResult engine_close_ = ::engine::test::tensors_close args; \
    std::printf("  %s\n", engine_close_.message());                                      \
    EXPECT_TRUE(engine_close_);                                                          \
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
#define ENGINE_SKIP_WITHOUT_GPU(availability)                                  \
  do {                                                                         \
    const auto engine_gpu_a_ = (availability);                                 \
    if (engine_gpu_a_.devices == 0) {                                          \
      if (::engine::test::gpu_required())                                      \
        FAIL() << "ENGINE_REQUIRE_GPU=1 but no GPU: " << engine_gpu_a_.reason; \
      GTEST_SKIP() << "no GPU: " << engine_gpu_a_.reason;                      \
    }                                                                          \
  } while (0)

// A uint8 HDF5 dataset (reference images) with its shape; one-line errors naming the dataset.
using U8Array = H5U8Array;
inline U8Array read_u8(hid_t loc, const std::string& obj, const std::string& where) {
  return h5_read_u8_array(loc, obj, where);
}

// |got - want| over two 8-bit pixel buffers of one size (the caller checks the shapes): the
// largest difference in levels, its first flat index, the mean and how many values differ. Empty
// buffers have no mean (NaN, which fails every bound).
struct U8Diff {
  int max = 0;
  int64_t worst = 0, count = 0;
  double mean = 0;
};
inline U8Diff u8_diff(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  U8Diff r;
  double sum = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const int d = std::abs(int(got[i]) - int(want[i]));
    sum += d;
    if (d) ++r.count;
    if (d > r.max) r.max = d, r.worst = int64_t(i);
  }
  r.mean = want.empty() ? std::nan("") : sum / double(want.size());
  return r;
}

// The names of a group's members, in name order; a missing group is an error naming it.
inline std::vector<std::string> group_members(hid_t loc, const std::string& grp) {
  return h5_group_members(loc, grp, "group_members");
}

// Runs `fn` and returns the engine::Error message ("" when nothing was thrown).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A fresh directory under the system's temporary directory, removed with its contents when the
// object goes. `dir / "name"` and `dir.file("name")` are paths inside it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "engine_test") {
    std::string t = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    if (!mkdtemp(t.data())) fail("mkdtemp failed for ", t);
    path_ = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& s) const { return path_ + "/" + s; }
  std::string file(const std::string& name) const { return *this / name; }

 private:
  std::string path_;
};

// A whole file's bytes ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A finished command: its exit code (or -signal) and what it printed.
struct ToolRun {
  int status = -1;
  std::string out, err;
};

// Runs a shell command line (`exec`ed by /bin/sh, stdout and stderr to files in `tmp`). While it
// runs, `signal_when` is polled every 10 ms; the first time it returns true, `sig` is sent (the
// tests' kill -9 at a known stage, SIGTERM mid-run). `env` prefixes the command ("A=b C=d").
inline ToolRun run_command(const std::string& cmdline, const TempDir& tmp,
                           const std::function<bool()>& signal_when = {}, int sig = SIGKILL,
                           const std::string& env = "") {
  const std::string out = tmp / "o.txt", err = tmp / "e.txt";
  const std::string cmd = env + " exec " + cmdline + " > " + out + " 2> " + err;
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  bool sent = false;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    if (signal_when && !sent && signal_when()) {
      kill(pid, sig);
      sent = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), slurp(out), slurp(err)};
}

// A built tool of this tree (build/tools/<name>) with `args`; see run_command.
inline ToolRun run_tool(const std::string& tool, const std::string& args, const TempDir& tmp,
                        const std::function<bool()>& signal_when = {}, int sig = SIGKILL,
                        const std::string& env = "") {
  return run_command(std::string(ENGINE_BINARY_DIR) + "/tools/" + tool + " " + args, tmp,
                     signal_when, sig, env);
}

}  // namespace engine::test
