// kernels/conv2d_cudnn.cu: Conv2dCudnn, conv + bias + ReLU through cuDNN's backend graph API; see
// the header for the graph, the engine filter per precision and the plan cache. Compile-checked
// only where there is no GPU; tests/test_inception_cuda.cpp runs it on the GPU machine.
#include "kernels/conv2d_cudnn.h"

#include <algorithm>
#include <array>
#include <sstream>

#include "engine/cuda_check.h"
#include "engine/cuda_resources.h"
#include "engine/error.h"

namespace engine {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::TF32: return "tf32";
    case Precision::FP16: return "fp16";
  }
  return "?";
}
const char* layout_name(TensorLayout l) { return l == TensorLayout::NHWC ? "NHWC" : "NCHW"; }
Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::FP32;
  if (s == "tf32") return Precision::TF32;
  if (s == "fp16") return Precision::FP16;
  fail("precision must be fp32, tf32 or fp16, got '", s, "'");
}

// ---- CudnnDescriptor --------------------------------------------------------------------------
CudnnDescriptor::CudnnDescriptor(cudnnBackendDescriptorType_t type, const std::string& ctx) {
  // Local names as the statement text of an error has always shown them ("&d_", "d_").
  cudnnBackendDescriptor_t d_ = nullptr;
  CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_), ctx);
  static_cast<CudaOwner&>(*this) = CudaOwner(d_);
}
void CudnnDescriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                          int64_t count, const void* value, const std::string& ctx) {
  const cudnnBackendDescriptor_t d_ = get();
  CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, count, value), ctx);
}
void CudnnDescriptor::finalize(const std::string& ctx) {
  const cudnnBackendDescriptor_t d_ = get();
  CUDNN_CHECK(cudnnBackendFinalize(d_), ctx);
}

// ---- geometry and filters ---------------------------------------------------------------------
CudnnConvGeometry cudnn_conv_geometry(int64_t h, int64_t w, const Conv2dSpec& spec,
                                      const std::string& name) {
  const PadInfo ph = tf_padding(h, spec.kh, spec.stride, spec.padding);
  const PadInfo pw = tf_padding(w, spec.kw, spec.stride, spec.padding);
  if (ph.before != ph.after || pw.before != pw.after)
    fail(name, ": TF '", padding_name(spec.padding), "' padding for kernel ", spec.kh, "x", spec.kw,
         " stride ", spec.stride, " on ", h, "x", w, " is asymmetric (rows ", ph.before, "+",
         ph.after, ", cols ", pw.before, "+", pw.after,
         "); the cuDNN path takes symmetric padding only (pad the input explicitly first)");
  ENGINE_CHECK(ph.out > 0 && pw.out > 0, name, ": input ", h, "x", w, " too small for kernel ",
               spec.kh, "x", spec.kw);
  return {ph.out, pw.out, ph.before, pw.before};
}

std::vector<float> conv_filter_for_cudnn(const std::vector<float>& w_hwio, int kh, int kw,
                                         int64_t cin, int64_t cout, TensorLayout layout) {
  ENGINE_CHECK(static_cast<int64_t>(w_hwio.size()) == int64_t(kh) * kw * cin * cout,
               "conv_filter_for_cudnn: weight size ", w_hwio.size(), " != ", kh, "*", kw, "*", cin,
               "*", cout);
  std::vector<float> out(w_hwio.size());
  for (int r = 0; r < kh; ++r)
    for (int s = 0; s < kw; ++s)
      for (int64_t c = 0; c < cin; ++c)
        for (int64_t k = 0; k < cout; ++k) {
          const float v = w_hwio[((int64_t(r) * kw + s) * cin + c) * cout + k];
          const int64_t o = layout == TensorLayout::NHWC ? ((k * kh + r) * kw + s) * cin + c
                                                         : ((k * cin + c) * kh + r) * kw + s;
          out[static_cast<size_t>(o)] = v;
        }
  return out;
}

// ---- engine filter ----------------------------------------------------------------------------
bool cudnn_engine_allowed(const std::vector<cudnnBackendNumericalNote_t>& notes, Precision p,
                          bool allow_winograd_fp32) {
  for (cudnnBackendNumericalNote_t n : notes) {
    if (n == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return false;  // graph replay must be bitwise
    // Accumulation below fp32: refused in every precision (fp16 mode accumulates in fp32 too).
    if (n == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) return false;
    if (p == Precision::FP16) continue;
    // fp32 data: converting it to fp16/bf16 inputs loses more than TF32 allows (PyTorch refuses
    // it).
    if (n == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return false;
    if (p == Precision::TF32) continue;
    switch (n) {  // FP32, the exact mode
      case CUDNN_NUMERICAL_NOTE_TENSOR_CORE:
      case CUDNN_NUMERICAL_NOTE_FFT: return false;
      case CUDNN_NUMERICAL_NOTE_WINOGRAD:
      case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_4x4:
      case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_6x6:
      case CUDNN_NUMERICAL_NOTE_WINOGRAD_TILE_13x13:
        if (!allow_winograd_fp32) return false;
        break;
      default: break;
    }
  }
  return true;
}

// ---- graph construction ----------------------------------------------------------------------
namespace {

enum : int64_t { kUidX = 1, kUidW = 2, kUidB = 3, kUidY = 4, kUidConv = 5, kUidAdd = 6 };

// dims = {N, C, H, W}; strides follow the layout (generic: also used for 1xKx1x1 and KxCxRxS).
CudnnDescriptor make_tensor(int64_t uid, cudnnDataType_t dt, std::array<int64_t, 4> dims,
                            TensorLayout layout, bool is_virtual, const std::string& ctx) {
  const int64_t C = dims[1], H = dims[2], W = dims[3];
  std::array<int64_t, 4> strides = layout == TensorLayout::NHWC
                                       ? std::array<int64_t, 4>{H * W * C, 1, W * C, C}
                                       : std::array<int64_t, 4>{C * H * W, H * W, W, 1};
  CudnnDescriptor t(CUDNN_BACKEND_TENSOR_DESCRIPTOR, ctx);
  const int64_t align = 16;
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, ctx);
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), ctx);
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), ctx);
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, ctx);
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, ctx);
  if (is_virtual) {
    const bool v = true;
    t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, ctx);
  }
  t.finalize(ctx);
  return t;
}

CudnnDescriptor make_pointwise(cudnnPointwiseMode_t mode, const std::string& ctx) {
  CudnnDescriptor p(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, ctx);
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  p.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, ctx);
  p.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, ctx);
  p.finalize(ctx);
  return p;
}

CudnnDescriptor make_pointwise_op(const CudnnDescriptor& pw, const CudnnDescriptor& x,
                                  const CudnnDescriptor* b, const CudnnDescriptor& y,
                                  const std::string& ctx) {
  CudnnDescriptor op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, ctx);
  cudnnBackendDescriptor_t d = pw.get();
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, ctx);
  d = x.get();
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, ctx);
  if (b) {
    d = b->get();
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, ctx);
  }
  d = y.get();
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, ctx);
  op.finalize(ctx);
  return op;
}

// Runs one plan; returns the status instead of throwing (timing tries candidates that may fail).
cudnnStatus_t execute_plan(cudnnHandle_t handle, cudnnBackendDescriptor_t plan, const void* x,
                           const void* w, const void* b, void* y, void* ws,
                           const std::string& ctx) {
  CudnnDescriptor vp(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, ctx);
  int64_t uids[4] = {kUidX, kUidW, kUidB, kUidY};
  void* ptrs[4] = {const_cast<void*>(x), const_cast<void*>(w), const_cast<void*>(b), y};
  vp.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 4, uids, ctx);
  vp.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 4, ptrs, ctx);
  vp.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws, ctx);
  vp.finalize(ctx);
  return cudnnBackendExecute(handle, plan, vp.get());
}

}  // namespace

struct Conv2dCudnn::Plan {
  std::vector<CudnnDescriptor> keep;  // tensors, conv, pointwise, ops, graph, winning engine cfg
  CudnnDescriptor plan;
  ConvPlanInfo info;
};

Conv2dCudnn::Conv2dCudnn(std::string name, int64_t cin, int64_t cout, const Conv2dSpec& spec,
                         Precision precision, TensorLayout layout, ConvPlanOptions options)
    : name_(std::move(name)),
      cin_(cin),
      cout_(cout),
      spec_(spec),
      precision_(precision),
      layout_(layout),
      options_(options) {
  ENGINE_CHECK(cin > 0 && cout > 0 && spec.kh > 0 && spec.kw > 0 && spec.stride > 0, name_,
               ": bad conv spec");
  // Every Inception conv is conv+BN+ReLU, so the operation graph always ends in RELU_FWD; a conv
  // without ReLU would need a graph without that node, which nothing here builds.
  ENGINE_CHECK(spec.relu, name_, ": the cuDNN path always fuses ReLU; relu=false is unsupported");
}
Conv2dCudnn::~Conv2dCudnn() = default;
Conv2dCudnn::Conv2dCudnn(Conv2dCudnn&&) noexcept = default;
Conv2dCudnn& Conv2dCudnn::operator=(Conv2dCudnn&&) noexcept = default;

double Conv2dCudnn::flops(int64_t n, int64_t h, int64_t w) const {
  const CudnnConvGeometry g = cudnn_conv_geometry(h, w, spec_, name_);
  return 2.0 * spec_.kh * spec_.kw * double(cin_) * double(cout_) * double(n) * double(g.ho * g.wo);
}

bool Conv2dCudnn::prepared(int64_t n, int64_t h, int64_t w) const {
  return plans_.count({n, h, w}) != 0;
}

const ConvPlanInfo& Conv2dCudnn::info(int64_t n, int64_t h, int64_t w) const {
  auto it = plans_.find({n, h, w});
  ENGINE_CHECK(it != plans_.end(), name_, ": no plan prepared for input (", n, ", ", h, ", ", w,
               ")");
  return it->second->info;
}

const ConvPlanInfo& Conv2dCudnn::prepare(cudnnHandle_t handle, int64_t n, int64_t h, int64_t w,
                                         const void* x, const void* filt, const void* bias, void* y,
                                         int64_t ws_limit) {
  auto key = std::make_tuple(n, h, w);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second->info;
  std::ostringstream cs;
  cs << name_ << " (" << precision_name(precision_) << " " << layout_name(layout_) << ", input "
     << n << "x" << cin_ << "x" << h << "x" << w << ")";
  const std::string ctx = cs.str();
  if (ws_limit < 0) ws_limit = options_.max_workspace;
  cudaStream_t stream = nullptr;
  CUDNN_CHECK(cudnnGetStream(handle, &stream), ctx);
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &cap), ctx);
  ENGINE_CHECK(cap == cudaStreamCaptureStatusNone, ctx,
               ": plans must be prepared before graph capture");

  const CudnnConvGeometry g = cudnn_conv_geometry(h, w, spec_, name_);
  const cudnnDataType_t io = precision_ == Precision::FP16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  auto plan = std::make_unique<Plan>();
  auto& keep = plan->keep;
  keep.push_back(make_tensor(kUidX, io, {n, cin_, h, w}, layout_, false, ctx + " X"));
  keep.push_back(
      make_tensor(kUidW, io, {cout_, cin_, spec_.kh, spec_.kw}, layout_, false, ctx + " W"));
  keep.push_back(make_tensor(kUidB, io, {1, cout_, 1, 1}, layout_, false, ctx + " bias"));
  keep.push_back(make_tensor(kUidY, io, {n, cout_, g.ho, g.wo}, layout_, false, ctx + " Y"));
  keep.push_back(make_tensor(kUidConv, CUDNN_DATA_FLOAT, {n, cout_, g.ho, g.wo}, layout_, true,
                             ctx + " conv out"));
  keep.push_back(make_tensor(kUidAdd, CUDNN_DATA_FLOAT, {n, cout_, g.ho, g.wo}, layout_, true,
                             ctx + " bias out"));
  const CudnnDescriptor &tx = keep[0], &tw = keep[1], &tb = keep[2], &ty = keep[3],
                        &tconv = keep[4], &tadd = keep[5];

  CudnnDescriptor conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, ctx);
  {
    const int64_t dims = 2;
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t pad[2] = {g.pad_h, g.pad_w}, stride[2] = {spec_.stride, spec_.stride},
                  dil[2] = {1, 1};
    conv.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims, ctx);
    conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, ctx);
    conv.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, ctx);
    conv.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad, ctx);
    conv.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad, ctx);
    conv.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride, ctx);
    conv.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil, ctx);
    conv.finalize(ctx + " conv descriptor");
  }
  CudnnDescriptor conv_op(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, ctx);
  {
    const float alpha = 1.f, beta = 0.f;
    cudnnBackendDescriptor_t d = tx.get();
    conv_op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d,
                ctx);
    d = tw.get();
    conv_op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d,
                ctx);
    d = tconv.get();
    conv_op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d,
                ctx);
    d = conv.get();
    conv_op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                1, &d, ctx);
    conv_op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, ctx);
    conv_op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta, ctx);
    conv_op.finalize(ctx + " conv op");
  }
  CudnnDescriptor add_pw = make_pointwise(CUDNN_POINTWISE_ADD, ctx + " add");
  CudnnDescriptor relu_pw = make_pointwise(CUDNN_POINTWISE_RELU_FWD, ctx + " relu");
  CudnnDescriptor add_op = make_pointwise_op(add_pw, tconv, &tb, tadd, ctx + " add op");
  CudnnDescriptor relu_op = make_pointwise_op(relu_pw, tadd, nullptr, ty, ctx + " relu op");
  CudnnDescriptor graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, ctx);
  {
    cudnnBackendDescriptor_t ops[3] = {conv_op.get(), add_op.get(), relu_op.get()};
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 3, ops, ctx);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, ctx);
    graph.finalize(ctx + " operation graph");
  }

  // Candidates: heuristic configs passing the note filter, finalized into plans in heuristic order.
  struct Candidate {
    CudnnDescriptor cfg, plan;
    int64_t engine_index, workspace;
  };
  std::vector<Candidate> cands;
  std::ostringstream refused;
  int passed_filter = 0;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    if (!cands.empty()) break;
    CudnnDescriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, ctx);
    cudnnBackendDescriptor_t gd = graph.get();
    heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gd, ctx);
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, ctx);
    if (cudnnStatus_t s = cudnnBackendFinalize(heur.get()); s != CUDNN_STATUS_SUCCESS) {
      refused << " heuristics mode " << int(mode) << ": " << cudnnGetErrorString(s) << ";";
      continue;
    }
    int64_t count = 0;
    CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
                ctx + " heuristic count");
    std::vector<CudnnDescriptor> cfgs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, ctx);
      raw.push_back(cfgs.back().get());
    }
    int64_t got = 0;
    if (count > 0)
      CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()),
                  ctx + " heuristic results");
    for (int64_t i = 0; i < got; ++i) {
      if (static_cast<int>(cands.size()) >= (options_.time_plans ? options_.max_timed : 1)) break;
      CudnnDescriptor eng(CUDNN_BACKEND_ENGINE_DESCRIPTOR, ctx);
      cudnnBackendDescriptor_t ed = eng.get();
      int64_t ne = 0;
      CUDNN_CHECK(cudnnBackendGetAttribute(cfgs[i].get(), CUDNN_ATTR_ENGINECFG_ENGINE,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ne, &ed),
                  ctx + " engine of config");
      std::vector<cudnnBackendNumericalNote_t> notes(CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
      int64_t nn = 0;
      CUDNN_CHECK(
          cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                   CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn, notes.data()),
          ctx + " numerical notes");
      notes.resize(static_cast<size_t>(nn));
      int64_t index = -1, ni = 0;
      CUDNN_CHECK(cudnnBackendGetAttribute(ed, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                           &ni, &index),
                  ctx + " engine index");
      if (!cudnn_engine_allowed(notes, precision_, options_.allow_winograd_fp32)) continue;
      ++passed_filter;
      CudnnDescriptor p(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, ctx);
      cudnnBackendDescriptor_t cd = cfgs[i].get();
      p.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, ctx);
      p.set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd, ctx);
      if (cudnnStatus_t s = cudnnBackendFinalize(p.get()); s != CUDNN_STATUS_SUCCESS) {
        refused << " engine " << index << ": " << cudnnGetErrorString(s) << ";";
        continue;
      }
      int64_t ws = 0, nw = 0;
      CUDNN_CHECK(cudnnBackendGetAttribute(p.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                           CUDNN_TYPE_INT64, 1, &nw, &ws),
                  ctx + " workspace size");
      if (ws > ws_limit) {
        refused << " engine " << index << ": workspace " << ws << " > limit " << ws_limit << ";";
        continue;
      }
      cands.push_back({std::move(cfgs[i]), std::move(p), index, ws});
    }
  }
  if (cands.empty())
    fail(ctx, ": no usable cuDNN engine (", passed_filter,
         " configs passed the numerical-note filter for ", precision_name(precision_), ");",
         refused.str());

  // Pick: time each candidate once (warm-up + timing_iters runs), or keep heuristic order.
  size_t best = 0;
  float best_ms = -1;
  if (options_.time_plans) {
    // One timing workspace, grown to the largest candidate's need (freed when prepare returns).
    DeviceBuffer<char> scratch;
    const CudaEvent ev_a = CudaEvent::create(ctx + " timing"),
                    ev_b = CudaEvent::create(ctx + " timing");
    for (size_t i = 0; i < cands.size(); ++i) {
      const size_t need = static_cast<size_t>(cands[i].workspace);
      if (need > scratch.size()) {
        scratch.reset();  // free first: the old and the new workspace need not both fit
        scratch = DeviceBuffer<char>(need, ctx + " (timing workspace)");
      }
      void* ws = need > 0 ? scratch.data() : nullptr;
      cudnnStatus_t s = execute_plan(handle, cands[i].plan.get(), x, filt, bias, y, ws, ctx);
      if (s != CUDNN_STATUS_SUCCESS) {
        refused << " engine " << cands[i].engine_index << " run: " << cudnnGetErrorString(s) << ";";
        continue;
      }
      CUDA_CHECK(cudaEventRecord(ev_a, stream), ctx);
      for (int it = 0; it < options_.timing_iters; ++it)
        CUDNN_CHECK(execute_plan(handle, cands[i].plan.get(), x, filt, bias, y, ws, ctx),
                    ctx + " timing");
      CUDA_CHECK(cudaEventRecord(ev_b, stream), ctx);
      CUDA_CHECK(cudaEventSynchronize(ev_b), ctx);
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, ev_a, ev_b), ctx);
      ms /= static_cast<float>(std::max(options_.timing_iters, 1));
      if (best_ms < 0 || ms < best_ms) best = i, best_ms = ms;
    }
    if (best_ms < 0) fail(ctx, ": every candidate plan failed to run;", refused.str());
  }
  plan->info.workspace = cands[best].workspace;
  plan->info.engine_index = cands[best].engine_index;
  plan->info.candidates = passed_filter;
  plan->info.finalized = static_cast<int>(cands.size());
  plan->info.ms = best_ms;
  plan->plan = std::move(cands[best].plan);
  keep.push_back(std::move(conv));
  keep.push_back(std::move(conv_op));
  keep.push_back(std::move(add_pw));
  keep.push_back(std::move(relu_pw));
  keep.push_back(std::move(add_op));
  keep.push_back(std::move(relu_op));
  keep.push_back(std::move(graph));
  keep.push_back(std::move(cands[best].cfg));
  return plans_.emplace(key, std::move(plan)).first->second->info;
}

void Conv2dCudnn::forward(cudnnHandle_t handle, int64_t n, int64_t h, int64_t w, const void* x,
                          const void* filt, const void* bias, void* y, void* workspace,
                          int64_t workspace_bytes) const {
  auto it = plans_.find({n, h, w});
  ENGINE_CHECK(it != plans_.end(), name_, ": forward on input (", n, ", ", h, ", ", w,
               ") without a prepared plan");
  const Plan& p = *it->second;
  ENGINE_CHECK(workspace_bytes >= p.info.workspace, name_, ": workspace ", workspace_bytes,
               " bytes < the plan's ", p.info.workspace);
  CUDNN_CHECK(execute_plan(handle, p.plan.get(), x, filt, bias, y, workspace, name_), name_);
}

}  // namespace engine
