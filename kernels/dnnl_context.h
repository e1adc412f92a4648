// kernels/dnnl_context.h: what every oneDNN caller shares (kernels/conv2d_cpu.cpp,
// models/inception_v3_lowp.cpp): one CPU engine for the process, one stream per calling thread
// (the models run one image per thread, each executing single-threaded primitives), and the
// wrapper that turns a dnnl::error into an engine::Error naming the layer and the call.
// Defined in kernels/conv2d_cpu.cpp.
#pragma once
#include <oneapi/dnnl/dnnl_debug.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <string>

#include "engine/error.h"

namespace engine {

dnnl::engine& dnnl_cpu_engine();
dnnl::stream& dnnl_thread_stream();

// Runs f(); a dnnl::error becomes "<kind> '<layer>': oneDNN <what> failed: <status> (<text>)".
template <typename F>
auto dnnl_checked(const char* kind, const std::string& layer, const char* what, F&& f)
    -> decltype(f()) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    fail(kind, " '", layer, "': oneDNN ", what, " failed: ", dnnl_status2str(e.status), " (",
         e.what(), ")");
  }
}

}  // namespace engine
