// models/inception_v3_cuda.cu: InceptionV3Cuda; see the header for the memory plan, the concat
// strategy and the graph capture. The op list is lowered from inception_v3_graph()
// (models/inception_graph.h), the graph the CPU executor walks too, so branch and concat order are
// the same by construction. Compile-checked only where there is no GPU; the tests in
// tests/test_inception_cuda.cpp run it against the PyTorch reference on the GPU machine.
#include "models/inception_v3_cuda.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <utility>

#include "engine/cuda_check.h"
#include "engine/cuda_resources.h"
#include "engine/error.h"
#include "kernels/pool2d_cuda.h"
#include "models/inception_graph.h"

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
  int conv = -1;           // 0-based conv index (the graph op's weight)
  int src = -1, dst = -1;  // logical tensors
  int64_t dst_c_off = 0;   // pools and copies write channels [dst_c_off, +src c) of dst
  std::string tap;         // block name when dst is complete after this op
  int k = 0, stride = 1;   // pools: window and stride
  Padding padding = Padding::Valid;
};

struct GraphInstance {  // one captured forward per batch size; exec declared last, freed first
  CudaGraph graph;
  CudaGraphExec exec;
};

// One of the two pinned host slots of launch()/wait(): its buffers and the event recorded after
// its bottleneck download.
struct Slot {
  PinnedBuffer<float> in, out;
  CudaEvent done;
  int64_t n = 0;
  bool pending = false;      // launched, not yet waited for
  std::exception_ptr error;  // sync-each-op mode: the failure, rethrown by wait()
};

Conv2dSpec conv_spec(const GraphOp& op) {
  Conv2dSpec spec;
  spec.kh = op.kh, spec.kw = op.kw, spec.stride = op.stride, spec.padding = op.padding;
  spec.relu = true;
  return spec;
}

}  // namespace

int64_t inception_cuda_input_channels(Precision p, int64_t c, int option) {
  if (option != 0) {
    ENGINE_CHECK(option >= c, "InceptionV3Cuda: input_channels ", option, " < the image's ", c,
                 " channels");
    return option;
  }
  const int64_t per16 = 16 / static_cast<int64_t>(precision_bytes(p));  // 4 fp32/tf32, 8 fp16
  return (c + per16 - 1) / per16 * per16;
}

bool parse_cuda_sync_each_op(const char* value) {
  const std::string v = value ? value : "";
  if (v.empty() || v == "0") return false;
  if (v == "1") return true;
  fail("ENGINE_CUDA_SYNC_EACH_OP must be 0 or 1, got '", v, "'");
}
bool cuda_sync_each_op_from_env() {
  return parse_cuda_sync_each_op(std::getenv("ENGINE_CUDA_SYNC_EACH_OP"));
}

struct InceptionV3Cuda::Impl {
  Precision precision;
  TensorLayout layout;
  DType dtype;
  int64_t max_batch;
  InceptionCudaOptions opt;
  int64_t in_h = 0, in_w = 0, in_c_host = 0;  // the graph input as the host hands it over
  int64_t in_c = 0;  // input channels as the first conv sees them (padded to 16 bytes)
  bool sync_each_op = false;

  std::vector<LTensor> tensors;
  std::vector<Op> ops;
  std::vector<void*> wdev, bdev;  // per conv, into `weights`
  int64_t bytes_total = 0, n_allocs = 0, arena_size = 0, ws_size = 0, weights_size = 0;
  int64_t tap_buf_bytes = 0;

  // Owners in dependency order (C++ destroys members in reverse): the streams, the cuDNN handle
  // bound to the model's stream, the conv plans bound to the handle, then the memory the plans
  // and graphs read, the events and slots, then the graphs captured over all of them. ~Impl first
  // drains both streams, so nothing is freed under work still in flight.
  CudaStream stream;       // every op, the download, the slots' events
  CudaStream copy_stream;  // the slots' uploads, overlapping the previous batch's compute
  CudnnHandle handle;
  std::vector<Conv2dCudnn> convs;
  DeviceBuffer<char> weights, arena, workspace, x_dev, tap_buf;
  DeviceBuffer<float> x_host_dev, bottleneck_dev;
  CudaEvent uploaded;        // copy_stream: the last upload into x_host_dev is complete
  CudaEvent input_consumed;  // stream: the input convert has read x_host_dev
  Slot slots[2];
  std::map<int64_t, GraphInstance> graphs;

  ~Impl() {  // statuses ignored: a destructor does not throw, and a failed stream reports nothing
    if (copy_stream) cudaStreamSynchronize(copy_stream);
    if (stream) cudaStreamSynchronize(stream);
  }

  template <typename T>
  void alloc(DeviceBuffer<T>& b, int64_t bytes, const std::string& what) {
    const int64_t size = std::max<int64_t>(bytes, kAlign);
    b = DeviceBuffer<T>(static_cast<size_t>((size + int64_t(sizeof(T)) - 1) / int64_t(sizeof(T))),
                        "InceptionV3Cuda " + what + " (" + std::to_string(bytes) + " bytes)");
    bytes_total += size;
    ++n_allocs;
  }

  // ---- program construction: lowering inception_v3_graph() (symbolic, per image) ---------------
  int add_tensor(int64_t h, int64_t w, int64_t c) {
    tensors.push_back({h, w, c});
    return static_cast<int>(tensors.size()) - 1;
  }
  // The conv's Conv2dCudnn takes its input channels from the tensor it reads, so C1 sees the
  // padded input without a special case.
  int conv(const GraphOp& g, int x) {
    const LTensor t = tensors.at(static_cast<size_t>(x));
    ENGINE_CHECK(g.weight == static_cast<int>(convs.size()), "InceptionV3Cuda: ", g.name,
                 " is conv ", g.weight + 1, " of the weight table, lowered as conv ",
                 convs.size() + 1);
    convs.emplace_back("conv C" + std::to_string(g.weight + 1) + " (" + g.name + ")", t.c, g.cout,
                       conv_spec(g), precision, layout, opt.plan);
    const CudnnConvGeometry geo =
        cudnn_conv_geometry(t.h, t.w, convs.back().spec(), convs.back().name());
    const int y = add_tensor(geo.ho, geo.wo, g.cout);
    ops.push_back({OpKind::Conv, convs.back().name(), g.weight, x, y, 0, ""});
    return y;
  }
  // A pool into a new tensor, or into channels [c_off, ...) of dst.
  int pool(const GraphOp& g, int x, int dst = -1, int64_t c_off = 0) {
    const LTensor t = tensors.at(static_cast<size_t>(x));
    if (dst < 0)
      dst = add_tensor(tf_padding(t.h, g.kh, g.stride, g.padding).out,
                       tf_padding(t.w, g.kw, g.stride, g.padding).out, t.c);
    const OpKind kind = g.type == GraphOpType::MaxPool ? OpKind::MaxPool : OpKind::AvgPool;
    ops.push_back({kind, g.block + " " + g.name, -1, x, dst, c_off, "", g.kh, g.stride, g.padding});
    return dst;
  }
  // Each branch lands in its channel slice of the block output: max pools write it directly,
  // other branches are copied there from their packed tensor (see the header).
  int concat(const InceptionGraph& graph, const GraphOp& g, const std::vector<int>& lt) {
    const GraphTensor& out = graph.tensor(g.output);
    const int y = add_tensor(out.h, out.w, out.c);
    int64_t off = 0;
    for (int in : g.inputs) {
      const GraphTensor& t = graph.tensor(in);
      const GraphOp* p = t.producer >= 0 ? &graph.ops.at(static_cast<size_t>(t.producer)) : nullptr;
      if (p && graph.feeds_only_concat(*p))
        pool(*p, lt.at(static_cast<size_t>(p->inputs.at(0))), y, off);
      else
        ops.push_back({OpKind::Copy, g.block + " concat copy", -1, lt.at(static_cast<size_t>(in)),
                       y, off, ""});
      off += t.c;
    }
    ENGINE_CHECK(off == out.c, "InceptionV3Cuda: ", g.name, " concat fills ", off, " of ", out.c,
                 " channels");
    return y;
  }

  void build_program() {
    const InceptionGraph& g = inception_v3_graph();
    std::vector<int> lt(g.tensors.size(), -1);  // graph tensor -> logical tensor
    lt[static_cast<size_t>(g.input)] = add_tensor(in_h, in_w, in_c);  // tensor 0: own buffer
    ops.push_back({OpKind::Input, "input upload convert", -1, -1, 0, 0, ""});
    for (const GraphOp& op : g.ops) {
      const int x = lt.at(static_cast<size_t>(op.inputs.at(0)));
      int& y = lt[static_cast<size_t>(op.output)];
      switch (op.type) {
        case GraphOpType::Conv: y = conv(op, x); break;
        case GraphOpType::MaxPool:
          if (!g.feeds_only_concat(op)) y = pool(op, x);  // else the concat places it
          break;
        case GraphOpType::AvgPool: y = pool(op, x); break;
        case GraphOpType::Concat: y = concat(g, op, lt); break;
        case GraphOpType::GlobalAvgPool:
          ENGINE_CHECK(tensors[static_cast<size_t>(x)].c == kBottleneckSize,
                       "InceptionV3Cuda: ", op.name, " reads ", tensors[static_cast<size_t>(x)].c,
                       " channels");
          ops.push_back({OpKind::Gap, op.block + " " + op.name, -1, x, -1, 0, ""});
          break;
      }
      if (!g.tensor(op.output).tap.empty()) ops.back().tap = g.tensor(op.output).tap;
    }
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
    if (id == 0) return x_dev.data();
    return arena.data() + tensors[static_cast<size_t>(id)].offset;
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
      convs[static_cast<size_t>(op.conv)].prepare(
          handle, n, t.h, t.w, ptr(op.src), wdev[static_cast<size_t>(op.conv)],
          bdev[static_cast<size_t>(op.conv)], ptr(op.dst), ws_limit);
    }
  }

  void run_op(const Op& op, int64_t n) {
    switch (op.kind) {
      case OpKind::Input:
        copy_strided_cuda(packed_view(x_host_dev.data(), DType::F32, TensorLayout::NHWC, n, in_h,
                                      in_w, in_c_host),
                          slice(0, n, 0, in_c_host), stream, op.name);
        break;
      case OpKind::Conv: {
        const LTensor& t = tensors[static_cast<size_t>(op.src)];
        convs[static_cast<size_t>(op.conv)].forward(
            handle, n, t.h, t.w, ptr(op.src), wdev[static_cast<size_t>(op.conv)],
            bdev[static_cast<size_t>(op.conv)], ptr(op.dst), workspace.data(), ws_size);
        break;
      }
      case OpKind::MaxPool: {
        const StridedView x = view(op.src, n);
        max_pool2d_cuda(x, slice(op.dst, n, op.dst_c_off, x.c), op.k, op.stride, op.padding, stream,
                        op.name);
        break;
      }
      case OpKind::AvgPool:
        avg_pool2d_cuda(view(op.src, n), view(op.dst, n), op.k, op.stride, op.padding, stream,
                        op.name);
        break;
      case OpKind::Copy: {
        const StridedView x = view(op.src, n);
        copy_strided_cuda(x, slice(op.dst, n, op.dst_c_off, x.c), stream, op.name);
        break;
      }
      case OpKind::Gap:
        global_avg_pool_cuda(view(op.src, n), bottleneck_dev.data(), stream, op.name);
        break;
    }
  }

  void check_batch(int64_t n, const char* fn) const {
    ENGINE_CHECK(n >= 1 && n <= max_batch, "InceptionV3Cuda::", fn, ": batch ", n,
                 " outside [1, max_batch=", max_batch, "]");
  }
  Slot& slot_at(int slot, const char* fn) {
    ENGINE_CHECK(slot == 0 || slot == 1, "InceptionV3Cuda::", fn, ": slot ", slot,
                 " (there are slots 0 and 1)");
    return slots[slot];
  }
  // The synchronous entry points stage through slot 0 and the shared device input: none may run
  // while a launch is in flight.
  void check_idle(const char* fn) const {
    for (int i = 0; i < 2; ++i)
      ENGINE_CHECK(!slots[i].pending, "InceptionV3Cuda::", fn, ": slot ", i,
                   " is still in flight; wait(", i, ") first");
  }
  // The CUDA device is per host thread: a pipeline thread calling launch() may not have chosen it.
  void bind_device() const {
    CUDA_CHECK(cudaSetDevice(opt.device),
               "InceptionV3Cuda: select GPU " + std::to_string(opt.device));
  }
  void ensure_plans(int64_t n) {
    if (n != max_batch) prepare_plans(n, ws_size);  // cached after the first call per n
  }
  int64_t image_floats() const { return in_h * in_w * in_c_host; }

  // The input convert (op 0: x_host_dev -> x_dev in the network's dtype, layout and padded
  // channels), then the event that lets the next upload overwrite x_host_dev.
  void run_input(int64_t n) {
    run_op(ops[0], n);
    CUDA_CHECK(cudaEventRecord(input_consumed, stream), "InceptionV3Cuda input consumed");
  }
  // One op, then a synchronisation whose failure names the layer (the debug switch, and the eager
  // pass before a capture).
  void run_checked(size_t i, int64_t n, const char* why) {
    if (i == 0)
      run_input(n);
    else
      run_op(ops[i], n);
    CUDA_CHECK(cudaStreamSynchronize(stream), "InceptionV3Cuda " + std::string(why) + ", layer " +
                                                  ops[i].name + ", batch " + std::to_string(n));
  }
  // Ops [first, end) without a graph; each synchronised and checked when `sync`.
  void run_eager(size_t first, int64_t n, bool sync, const char* why) {
    for (size_t i = first; i < ops.size(); ++i) {
      if (sync)
        run_checked(i, n, why);
      else if (i == 0)
        run_input(n);
      else
        run_op(ops[i], n);
    }
  }

  // Ops 1.. (after the input convert) as the CUDA graph for batch n: captured on the first call
  // for n after one eager pass with every op synchronised and checked (a fault names its layer;
  // lazy module loading and the libraries' first-call set-up happen there, not in the capture,
  // where they are illegal), then replayed.
  void launch_graph(int64_t n) {
    auto it = graphs.find(n);
    if (it == graphs.end()) {
      ensure_plans(n);
      run_eager(1, n, true, "eager pass before graph capture");
      CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
                 "InceptionV3Cuda graph capture, batch " + std::to_string(n));
      try {
        run_eager(1, n, false, "capture");
      } catch (...) {
        // End the failed capture so the stream is usable again; the error being thrown says why,
        // so this call's own status is not checked. The partial graph is owned and freed.
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream, &broken);
        CudaGraph discard(broken);
        throw;
      }
      cudaGraph_t graph = nullptr;
      CUDA_CHECK(cudaStreamEndCapture(stream, &graph), "InceptionV3Cuda graph capture end");
      GraphInstance inst;
      inst.graph = CudaGraph(graph);
      cudaGraphExec_t exec = nullptr;
      CUDA_CHECK(cudaGraphInstantiate(&exec, inst.graph, 0), "InceptionV3Cuda graph instantiate");
      inst.exec = CudaGraphExec(exec);
      it = graphs.emplace(n, std::move(inst)).first;
    }
    CUDA_CHECK(cudaGraphLaunch(it->second.exec, stream),
               "InceptionV3Cuda graph launch, batch " + std::to_string(n));
  }

  // Synchronous paths: host images through slot 0's pinned buffer, uploaded on the model's stream.
  void upload(const float* host_x, int64_t n) {
    const size_t count = static_cast<size_t>(n * image_floats());
    std::memcpy(slots[0].in.data(), host_x, count * sizeof(float));
    x_host_dev.upload(slots[0].in.data(), count, stream, "InceptionV3Cuda input upload");
  }
  void download_async(int64_t n, float* pinned) {
    bottleneck_dev.download(pinned, static_cast<size_t>(n * kBottleneckSize), stream,
                            "InceptionV3Cuda bottleneck download");
  }
  void finish(int64_t n, float* host_bottleneck) {
    CUDA_CHECK(cudaStreamSynchronize(stream), "InceptionV3Cuda forward");
    std::memcpy(host_bottleneck, slots[0].out.data(), sizeof(float) * n * kBottleneckSize);
  }
};

InceptionV3Cuda::InceptionV3Cuda(const InceptionWeights& w, Precision precision, int64_t max_batch,
                                 InceptionCudaOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  ENGINE_CHECK(max_batch >= 1, "InceptionV3Cuda: max_batch must be >= 1, got ", max_batch);
  const InceptionGraph& g = inception_v3_graph();
  ENGINE_CHECK(w.convs.size() == g.conv_ops.size(), "InceptionV3Cuda: expected ", g.conv_ops.size(),
               " convs, got ", w.convs.size());
  m.precision = precision;
  m.layout =
      (precision == Precision::FP32 && options.fp32_nchw) ? TensorLayout::NCHW : TensorLayout::NHWC;
  m.dtype = dtype_of(precision);
  m.max_batch = max_batch;
  m.opt = options;
  m.sync_each_op = options.sync_each_op || cuda_sync_each_op_from_env();
  const GraphTensor& input = g.tensor(g.input);
  m.in_h = input.h, m.in_w = input.w, m.in_c_host = input.c;
  // The one place the input channels are padded; the first conv and its zero filter channels
  // follow from the input tensor's channel count.
  m.in_c = inception_cuda_input_channels(precision, input.c, options.input_channels);
  m.bind_device();
  m.stream = CudaStream::create("InceptionV3Cuda");
  m.copy_stream = CudaStream::create("InceptionV3Cuda uploads");
  m.uploaded = CudaEvent::create("InceptionV3Cuda upload", cudaEventDisableTiming);
  m.input_consumed = CudaEvent::create("InceptionV3Cuda input consumed", cudaEventDisableTiming);
  m.handle = CudnnHandle::create("InceptionV3Cuda");
  CUDNN_CHECK(cudnnSetStream(m.handle, m.stream), "InceptionV3Cuda cuDNN stream");

  // The program (one Conv2dCudnn per conv, in weight order), then the arena plan.
  m.convs.reserve(g.conv_ops.size());
  m.build_program();
  m.plan_arena();

  // Weights: one buffer, filters reordered for the layout, converted to fp16 in FP16 mode.
  const size_t eb = dtype_bytes(m.dtype);
  std::vector<int64_t> w_off, b_off;
  int64_t total = 0;
  for (const Conv2dCudnn& c : m.convs) {
    w_off.push_back(total);
    total = align_up(total + int64_t(c.spec().kh) * c.spec().kw * c.cin() * c.cout() * int64_t(eb));
    b_off.push_back(total);
    total = align_up(total + c.cout() * int64_t(eb));
  }
  m.weights_size = total;

  // Fail with one line (not a crash) when the GPU lacks memory for the steady state.
  const int64_t img = m.in_h * m.in_w;
  const int64_t need = total + m.arena_size + max_batch * m.image_floats() * 4 +
                       max_batch * img * m.in_c * int64_t(eb) + max_batch * kBottleneckSize * 4;
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b), "InceptionV3Cuda memory query");
  if (static_cast<int64_t>(free_b) < need)
    fail("InceptionV3Cuda: batch ", max_batch, " ", precision_name(precision), " needs ",
         need >> 20, " MiB of GPU memory before workspace, only ", free_b >> 20, " MiB free of ",
         total_b >> 20, " MiB; use a smaller batch");

  m.alloc(m.weights, total, "weights");
  std::vector<char> host(static_cast<size_t>(total), 0);
  for (size_t i = 0; i < m.convs.size(); ++i) {
    const Conv2dCudnn& c = m.convs[i];
    const GraphOp& op = g.conv(static_cast<int>(i));
    const FoldedConv& fc = w.convs[i];
    const int64_t kk = int64_t(op.kh) * op.kw, cin = c.cin(), cout = op.cout;
    ENGINE_CHECK(static_cast<int64_t>(fc.w_hwio.size()) == kk * op.cin * cout &&
                     static_cast<int64_t>(fc.bias.size()) == cout,
                 c.name(), ": folded weights have ", fc.w_hwio.size(), " + ", fc.bias.size(),
                 " values, expected ", kk * op.cin * cout, " + ", cout);
    std::vector<float> hwio = fc.w_hwio;
    if (cin != op.cin) {  // the padded input channels get zero filter channels
      hwio.assign(static_cast<size_t>(kk * cin * cout), 0.f);
      for (int64_t r = 0; r < kk; ++r)
        for (int64_t ci = 0; ci < op.cin; ++ci)
          for (int64_t k = 0; k < cout; ++k)
            hwio[static_cast<size_t>((r * cin + ci) * cout + k)] =
                fc.w_hwio[static_cast<size_t>((r * op.cin + ci) * cout + k)];
    }
    const std::vector<float> f = conv_filter_for_cudnn(hwio, op.kh, op.kw, cin, cout, m.layout);
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
    m.wdev.push_back(m.weights.data() + w_off[i]);
    m.bdev.push_back(m.weights.data() + b_off[i]);
  }
  // Stream-ordered (the stream is non-blocking); `host` outlives the copy: setup ends in a sync.
  m.weights.upload(host.data(), host.size(), m.stream, "InceptionV3Cuda weight upload");

  m.alloc(m.arena, m.arena_size, "activation arena");
  m.alloc(m.x_host_dev, max_batch * m.image_floats() * 4, "input (fp32 NHWC)");
  m.alloc(m.x_dev, max_batch * img * m.in_c * int64_t(eb), "input (network layout)");
  m.alloc(m.bottleneck_dev, max_batch * kBottleneckSize * 4, "bottleneck");
  // Zeroed once, on the model's stream like every set-up copy: padded input channels stay zero;
  // timing runs and a replay() before any upload read defined values.
  m.arena.zero(m.stream, "InceptionV3Cuda arena clear");
  m.x_dev.zero(m.stream, "InceptionV3Cuda input clear");
  m.x_host_dev.zero(m.stream, "InceptionV3Cuda input staging clear");
  for (int i = 0; i < 2; ++i) {
    const std::string slot = "InceptionV3Cuda slot " + std::to_string(i);
    m.slots[i].in =
        PinnedBuffer<float>(static_cast<size_t>(max_batch * m.image_floats()), slot + " input");
    m.slots[i].out =
        PinnedBuffer<float>(static_cast<size_t>(max_batch * kBottleneckSize), slot + " output");
    m.slots[i].done = CudaEvent::create(slot, cudaEventDisableTiming);
  }

  // Plans for max_batch choose freely (up to options.plan.max_workspace); one workspace for all.
  m.prepare_plans(max_batch, -1);
  for (const Op& op : m.ops)
    if (op.kind == OpKind::Conv) {
      const LTensor& t = m.tensors[static_cast<size_t>(op.src)];
      m.ws_size = std::max(
          m.ws_size, m.convs[static_cast<size_t>(op.conv)].info(max_batch, t.h, t.w).workspace);
    }
  m.alloc(m.workspace, m.ws_size, "cuDNN workspace");
  CUDA_CHECK(cudaStreamSynchronize(m.stream), "InceptionV3Cuda setup");
}

InceptionV3Cuda::~InceptionV3Cuda() = default;

float* InceptionV3Cuda::input_slot(int slot) {
  return impl_->slot_at(slot, "input_slot").in.data();
}
const float* InceptionV3Cuda::output_slot(int slot) const {
  return impl_->slot_at(slot, "output_slot").out.data();
}

void InceptionV3Cuda::launch(int slot, int64_t n) {
  Impl& m = *impl_;
  Slot& s = m.slot_at(slot, "launch");
  m.check_batch(n, "launch");
  ENGINE_CHECK(!s.pending, "InceptionV3Cuda::launch: slot ", slot, " is still in flight; wait(",
               slot, ") first");
  m.bind_device();
  const std::string ctx =
      "InceptionV3Cuda launch(slot " + std::to_string(slot) + ", batch " + std::to_string(n) + ")";
  // Upload on the copy stream once the previous input convert has read x_host_dev (so this copy
  // overlaps the previous batch's graph); the model's stream waits for it before the convert.
  CUDA_CHECK(cudaStreamWaitEvent(m.copy_stream, m.input_consumed, 0), ctx);
  m.x_host_dev.upload(s.in.data(), static_cast<size_t>(n * m.image_floats()), m.copy_stream,
                      ctx + " upload");
  CUDA_CHECK(cudaEventRecord(m.uploaded, m.copy_stream), ctx);
  CUDA_CHECK(cudaStreamWaitEvent(m.stream, m.uploaded, 0), ctx);
  s.n = n;
  s.error = nullptr;
  if (m.sync_each_op) {
    // Debug: every op eager, synchronised and checked; the failure (naming the layer) is kept for
    // wait(), where the normal mode reports errors too.
    try {
      CUDA_CHECK(cudaStreamSynchronize(m.copy_stream), ctx + " upload");
      m.ensure_plans(n);
      m.run_eager(0, n, true, "ENGINE_CUDA_SYNC_EACH_OP=1");
      m.download_async(n, s.out.data());
      CUDA_CHECK(cudaStreamSynchronize(m.stream), ctx + " bottleneck download");
    } catch (...) {
      s.error = std::current_exception();
    }
  } else {
    m.run_input(n);
    m.launch_graph(n);
    m.download_async(n, s.out.data());
  }
  CUDA_CHECK(cudaEventRecord(s.done, m.stream), ctx);
  s.pending = true;
}

void InceptionV3Cuda::wait(int slot) {
  Impl& m = *impl_;
  Slot& s = m.slot_at(slot, "wait");
  ENGINE_CHECK(s.pending, "InceptionV3Cuda::wait: slot ", slot, " was not launched");
  s.pending = false;
  if (s.error) std::rethrow_exception(std::exchange(s.error, nullptr));
  m.bind_device();
  CUDA_CHECK(cudaEventSynchronize(s.done),
             "InceptionV3Cuda wait(slot " + std::to_string(slot) + "): batch " +
                 std::to_string(s.n) +
                 " (upload, forward graph, download); rerun with ENGINE_CUDA_SYNC_EACH_OP=1 to "
                 "name the failing layer");
}

void InceptionV3Cuda::forward(const float* host_x, int64_t n, float* host_bottleneck) {
  Impl& m = *impl_;
  m.check_batch(n, "forward");
  ENGINE_CHECK(!m.slots[0].pending, "InceptionV3Cuda::forward: slot 0 is still in flight");
  std::memcpy(m.slots[0].in.data(), host_x,
              sizeof(float) * static_cast<size_t>(n * m.image_floats()));
  launch(0, n);
  wait(0);
  std::memcpy(host_bottleneck, m.slots[0].out.data(), sizeof(float) * n * kBottleneckSize);
}

void InceptionV3Cuda::replay(int64_t n) {
  Impl& m = *impl_;
  m.check_batch(n, "replay");
  m.check_idle("replay");
  m.bind_device();
  if (m.sync_each_op) {
    m.ensure_plans(n);
    m.run_eager(0, n, true, "ENGINE_CUDA_SYNC_EACH_OP=1");
    return;
  }
  m.run_input(n);
  m.launch_graph(n);
}

void InceptionV3Cuda::forward_eager(const float* host_x, int64_t n, float* host_bottleneck) {
  forward_blocks(host_x, n, host_bottleneck, Tap());
}

void InceptionV3Cuda::forward_blocks(const float* host_x, int64_t n, float* host_bottleneck,
                                     const Tap& tap) {
  Impl& m = *impl_;
  m.check_batch(n, "forward_blocks");
  m.check_idle("forward_blocks");
  m.bind_device();
  m.ensure_plans(n);
  m.upload(host_x, n);
  for (size_t i = 0; i < m.ops.size(); ++i) {
    const Op& op = m.ops[i];
    if (m.sync_each_op)
      m.run_checked(i, n, "ENGINE_CUDA_SYNC_EACH_OP=1");
    else if (i == 0)
      m.run_input(n);
    else
      m.run_op(op, n);
    if (!tap || op.tap.empty()) continue;
    const LTensor& t = m.tensors[static_cast<size_t>(op.dst)];
    const int64_t bytes = n * t.h * t.w * t.c * 4;
    if (bytes > m.tap_buf_bytes) {  // grows to the largest block once (mixed2 at this n)
      if (m.tap_buf) {  // the last tap's download was synchronised: nothing reads it now
        m.tap_buf.reset();
        m.bytes_total -= std::max<int64_t>(m.tap_buf_bytes, kAlign);
      }
      m.alloc(m.tap_buf, bytes, "tap buffer");
      m.tap_buf_bytes = bytes;
    }
    copy_strided_cuda(
        m.view(op.dst, n),
        packed_view(m.tap_buf.data(), DType::F32, TensorLayout::NHWC, n, t.h, t.w, t.c), m.stream,
        op.tap + " tap");
    Tensor host(Shape{n, t.h, t.w, t.c});
    m.tap_buf.download(reinterpret_cast<char*>(host.data()), static_cast<size_t>(bytes), m.stream,
                       op.tap + " tap download");
    CUDA_CHECK(cudaStreamSynchronize(m.stream), op.tap + " tap");
    tap(op.tap, host);
  }
  m.download_async(n, m.slots[0].out.data());
  m.finish(n, host_bottleneck);
}

std::vector<InceptionV3Cuda::LayerTime> InceptionV3Cuda::profile_layers(int64_t n, int iters) {
  Impl& m = *impl_;
  m.check_batch(n, "profile_layers");
  m.check_idle("profile_layers");
  m.bind_device();
  m.ensure_plans(n);
  std::vector<CudaEvent> ev;
  for (size_t i = 0; i <= m.ops.size(); ++i)
    ev.push_back(CudaEvent::create("InceptionV3Cuda profile"));
  std::vector<LayerTime> out(m.ops.size());
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

cudaStream_t InceptionV3Cuda::stream() const { return impl_->stream; }
bool InceptionV3Cuda::sync_each_op() const { return impl_->sync_each_op; }
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
