// models/head_cuda.cu: HeadCuda, the classifier head on the GPU (API in models/head.h). One
// cudaMalloc holds everything: the arena (params | grads | ms | mom, HeadLayout offsets, as on the
// CPU), the int64 step counter, the loss and reduction scratch, class weights, the activations
// for `max_batch` rows, the batch (x, labels) and cuBLAS's workspace (so cuBLAS never allocates
// during graph capture). A training step (forward with dropout, softmax-xent, backward, one fused
// RMSProp launch over the whole arena, step increment) runs eagerly the first time at a batch
// size, is then captured into a CUDA graph and replayed; the dropout and RMSProp kernels read the
// step from device memory, so every replay sees the current step. Every copy and memset is issued
// on the head's non-blocking stream (a legacy-stream cudaMemcpy would not be ordered with it).
// Tests: tests/test_head.cpp (Cuda.HeadCudaStepsMatchHeadCpuTeacherForced) and
// tests/test_train.cpp (Train.CudaRunEqualsCpuRun, tools/train --device cuda vs cpu); both skip
// without a GPU (fail under ENGINE_REQUIRE_GPU=1).
#include <algorithm>
#include <cstring>

#include "engine/cuda_check.h"
#include "engine/cuda_resources.h"
#include "kernels/dense_grad.h"
#include "kernels/dropout.h"
#include "kernels/softmax_xent.h"
#include "models/head.h"

namespace engine {

namespace {
constexpr size_t kCublasWorkspace = 32u << 20;  // cuBLAS's recommendation for Hopper
size_t align256(size_t v) { return (v + 255) / 256 * 256; }
}  // namespace

// Owners are declared in dependency order, so the reverse order C++ destroys them in is right by
// construction: the graph exec goes first, then the graph, then the cuBLAS handle (its workspace
// lives in `mem` and it is bound to `stream`), then the stream, and the memory last.
struct HeadCuda::Impl {
  HeadLayout layout;
  int64_t max_batch = 128;
  DeviceBuffer<char> mem;  // the one allocation; every pointer below points into it
  CudaStream stream;
  CublasHandle cublas;
  CudaGraph graph;
  CudaGraphExec exec;  // instantiated from `graph`
  float* arena = nullptr;
  int64_t* step = nullptr;
  float *loss = nullptr, *scratch = nullptr, *class_w = nullptr;
  std::vector<float*> act, drop;
  float *logits = nullptr, *dlogits = nullptr, *gbuf = nullptr, *dbuf = nullptr, *x = nullptr;
  int32_t* y = nullptr;
  void* workspace = nullptr;
  int64_t graph_batch = 0;

  float* P() { return arena; }
  float* G() { return arena + layout.section; }
  float* MS() { return arena + 2 * layout.section; }
  float* MOM() { return arena + 3 * layout.section; }
};

namespace {
void setup(HeadCuda::Impl& m, const HeadConfig& c, int64_t max_batch) {
  m.layout = HeadLayout::of(c);
  m.max_batch = max_batch;
  const int64_t n = max_batch, P = m.layout.section;
  int64_t widest = std::max(c.input, c.classes);
  for (int64_t h : c.hidden) widest = std::max(widest, h);
  // Carve the single allocation: offsets first, then one cudaMalloc.
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t o = off;
    off += align256(bytes);
    return o;
  };
  const size_t o_arena = take(sizeof(float) * 4 * P), o_step = take(sizeof(int64_t)),
               o_loss = take(sizeof(float)), o_scratch = take(sizeof(float) * (2 * n + 2)),
               o_cw = take(sizeof(float) * c.classes);
  std::vector<size_t> o_act, o_drop;
  for (int64_t h : c.hidden) {
    o_act.push_back(take(sizeof(float) * n * h));
    o_drop.push_back(take(sizeof(float) * n * h));
  }
  const size_t o_logits = take(sizeof(float) * n * c.classes),
               o_dlogits = take(sizeof(float) * n * c.classes),
               o_g = take(sizeof(float) * n * widest), o_d = take(sizeof(float) * n * widest),
               o_x = take(sizeof(float) * n * c.input), o_y = take(sizeof(int32_t) * n),
               o_ws = take(kCublasWorkspace);
  m.mem = DeviceBuffer<char>(off, "HeadCuda arena");
  char* base = m.mem.data();
  m.arena = reinterpret_cast<float*>(base + o_arena);
  m.step = reinterpret_cast<int64_t*>(base + o_step);
  m.loss = reinterpret_cast<float*>(base + o_loss);
  m.scratch = reinterpret_cast<float*>(base + o_scratch);
  m.class_w = reinterpret_cast<float*>(base + o_cw);
  for (size_t i = 0; i < o_act.size(); ++i) {
    m.act.push_back(reinterpret_cast<float*>(base + o_act[i]));
    m.drop.push_back(reinterpret_cast<float*>(base + o_drop[i]));
  }
  m.logits = reinterpret_cast<float*>(base + o_logits);
  m.dlogits = reinterpret_cast<float*>(base + o_dlogits);
  m.gbuf = reinterpret_cast<float*>(base + o_g);
  m.dbuf = reinterpret_cast<float*>(base + o_d);
  m.x = reinterpret_cast<float*>(base + o_x);
  m.y = reinterpret_cast<int32_t*>(base + o_y);
  m.workspace = base + o_ws;
  m.stream = CudaStream::create("HeadCuda");
  m.cublas = CublasHandle::create("HeadCuda");
  CUBLAS_CHECK(cublasSetStream(m.cublas, m.stream), "HeadCuda cuBLAS stream");
  CUBLAS_CHECK(cublasSetWorkspace(m.cublas, m.workspace, kCublasWorkspace), "HeadCuda workspace");
  // FP32 math (no TF32): keeps the GPU within float rounding of the CPU twin.
  CUBLAS_CHECK(cublasSetMathMode(m.cublas, CUBLAS_DEFAULT_MATH), "HeadCuda math mode");
  if (!c.class_weights.empty())
    CUDA_CHECK(cudaMemcpyAsync(m.class_w, c.class_weights.data(), sizeof(float) * c.classes,
                               cudaMemcpyHostToDevice, m.stream),
               "HeadCuda class weights");
}

// Uploads a whole training state on the head's stream (grads zeroed) and waits, so the host
// vectors may go when this returns.
void upload_state(HeadCuda::Impl& m, const HeadState& s) {
  const int64_t P = m.layout.section;
  ENGINE_CHECK(static_cast<int64_t>(s.params.size()) == P &&
                   static_cast<int64_t>(s.ms.size()) == P &&
                   static_cast<int64_t>(s.mom.size()) == P,
               "HeadCuda: state sections have ", s.params.size(), "/", s.ms.size(), "/",
               s.mom.size(), " floats, the config needs ", P);
  ENGINE_CHECK(s.step >= 0, "HeadCuda: state step ", s.step, " is negative");
  const size_t bytes = sizeof(float) * static_cast<size_t>(P);
  CUDA_CHECK(cudaMemcpyAsync(m.P(), s.params.data(), bytes, cudaMemcpyHostToDevice, m.stream),
             "HeadCuda params");
  CUDA_CHECK(cudaMemsetAsync(m.G(), 0, bytes, m.stream), "HeadCuda grads");
  CUDA_CHECK(cudaMemcpyAsync(m.MS(), s.ms.data(), bytes, cudaMemcpyHostToDevice, m.stream),
             "HeadCuda ms");
  CUDA_CHECK(cudaMemcpyAsync(m.MOM(), s.mom.data(), bytes, cudaMemcpyHostToDevice, m.stream),
             "HeadCuda mom");
  CUDA_CHECK(cudaMemcpyAsync(m.step, &s.step, sizeof(int64_t), cudaMemcpyHostToDevice, m.stream),
             "HeadCuda step");
  CUDA_CHECK(cudaStreamSynchronize(m.stream), "HeadCuda state upload");
}

// Forward into m.logits (n rows already in m.x); dropout keyed by the device step counter.
void enqueue_forward(HeadCuda::Impl& m, const HeadConfig& c, int64_t n, bool dropout) {
  const bool drop = dropout && c.dropout > 0.f;
  const float* in = m.x;
  for (size_t l = 0; l < m.layout.layers.size(); ++l) {
    const HeadLayer& ly = m.layout.layers[l];
    const bool last = l + 1 == m.layout.layers.size();
    float* out = last ? m.logits : m.act[l];
    sgemm_rowmajor_cuda(m.cublas, false, false, n, ly.out, ly.in, 1.f, in, ly.in,
                        m.P() + ly.kernel_off, ly.out, 0.f, out, ly.out, "HeadCuda forward");
    bias_act_forward_cuda(out, m.P() + ly.bias_off, n, ly.out, !last, m.stream);
    if (!last) {
      if (drop) {
        dropout_forward_cuda(out, m.drop[l], n * ly.out, c.dropout, c.seed, m.step,
                             static_cast<uint32_t>(l + 1), m.stream);
        in = m.drop[l];
      } else {
        in = out;
      }
    }
  }
}

void enqueue_train_step(HeadCuda::Impl& m, const HeadConfig& c, int64_t n) {
  enqueue_forward(m, c, n, true);
  const bool drop = c.dropout > 0.f;
  softmax_xent_cuda(m.logits, m.y, c.class_weights.empty() ? nullptr : m.class_w, n, c.classes,
                    m.dlogits, m.loss, m.scratch, m.stream);
  const float* g = m.dlogits;
  for (size_t li = m.layout.layers.size(); li-- > 0;) {
    const HeadLayer& ly = m.layout.layers[li];
    const float* in = li == 0 ? m.x : (drop ? m.drop[li - 1] : m.act[li - 1]);
    sgemm_rowmajor_cuda(m.cublas, true, false, ly.in, ly.out, n, 1.f, in, ly.in, g, ly.out, 0.f,
                        m.G() + ly.kernel_off, ly.out, "HeadCuda backward dW");
    bias_grad_cuda(g, m.G() + ly.bias_off, n, ly.out, m.stream);
    if (li == 0) break;
    sgemm_rowmajor_cuda(m.cublas, false, true, n, ly.in, ly.out, 1.f, g, ly.out,
                        m.P() + ly.kernel_off, ly.out, 0.f, m.dbuf, ly.in, "HeadCuda backward dx");
    if (drop)
      dropout_backward_cuda(m.dbuf, m.dbuf, n * ly.in, c.dropout, c.seed, m.step,
                            static_cast<uint32_t>(li), m.stream);
    relu_backward_cuda(m.dbuf, m.act[li - 1], m.gbuf, n * ly.in, m.stream);
    g = m.gbuf;
  }
  rmsprop_update_cuda(m.P(), m.G(), m.MS(), m.MOM(), m.layout.section, c.optimizer, m.step,
                      m.stream);
}

// Captures the training step for batch n into m.exec (replacing the graph of another size).
// Called with the stream idle; nothing runs until the graph is launched.
void capture(HeadCuda::Impl& m, const HeadConfig& c, int64_t n) {
  m.exec.reset();
  m.graph.reset();
  m.graph_batch = 0;
  CUDA_CHECK(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal),
             "HeadCuda capture");
  try {
    enqueue_train_step(m, c, n);
  } catch (...) {
    cudaGraph_t broken = nullptr;
    // Ends the capture so the stream is usable again; its status and graph are discarded, the
    // error being reported is the one thrown above.
    cudaStreamEndCapture(m.stream, &broken);
    const CudaGraph discard(broken);
    throw;
  }
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(m.stream, &g), "HeadCuda end capture");
  m.graph = CudaGraph(g);
  cudaGraphExec_t e = nullptr;
  CUDA_CHECK(cudaGraphInstantiate(&e, m.graph, 0), "HeadCuda graph instantiate");
  m.exec = CudaGraphExec(e);
  m.graph_batch = n;
}
}  // namespace

HeadCuda::HeadCuda(const HeadConfig& c, int64_t max_batch)
    : HeadCuda(head_initial_state(c), max_batch) {}

HeadCuda::HeadCuda(const HeadState& s, int64_t max_batch)
    : cfg_(s.config), impl_(std::make_unique<Impl>()) {
  ENGINE_CHECK(max_batch >= 1, "HeadCuda: max_batch must be >= 1, got ", max_batch);
  setup(*impl_, cfg_, max_batch);
  upload_state(*impl_, s);
  step_ = s.step;
}

HeadCuda::~HeadCuda() = default;
HeadCuda::HeadCuda(HeadCuda&&) noexcept = default;
HeadCuda& HeadCuda::operator=(HeadCuda&&) noexcept = default;

float HeadCuda::train_step(const float* x, const int32_t* y, int64_t n) {
  Impl& m = *impl_;
  ENGINE_CHECK(n >= 1 && n <= m.max_batch, "HeadCuda::train_step: batch ", n, " outside [1, ",
               m.max_batch, "] (the max_batch it was made with)");
  for (int64_t i = 0; i < n; ++i)
    ENGINE_CHECK(y[i] >= 0 && y[i] < cfg_.classes, "HeadCuda::train_step: label ", y[i], " of row ",
                 i, " outside [0, ", cfg_.classes, ")");
  // Pageable sources: cudaMemcpyAsync stages them before returning, so x and y may go after.
  CUDA_CHECK(
      cudaMemcpyAsync(m.x, x, sizeof(float) * n * cfg_.input, cudaMemcpyHostToDevice, m.stream),
      "HeadCuda x");
  CUDA_CHECK(cudaMemcpyAsync(m.y, y, sizeof(int32_t) * n, cudaMemcpyHostToDevice, m.stream),
             "HeadCuda y");
  const bool replay = m.graph_batch == n;
  if (replay)
    CUDA_CHECK(cudaGraphLaunch(m.exec, m.stream), "HeadCuda graph launch");
  else
    enqueue_train_step(m, cfg_, n);  // eager: the first step at this batch size
  float loss = 0.f;
  CUDA_CHECK(cudaMemcpyAsync(&loss, m.loss, sizeof loss, cudaMemcpyDeviceToHost, m.stream),
             "HeadCuda loss");
  CUDA_CHECK(cudaStreamSynchronize(m.stream), "HeadCuda train_step");
  ++step_;
  if (!replay) capture(m, cfg_, n);  // the stream is idle: capture records, runs nothing
  return loss;
}

int64_t HeadCuda::max_batch() const { return impl_->max_batch; }

void HeadCuda::set_state(const HeadState& s) {
  ENGINE_CHECK(HeadLayout::of(s.config).section == impl_->layout.section &&
                   s.config.classes == cfg_.classes && s.config.hidden == cfg_.hidden &&
                   s.config.input == cfg_.input,
               "HeadCuda::set_state: the state is of another head shape");
  // The captured graph holds the config's scalars (seed, dropout, optimizer) by value: a state of
  // another config needs a new graph.
  impl_->exec.reset();
  impl_->graph.reset();
  impl_->graph_batch = 0;
  cfg_ = s.config;
  if (!cfg_.class_weights.empty())
    CUDA_CHECK(cudaMemcpyAsync(impl_->class_w, cfg_.class_weights.data(),
                               sizeof(float) * cfg_.classes, cudaMemcpyHostToDevice, impl_->stream),
               "HeadCuda class weights");
  upload_state(*impl_, s);
  step_ = s.step;
}

void HeadCuda::predict(const float* x, int64_t n, float* probs) {
  Impl& m = *impl_;
  ENGINE_CHECK(n >= 0, "HeadCuda::predict: negative row count ", n);
  for (int64_t r0 = 0; r0 < n; r0 += m.max_batch) {
    const int64_t b = std::min(m.max_batch, n - r0);
    CUDA_CHECK(cudaMemcpyAsync(m.x, x + r0 * cfg_.input, sizeof(float) * b * cfg_.input,
                               cudaMemcpyHostToDevice, m.stream),
               "HeadCuda predict x");
    enqueue_forward(m, cfg_, b, false);
    softmax_cuda(m.logits, m.dlogits, b, cfg_.classes, m.stream);
    CUDA_CHECK(cudaMemcpyAsync(probs + r0 * cfg_.classes, m.dlogits,
                               sizeof(float) * b * cfg_.classes, cudaMemcpyDeviceToHost, m.stream),
               "HeadCuda predict probs");
  }
  CUDA_CHECK(cudaStreamSynchronize(m.stream), "HeadCuda predict");
}

void HeadCuda::copy_arena_to(HeadParams& host) const {
  ENGINE_CHECK(host.section_size() == impl_->layout.section,
               "HeadCuda::copy_arena_to: host arena of another config");
  CUDA_CHECK(cudaMemcpyAsync(host.data(), impl_->arena, sizeof(float) * host.total(),
                             cudaMemcpyDeviceToHost, impl_->stream),
             "HeadCuda arena download");
  CUDA_CHECK(cudaStreamSynchronize(impl_->stream), "HeadCuda arena download");
}

void HeadCuda::set_layer(int l, const float* kernel, const float* bias) {
  Impl& m = *impl_;
  const HeadLayer& ly = m.layout.layers.at(static_cast<size_t>(l));
  CUDA_CHECK(cudaMemcpyAsync(m.P() + ly.kernel_off, kernel, sizeof(float) * ly.in * ly.out,
                             cudaMemcpyHostToDevice, m.stream),
             "HeadCuda set_layer kernel");
  CUDA_CHECK(cudaMemcpyAsync(m.P() + ly.bias_off, bias, sizeof(float) * ly.out,
                             cudaMemcpyHostToDevice, m.stream),
             "HeadCuda set_layer bias");
  CUDA_CHECK(cudaStreamSynchronize(m.stream), "HeadCuda set_layer");
}

void HeadCuda::save_state(const std::string& path) const {
  HeadParams host(cfg_);
  copy_arena_to(host);
  head_save_state(path, cfg_, host, step_);
}

}  // namespace engine
