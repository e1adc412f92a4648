// models/bottleneck_backend_cuda.cpp: the GPU backend of models/bottleneck_backend.h, over
// InceptionV3Cuda's double-buffered pinned slots (input_slot/launch/wait/output_slot:
// models/inception_v3_cuda.h). Built only when the build has CUDA (library engine_backends).
//
// Memory: the model sizes its activation arena, cuDNN workspace and pinned slots for max_batch at
// construction, and the first launch of a batch size builds its CUDA graph. Both happen here, for
// the full batch, inside one try: an allocation failure (the GPU or the pinned host memory is too
// small for --batch) halves the batch and tries again, down to 1; the caller gets one note with
// the batch used. At batch 1 the error says how much GPU memory was free.
#include "models/bottleneck_backend_cuda.h"

#include <cstring>

#include "engine/cuda_check.h"
#include "engine/error.h"
#include "models/inception_v3_cuda.h"

namespace engine {

namespace {

// An allocation failure anywhere in construction or the first launch (cudaMalloc, cudaMallocHost,
// cuDNN/cuBLAS workspaces): the only errors a smaller batch can cure.
bool is_out_of_memory(const std::string& what) {
  for (const char* s : {"cudaErrorMemoryAllocation", "out of memory", "CUDNN_STATUS_ALLOC_FAILED",
                        "CUBLAS_STATUS_ALLOC_FAILED"})
    if (what.find(s) != std::string::npos) return true;
  return false;
}

std::string free_memory() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    (void)cudaGetLastError();  // the answer is only for a message: clear it and say so
    return "free GPU memory unknown";
  }
  return std::to_string(free_b >> 20) + " MiB of " + std::to_string(total_b >> 20) +
         " MiB free on the GPU";
}

class BottleneckBackendCuda : public BottleneckBackend {
 public:
  BottleneckBackendCuda(std::unique_ptr<InceptionV3Cuda> m, std::string name)
      : model_(std::move(m)), name_(std::move(name)) {}
  // A slot still in flight (an error path left it) is waited for before the pinned memory it
  // writes into is freed; its error, if any, was or will be reported by the caller's own path.
  ~BottleneckBackendCuda() override {
    for (int s = 0; s < 2; ++s)
      if (busy_[s]) try {
          model_->wait(s);
        } catch (...) {
        }
  }
  int64_t max_batch() const override { return model_->max_batch(); }
  float* input(int slot) override { return model_->input_slot(slot & 1); }
  const float* output(int slot) const override { return model_->output_slot(slot & 1); }
  void launch(int slot, int64_t n) override {
    busy_[slot & 1] = true;
    model_->launch(slot & 1, n);
  }
  void wait(int slot) override {
    busy_[slot & 1] = false;
    model_->wait(slot & 1);
  }
  std::string describe() const override { return name_; }

 private:
  std::unique_ptr<InceptionV3Cuda> model_;
  std::string name_;
  bool busy_[2] = {false, false};
};

}  // namespace

std::unique_ptr<BottleneckBackend> open_cuda_backend(
    const InceptionWeights& w, const std::string& precision, int64_t batch,
    const std::function<void(const std::string&)>& note) {
  const Precision p = parse_precision(precision);
  std::string first_error;
  for (int64_t b = batch;; b /= 2) {
    try {
      auto m = std::make_unique<InceptionV3Cuda>(w, p, b);
      // The full batch once (zeros): plans, workspace and the CUDA graph for this size now, so
      // that a batch that does not fit fails here, not mid-run.
      std::memset(m->input_slot(0), 0,
                  static_cast<size_t>(b) * kInceptionInput * kInceptionInput * 3 * sizeof(float));
      m->launch(0, b);
      m->wait(0);
      if (b != batch && note)
        note("--batch " + std::to_string(batch) + " does not fit in GPU memory (" + first_error +
             "): using --batch " + std::to_string(b));
      return std::make_unique<BottleneckBackendCuda>(
          std::move(m), std::string("cuda ") + precision + " (" + cuda_availability().reason + ")");
    } catch (const Error& e) {
      if (!is_out_of_memory(e.what())) throw;
      // A failed cudaMalloc leaves its error as the last error without poisoning the context:
      // clear it so the next attempt's checks do not report it again.
      (void)cudaGetLastError();
      if (first_error.empty()) first_error = e.what();
      if (b == 1)
        fail("Inception v3 (", precision, ") does not fit in GPU memory even at batch 1 (",
             free_memory(), "; it needs the weights, one image's activations and a cuDNN ",
             "workspace): ", e.what());
    }
  }
}

}  // namespace engine
