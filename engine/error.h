// engine/error.h: the one error type of the engine and the check macros that raise it.
// Every failure becomes an engine::Error whose message is one line: what failed, where
// (file:line of the check) and the context the caller gave (file name, dataset, layer). Tools
// catch it in main() and print it; tests catch it with EXPECT_THROW. HDF5 checks live in
// engine/hdf5_io.h, CUDA/cuDNN/cuBLAS checks in engine/cuda_check.h.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace engine {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Builds a message from any streamable pieces: fail("file ", path, ": bad rank ", r).
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}

}  // namespace engine

// ENGINE_CHECK(cond, pieces...): throw engine::Error naming the condition and the pieces.
#define ENGINE_CHECK(cond, ...)                                                             \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::engine::fail(__VA_ARGS__, " [check '" #cond "' at ", __FILE__, ":", __LINE__, "]"); \
  } while (0)
