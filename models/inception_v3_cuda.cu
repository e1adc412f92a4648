// models/inception_v3_cuda.cu: InceptionV3Cuda; see the header for the memory plan, the concat
// strategy and the graph capture. The block builders follow models/inception_v3.cpp line by line
// (branch order = concat order). Compile-checked only where there is no GPU; the tests in
// tests/test_inception_cuda.cpp run it against the PyTorch reference on the GPU machine.
#include "models/inception_v3_cuda.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>

#include "engine/cuda_check.h"
#include "engine/error.h"
#include "kernels/pool2d_cuda.h"

namespace engine {

namespace {

constexpr int64_t kAlign = 256;
int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

enum class OpKind { Input, Conv, MaxPool, AvgPool, Copy, Gap };

struct LTensor {  // a logical activation, per-image shape
  int64_t h, w, c;
  int first = -1, last = -1;  // op indices touching it
  int64_t offset = -1;        // in the arena (tensor 0, the input, has its own buffer)
};

struct Op {
  OpKind kind;
  std::string name;
  int conv = -1;            // 0-based conv index
  int src = -1, dst = -1;   // logical tensors
  int64_t dst_c_off = 0;    // pools and copies write channels [dst_c_off, +src c) of dst
  std::string tap;          // block name when dst is complete after this op
};

struct DeviceBuffer {  // move-only cudaMalloc owner
  void* p = nullptr;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (p) cudaFree(p);
  }
};

struct PinnedBuffer {
  void* p = nullptr;
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (p) cudaFreeHost(p);
  }
};

struct GraphExec {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GraphExec() = default;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

}  // namespace

struct InceptionV3Cuda::Impl {
  Precision precision;
  TensorLayout layout;
  DType dtype;
  int64_t max_batch;
  InceptionCudaOptions opt;
  int64_t in_c = 3;  // input channels as the first conv sees them (padded in FP16)

  std::vector<LTensor> tensors;
  std::vector<Op> ops;
  std::vector<Conv2dCudnn> convs;
  std::vector<void*> wdev, bdev;  // per conv, into `weights`

  int64_t bytes_total = 0, n_allocs = 0, arena_size = 0, ws_size = 0, weights_size = 0;
  DeviceBuffer weights, arena, workspace, x_host_dev, x_dev, bottleneck_dev, tap_buf;
  int64_t tap_buf_bytes = 0;
  PinnedBuffer pinned_in, pinned_out;
  cudaStream_t stream = nullptr;
  cudnnHandle_t handle = nullptr;
  std::map<int64_t, std::unique_ptr<GraphExec>> graphs;

  ~Impl() {
    graphs.clear();
    if (handle) cudnnDestroy(handle);
    if (stream) cudaStreamDestroy(stream);
  }

  void alloc(DeviceBuffer& b, int64_t bytes, const std::string& what) {
    CUDA_CHECK(cudaMalloc(&b.p, static_cast<size_t>(std::max<int64_t>(bytes, kAlign))),
               "InceptionV3Cuda " + what + " (" + std::to_string(bytes) + " bytes)");
    bytes_total += std::max<int64_t>(bytes, kAlign);
    ++n_allocs;
  }

  // ---- program construction (symbolic, per image) ----------------------------------------------
  int add_tensor(int64_t h, int64_t w, int64_t c) {
    tensors.push_back({h, w, c});
    return static_cast<int>(tensors.size()) - 1;
  }
  int conv(int index, int x) {  // index: C# 1..94
    const Conv2dCudnn& cv = convs.at(static_cast<size_t>(index - 1));
    const LTensor& t = tensors.at(static_cast<size_t>(x));
    ENGINE_CHECK(t.c == cv.cin(), cv.name(), ": input has ", t.c, " channels, conv expects ", cv.cin());
    const CudnnConvGeometry g = cudnn_conv_geometry(t.h, t.w, cv.spec(), cv.name());
    const int y = add_tensor(g.ho, g.wo, cv.cout());
    ops.push_back({OpKind::Conv, cv.name(), index - 1, x, y, 0, ""});
    return y;
  }
  // Max pool 3x3 s2 valid into a new tensor, or into channels [c_off, ...) of dst.
  int max_pool(int x, const std::string& name, int dst = -1, int64_t c_off = 0) {
    const LTensor t = tensors.at(static_cast<size_t>(x));
    const PadInfo p = tf_padding(t.h, 3, 2, Padding::Valid);
    if (dst < 0) dst = add_tensor(p.out, p.out, t.c);
    ops.push_back({OpKind::MaxPool, name, -1, x, dst, c_off, ""});
    return dst;
  }
  int avg_pool(int x, const std::string& name) {  // 3x3 s1 same, padding excluded
    const LTensor t = tensors.at(static_cast<size_t>(x));
    const int y = add_tensor(t.h, t.w, t.c);
    ops.push_back({OpKind::AvgPool, name, -1, x, y, 0, ""});
    return y;
  }
  int concat_target(int64_t h, int64_t w, int64_t c) { return add_tensor(h, w, c); }
  // Copies the packed branch output `b` into dst's channels from `off`; returns the next offset.
  int64_t put(int b, int dst, int64_t off, const std::string& name) {
    ops.push_back({OpKind::Copy, name + " concat copy", -1, b, dst, off, ""});
    return off + tensors.at(static_cast<size_t>(b)).c;
  }
  void finish_block(int dst, const std::string& name) {
    ENGINE_CHECK(!ops.empty(), "finish_block");
    ops.back().tap = name;
    (void)dst;
  }

  // mixed0..2: [1x1, 1x1->5x5, 1x1->3x3->3x3, avgpool->1x1]
  int block35(int x, int first, const std::string& name) {
    const int b1 = conv(first, x);
    const int b5 = conv(first + 2, conv(first + 1, x));
    const int b3 = conv(first + 5, conv(first + 4, conv(first + 3, x)));
    const int bp = conv(first + 6, avg_pool(x, name + " avgpool"));
    const LTensor& t = tensors[static_cast<size_t>(x)];
    const int y = concat_target(t.h, t.w, tensors[b1].c + tensors[b5].c + tensors[b3].c + tensors[bp].c);
    int64_t off = 0;
    for (int b : {b1, b5, b3, bp}) off = put(b, y, off, name);
    finish_block(y, name);
    return y;
  }
  // mixed3: [3x3/2, 1x1->3x3->3x3/2, maxpool]
  int block_reduce35(int x, const std::string& name) {
    const int b3 = conv(27, x);
    const int bd = conv(30, conv(29, conv(28, x)));
    const LTensor& o = tensors[static_cast<size_t>(b3)];
    const int y = concat_target(o.h, o.w, o.c + tensors[bd].c + tensors[x].c);
    int64_t off = put(b3, y, 0, name);
    off = put(bd, y, off, name);
    max_pool(x, name + " maxpool", y, off);
    finish_block(y, name);
    return y;
  }
  // mixed4..7: [1x1, 1x1->1x7->7x1, 1x1->7x1->1x7->7x1->1x7, avgpool->1x1]
  int block17(int x, int first, const std::string& name) {
    const int b1 = conv(first, x);
    const int b7 = conv(first + 3, conv(first + 2, conv(first + 1, x)));
    int d = conv(first + 5, conv(first + 4, x));
    d = conv(first + 7, conv(first + 6, d));
    const int bd = conv(first + 8, d);
    const int bp = conv(first + 9, avg_pool(x, name + " avgpool"));
    const LTensor& t = tensors[static_cast<size_t>(x)];
    const int y = concat_target(t.h, t.w, tensors[b1].c + tensors[b7].c + tensors[bd].c + tensors[bp].c);
    int64_t off = 0;
    for (int b : {b1, b7, bd, bp}) off = put(b, y, off, name);
    finish_block(y, name);
    return y;
  }
  // mixed8: [1x1->3x3/2, 1x1->1x7->7x1->3x3/2, maxpool]
  int block_reduce17(int x, const std::string& name) {
    const int b3 = conv(72, conv(71, x));
    const int b7 = conv(76, conv(75, conv(74, conv(73, x))));
    const LTensor& o = tensors[static_cast<size_t>(b3)];
    const int y = concat_target(o.h, o.w, o.c + tensors[b7].c + tensors[x].c);
    int64_t off = put(b3, y, 0, name);
    off = put(b7, y, off, name);
    max_pool(x, name + " maxpool", y, off);
    finish_block(y, name);
    return y;
  }
  // mixed9..10: [1x1, 1x1->[1x3, 3x1], 1x1->3x3->[1x3, 3x1], avgpool->1x1], six pieces.
  int block8(int x, int first, const std::string& name) {
    const int b1 = conv(first, x);
    const int t = conv(first + 1, x);
    const int b3a = conv(first + 2, t), b3b = conv(first + 3, t);
    const int t2 = conv(first + 5, conv(first + 4, x));
    const int bda = conv(first + 6, t2), bdb = conv(first + 7, t2);
    const int bp = conv(first + 8, avg_pool(x, name + " avgpool"));
    const LTensor& s = tensors[static_cast<size_t>(x)];
    int64_t c = 0;
    for (int b : {b1, b3a, b3b, bda, bdb, bp}) c += tensors[b].c;
    const int y = concat_target(s.h, s.w, c);
    int64_t off = 0;
    for (int b : {b1, b3a, b3b, bda, bdb, bp}) off = put(b, y, off, name);
    finish_block(y, name);
    return y;
  }

  void build_program() {
    const int x = add_tensor(kInceptionInput, kInceptionInput, in_c);  // tensor 0: own buffer
    ops.push_back({OpKind::Input, "input upload convert", -1, -1, x, 0, ""});
    int h = conv(3, conv(2, conv(1, x)));
    h = max_pool(h, "stem maxpool1");
    h = conv(5, conv(4, h));
    h = max_pool(h, "stem maxpool2");
    ops.back().tap = "stem";
    h = block35(h, 6, "mixed0");
    h = block35(h, 13, "mixed1");
    h = block35(h, 20, "mixed2");
    h = block_reduce35(h, "mixed3");
    h = block17(h, 31, "mixed4");
    h = block17(h, 41, "mixed5");
    h = block17(h, 51, "mixed6");
    h = block17(h, 61, "mixed7");
    h = block_reduce17(h, "mixed8");
    h = block8(h, 77, "mixed9");
    h = block8(h, 86, "mixed10");
    ENGINE_CHECK(tensors[h].c == kBottleneckSize, "InceptionV3Cuda: last block has ", tensors[h].c,
                 " channels");
    ops.push_back({OpKind::Gap, "global avgpool", -1, h, -1, 0, ""});
  }

  int64_t tensor_bytes(const LTensor& t, int64_t n) const {
    return n * t.h * t.w * t.c * static_cast<int64_t>(dtype_bytes(dtype));
  }

  // Lifetimes from op indices, then first-fit placement by decreasing size.
  void plan_arena() {
    for (size_t i = 0; i < ops.size(); ++i)
      for (int id : {ops[i].src, ops[i].dst}) {
        if (id < 0) continue;
        LTensor& t = tensors[static_cast<size_t>(id)];
        if (t.first < 0) t.first = static_cast<int>(i);
        t.last = static_cast<int>(i);
      }
    std::vector<int> order;
    for (size_t i = 1; i < tensors.size(); ++i) order.push_back(static_cast<int>(i));
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return tensor_bytes(tensors[a], 1) > tensor_bytes(tensors[b], 1);
    });
    std::vector<int> placed;
    arena_size = 0;
    for (int id : order) {
      LTensor& t = tensors[static_cast<size_t>(id)];
      const int64_t size = align_up(tensor_bytes(t, max_batch));
      std::vector<std::pair<int64_t, int64_t>> busy;  // [begin, end) of overlapping lifetimes
      for (int p : placed) {
        const LTensor& o = tensors[static_cast<size_t>(p)];
        if (o.first <= t.last && t.first <= o.last)
          busy.push_back({o.offset, o.offset + align_up(tensor_bytes(o, max_batch))});
      }
      std::sort(busy.begin(), busy.end());
      int64_t off = 0;
      for (auto& b : busy) {
        if (off + size <= b.first) break;
        off = std::max(off, b.second);
      }
      t.offset = off;
      arena_size = std::max(arena_size, off + size);
      placed.push_back(id);
    }
  }

  void* ptr(int id) const {
    if (id == 0) return x_dev.p;
    return static_cast<char*>(arena.p) + tensors[static_cast<size_t>(id)].offset;
  }
  StridedView view(int id, int64_t n) const {
    const LTensor& t = tensors[static_cast<size_t>(id)];
    return packed_view(ptr(id), dtype, layout, n, t.h, t.w, t.c);
  }
  StridedView slice(int id, int64_t n, int64_t off, int64_t c) const {
    const LTensor& t = tensors[static_cast<size_t>(id)];
    return channel_slice(ptr(id), dtype, layout, n, t.h, t.w, t.c, off, c);
  }

  void prepare_plans(int64_t n, int64_t ws_limit) {
    for (const Op& op : ops) {
      if (op.kind != OpKind::Conv) continue;
      const LTensor& t = tensors[static_cast<size_t>(op.src)];
      convs[static_cast<size_t>(op.conv)].prepare(handle, n, t.h, t.w, ptr(op.src),
                                                   wdev[static_cast<size_t>(op.conv)],
                                                   bdev[static_cast<size_t>(op.conv)], ptr(op.dst),
                                                   ws_limit);
    }
  }

  void run_op(const Op& op, int64_t n) {
    switch (op.kind) {
      case OpKind::Input:
        copy_strided_cuda(packed_view(x_host_dev.p, DType::F32, TensorLayout::NHWC, n,
                                      kInceptionInput, kInceptionInput, 3),
                          slice(0, n, 0, 3), stream, op.name);
        break;
      case OpKind::Conv: {
        const LTensor& t = tensors[static_cast<size_t>(op.src)];
        convs[static_cast<size_t>(op.conv)].forward(handle, n, t.h, t.w, ptr(op.src),
                                                    wdev[static_cast<size_t>(op.conv)],
                                                    bdev[static_cast<size_t>(op.conv)], ptr(op.dst),
                                                    workspace.p, ws_size);
        break;
      }
      case OpKind::MaxPool: {
        const StridedView x = view(op.src, n);
        max_pool2d_cuda(x, slice(op.dst, n, op.dst_c_off, x.c), 3, 2, Padding::Valid, stream, op.name);
        break;
      }
      case OpKind::AvgPool:
        avg_pool2d_cuda(view(op.src, n), view(op.dst, n), 3, 1, Padding::Same, stream, op.name);
        break;
      case OpKind::Copy: {
        const StridedView x = view(op.src, n);
        copy_strided_cuda(x, slice(op.dst, n, op.dst_c_off, x.c), stream, op.name);
        break;
      }
      case OpKind::Gap:
        global_avg_pool_cuda(view(op.src, n), static_cast<float*>(bottleneck_dev.p), stream, op.name);
        break;
    }
  }

  void check_batch(int64_t n, const char* fn) const {
    ENGINE_CHECK(n >= 1 && n <= max_batch, "InceptionV3Cuda::", fn, ": batch ", n,
                 " outside [1, max_batch=", max_batch, "]");
  }
  void ensure_plans(int64_t n) {
    if (n != max_batch) prepare_plans(n, ws_size);  // cached after the first call per n
  }
  void upload(const float* host_x, int64_t n) {  // pinned staging, then async copy on the stream
    const size_t bytes = sizeof(float) * static_cast<size_t>(n * kInceptionInput * kInceptionInput * 3);
    std::memcpy(pinned_in.p, host_x, bytes);
    CUDA_CHECK(cudaMemcpyAsync(x_host_dev.p, pinned_in.p, bytes, cudaMemcpyHostToDevice, stream),
               "InceptionV3Cuda input upload");
  }
  void download_async(int64_t n) {
    CUDA_CHECK(cudaMemcpyAsync(pinned_out.p, bottleneck_dev.p, sizeof(float) * n * kBottleneckSize,
                               cudaMemcpyDeviceToHost, stream),
               "InceptionV3Cuda bottleneck download");
  }
  void finish(int64_t n, float* host_bottleneck) {
    CUDA_CHECK(cudaStreamSynchronize(stream), "InceptionV3Cuda forward");
    std::memcpy(host_bottleneck, pinned_out.p, sizeof(float) * n * kBottleneckSize);
  }
};

InceptionV3Cuda::InceptionV3Cuda(const InceptionWeights& w, Precision precision, int64_t max_batch,
                                 InceptionCudaOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  ENGINE_CHECK(max_batch >= 1, "InceptionV3Cuda: max_batch must be >= 1, got ", max_batch);
  const auto& defs = inception_v3_conv_defs();
  ENGINE_CHECK(w.convs.size() == defs.size(), "InceptionV3Cuda: expected ", defs.size(),
               " convs, got ", w.convs.size());
  m.precision = precision;
  m.layout = (precision == Precision::FP32 && options.fp32_nchw) ? TensorLayout::NCHW : TensorLayout::NHWC;
  m.dtype = dtype_of(precision);
  m.max_batch = max_batch;
  m.opt = options;
  m.in_c = precision == Precision::FP16 ? std::max(3, options.fp16_input_channels) : 3;
  CUDA_CHECK(cudaSetDevice(options.device), "InceptionV3Cuda: select GPU " + std::to_string(options.device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "InceptionV3Cuda stream");
  CUDNN_CHECK(cudnnCreate(&m.handle), "InceptionV3Cuda cuDNN handle");
  CUDNN_CHECK(cudnnSetStream(m.handle, m.stream), "InceptionV3Cuda cuDNN stream");

  // Convs (C1 sees the padded input channels), then the program and the arena plan.
  for (const ConvDef& d : defs) {
    Conv2dSpec spec;
    spec.kh = d.kh, spec.kw = d.kw, spec.stride = d.stride, spec.padding = d.padding, spec.relu = true;
    m.convs.emplace_back("conv C" + std::to_string(d.index), d.index == 1 ? m.in_c : d.cin, d.cout,
                         spec, precision, m.layout, options.plan);
  }
  m.build_program();
  m.plan_arena();

  // Weights: one buffer, filters reordered for the layout, converted to fp16 in FP16 mode.
  const size_t eb = dtype_bytes(m.dtype);
  std::vector<int64_t> w_off, b_off;
  int64_t total = 0;
  for (const ConvDef& d : defs) {
    const int64_t cin = d.index == 1 ? m.in_c : d.cin;
    w_off.push_back(total);
    total = align_up(total + int64_t(d.kh) * d.kw * cin * d.cout * int64_t(eb));
    b_off.push_back(total);
    total = align_up(total + d.cout * int64_t(eb));
  }
  m.weights_size = total;

  // Fail with one line (not a crash) when the GPU lacks memory for the steady state.
  const int64_t img = kInceptionInput * kInceptionInput;
  const int64_t need = total + m.arena_size + max_batch * img * 3 * 4 +
                       max_batch * img * m.in_c * int64_t(eb) + max_batch * kBottleneckSize * 4;
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b), "InceptionV3Cuda memory query");
  if (static_cast<int64_t>(free_b) < need)
    fail("InceptionV3Cuda: batch ", max_batch, " ", precision_name(precision), " needs ",
         need >> 20, " MiB of GPU memory before workspace, only ", free_b >> 20, " MiB free of ",
         total_b >> 20, " MiB; use a smaller batch");

  m.alloc(m.weights, total, "weights");
  std::vector<char> host(static_cast<size_t>(total), 0);
  for (size_t i = 0; i < defs.size(); ++i) {
    const ConvDef& d = defs[i];
    const FoldedConv& fc = w.convs[i];
    const int64_t cin = d.index == 1 ? m.in_c : d.cin;
    std::vector<float> hwio = fc.w_hwio;
    if (cin != d.cin) {  // zero filter channels for the padded input channels
      hwio.assign(static_cast<size_t>(int64_t(d.kh) * d.kw * cin * d.cout), 0.f);
      for (int64_t r = 0; r < int64_t(d.kh) * d.kw; ++r)
        for (int64_t c = 0; c < d.cin; ++c)
          for (int64_t k = 0; k < d.cout; ++k)
            hwio[static_cast<size_t>((r * cin + c) * d.cout + k)] =
                fc.w_hwio[static_cast<size_t>((r * d.cin + c) * d.cout + k)];
    }
    const std::vector<float> f = conv_filter_for_cudnn(hwio, d.kh, d.kw, cin, d.cout, m.layout);
    ENGINE_CHECK(static_cast<int64_t>(fc.bias.size()) == d.cout, "conv C", d.index, ": bias size");
    char* wp = host.data() + w_off[i];
    char* bp = host.data() + b_off[i];
    if (m.dtype == DType::F16) {
      __half* hw = reinterpret_cast<__half*>(wp);
      for (size_t j = 0; j < f.size(); ++j) hw[j] = __float2half_rn(f[j]);
      __half* hb = reinterpret_cast<__half*>(bp);
      for (size_t j = 0; j < fc.bias.size(); ++j) hb[j] = __float2half_rn(fc.bias[j]);
    } else {
      std::memcpy(wp, f.data(), f.size() * sizeof(float));
      std::memcpy(bp, fc.bias.data(), fc.bias.size() * sizeof(float));
    }
    m.wdev.push_back(static_cast<char*>(m.weights.p) + w_off[i]);
    m.bdev.push_back(static_cast<char*>(m.weights.p) + b_off[i]);
  }
  CUDA_CHECK(cudaMemcpy(m.weights.p, host.data(), static_cast<size_t>(total), cudaMemcpyHostToDevice),
             "InceptionV3Cuda weight upload");

  m.alloc(m.arena, m.arena_size, "activation arena");
  m.alloc(m.x_host_dev, max_batch * img * 3 * 4, "input (fp32 NHWC)");
  m.alloc(m.x_dev, max_batch * img * m.in_c * int64_t(eb), "input (network layout)");
  m.alloc(m.bottleneck_dev, max_batch * kBottleneckSize * 4, "bottleneck");
  // Zeroed once: padded input channels stay zero; timing runs read defined values.
  CUDA_CHECK(cudaMemset(m.arena.p, 0, static_cast<size_t>(m.arena_size)), "arena clear");
  CUDA_CHECK(cudaMemset(m.x_dev.p, 0, static_cast<size_t>(max_batch * img * m.in_c * int64_t(eb))), "input clear");
  CUDA_CHECK(cudaMallocHost(&m.pinned_in.p, sizeof(float) * static_cast<size_t>(max_batch * img * 3)),
             "InceptionV3Cuda pinned input");
  CUDA_CHECK(cudaMallocHost(&m.pinned_out.p, sizeof(float) * static_cast<size_t>(max_batch * kBottleneckSize)),
             "InceptionV3Cuda pinned output");

  // Plans for max_batch choose freely (up to options.plan.max_workspace); one workspace for all.
  m.prepare_plans(max_batch, -1);
  for (const Op& op : m.ops)
    if (op.kind == OpKind::Conv) {
      const LTensor& t = m.tensors[static_cast<size_t>(op.src)];
      m.ws_size = std::max(m.ws_size, m.convs[static_cast<size_t>(op.conv)].info(max_batch, t.h, t.w).workspace);
    }
  m.alloc(m.workspace, m.ws_size, "cuDNN workspace");
  CUDA_CHECK(cudaStreamSynchronize(m.stream), "InceptionV3Cuda setup");
}

InceptionV3Cuda::~InceptionV3Cuda() = default;

void InceptionV3Cuda::forward(const float* host_x, int64_t n, float* host_bottleneck) {
  Impl& m = *impl_;
  m.check_batch(n, "forward");
  m.upload(host_x, n);
  launch_graph(n);
  m.download_async(n);
  m.finish(n, host_bottleneck);
}

void InceptionV3Cuda::forward_resident(int64_t n) {
  impl_->check_batch(n, "forward_resident");
  launch_graph(n);
  CUDA_CHECK(cudaStreamSynchronize(impl_->stream), "InceptionV3Cuda forward_resident");
}

// The graph holds the ops only (input convert .. global average pool); the upload from pinned
// memory and the bottleneck download are async copies on the same stream around it.
void InceptionV3Cuda::launch_graph(int64_t n) {
  Impl& m = *impl_;
  auto it = m.graphs.find(n);
  if (it == m.graphs.end()) {
    m.ensure_plans(n);
    auto g = std::make_unique<GraphExec>();
    CUDA_CHECK(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal), "InceptionV3Cuda graph capture");
    try {
      for (const Op& op : m.ops) m.run_op(op, n);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(m.stream, &broken);
      if (broken) cudaGraphDestroy(broken);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(m.stream, &g->graph), "InceptionV3Cuda graph capture end");
    CUDA_CHECK(cudaGraphInstantiate(&g->exec, g->graph, 0), "InceptionV3Cuda graph instantiate");
    it = m.graphs.emplace(n, std::move(g)).first;
  }
  CUDA_CHECK(cudaGraphLaunch(it->second->exec, m.stream), "InceptionV3Cuda graph launch, batch " + std::to_string(n));
}

void InceptionV3Cuda::forward_eager(const float* host_x, int64_t n, float* host_bottleneck) {
  forward_blocks(host_x, n, host_bottleneck, Tap());
}

void InceptionV3Cuda::forward_blocks(const float* host_x, int64_t n, float* host_bottleneck,
                                     const Tap& tap) {
  Impl& m = *impl_;
  m.check_batch(n, "forward_blocks");
  m.ensure_plans(n);
  m.upload(host_x, n);
  for (const Op& op : m.ops) {
    m.run_op(op, n);
    if (!tap || op.tap.empty()) continue;
    const LTensor& t = m.tensors[static_cast<size_t>(op.dst)];
    const int64_t bytes = n * t.h * t.w * t.c * 4;
    if (bytes > m.tap_buf_bytes) {  // grows to the largest block once (mixed2 at this n)
      if (m.tap_buf.p) {
        CUDA_CHECK(cudaFree(m.tap_buf.p), "tap buffer");
        m.bytes_total -= m.tap_buf_bytes;
        m.tap_buf.p = nullptr;
      }
      m.alloc(m.tap_buf, bytes, "tap buffer");
      m.tap_buf_bytes = bytes;
    }
    copy_strided_cuda(m.view(op.dst, n),
                      packed_view(m.tap_buf.p, DType::F32, TensorLayout::NHWC, n, t.h, t.w, t.c),
                      m.stream, op.tap + " tap");
    Tensor host(Shape{n, t.h, t.w, t.c});
    CUDA_CHECK(cudaMemcpyAsync(host.data(), m.tap_buf.p, static_cast<size_t>(bytes),
                               cudaMemcpyDeviceToHost, m.stream), op.tap + " tap download");
    CUDA_CHECK(cudaStreamSynchronize(m.stream), op.tap + " tap");
    tap(op.tap, host);
  }
  m.download_async(n);
  m.finish(n, host_bottleneck);
}

std::vector<InceptionV3Cuda::LayerTime> InceptionV3Cuda::profile_layers(int64_t n, int iters) {
  Impl& m = *impl_;
  m.check_batch(n, "profile_layers");
  m.ensure_plans(n);
  std::vector<cudaEvent_t> ev(m.ops.size() + 1);
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e), "profile events");
  std::vector<LayerTime> out(m.ops.size());
  try {
    for (int it = 0; it < iters + 1; ++it) {  // iteration 0 is a warm-up
      CUDA_CHECK(cudaEventRecord(ev[0], m.stream), "profile");
      for (size_t i = 0; i < m.ops.size(); ++i) {
        m.run_op(m.ops[i], n);
        CUDA_CHECK(cudaEventRecord(ev[i + 1], m.stream), "profile");
      }
      CUDA_CHECK(cudaStreamSynchronize(m.stream), "profile");
      if (it == 0) continue;
      for (size_t i = 0; i < m.ops.size(); ++i) {
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]), "profile");
        out[i].ms += ms / iters;
      }
    }
  } catch (...) {
    for (auto& e : ev) cudaEventDestroy(e);
    throw;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    out[i].name = op.name;
    if (op.kind == OpKind::Conv) {
      const Conv2dCudnn& c = m.convs[static_cast<size_t>(op.conv)];
      const LTensor& t = m.tensors[static_cast<size_t>(op.src)];
      std::ostringstream os;
      os << c.name() << " " << c.spec().kh << "x" << c.spec().kw << "/" << c.spec().stride << " "
         << t.h << "x" << t.w << "x" << t.c << "->" << c.cout();
      out[i].name = os.str();
      out[i].flops = c.flops(n, t.h, t.w);
      out[i].engine = c.info(n, t.h, t.w).engine_index;
    }
  }
  return out;
}

Precision InceptionV3Cuda::precision() const { return impl_->precision; }
TensorLayout InceptionV3Cuda::layout() const { return impl_->layout; }
int64_t InceptionV3Cuda::max_batch() const { return impl_->max_batch; }
int64_t InceptionV3Cuda::peak_device_bytes() const { return impl_->bytes_total; }
int64_t InceptionV3Cuda::activation_bytes() const { return impl_->arena_size; }
int64_t InceptionV3Cuda::workspace_bytes() const { return impl_->ws_size; }
int64_t InceptionV3Cuda::weight_bytes() const { return impl_->weights_size; }
int64_t InceptionV3Cuda::allocations() const { return impl_->n_allocs; }
double InceptionV3Cuda::flops_per_image() const { return inception_v3_flops_per_image(); }

std::string InceptionV3Cuda::plan_summary(int64_t n) const {
  const Impl& m = *impl_;
  std::ostringstream os;
  for (const Op& op : m.ops) {
    if (op.kind != OpKind::Conv) continue;
    const Conv2dCudnn& c = m.convs[static_cast<size_t>(op.conv)];
    const LTensor& t = m.tensors[static_cast<size_t>(op.src)];
    if (!c.prepared(n, t.h, t.w)) continue;
    const ConvPlanInfo& i = c.info(n, t.h, t.w);
    os << c.name() << ": engine " << i.engine_index << ", workspace " << i.workspace << " B, "
       << i.finalized << "/" << i.candidates << " plans finalized/allowed, " << i.ms << " ms\n";
  }
  return os.str();
}

}  // namespace engine
