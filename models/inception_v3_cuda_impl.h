// models/inception_v3_cuda_impl.h: internal to InceptionV3Cuda, shared by its two translation
// units: models/inception_v3_cuda.cu (construction: lowering, arena plan, weights; accessors)
// and models/inception_v3_cuda_run.cu (execution: launch/wait, forward, replay, profile). Holds
// the op list types and struct InceptionV3Cuda::Impl. Not part of the public API.
#pragma once

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

namespace inception_cuda_detail {

constexpr int64_t kAlign = 256;
inline int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

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

inline Conv2dSpec conv_spec(const GraphOp& op) {
  Conv2dSpec spec;
  spec.kh = op.kh, spec.kw = op.kw, spec.stride = op.stride, spec.padding = op.padding;
  spec.relu = true;
  return spec;
}

}  // namespace inception_cuda_detail

// Only the two InceptionV3Cuda translation units include this header.
using namespace inception_cuda_detail;

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

}  // namespace engine
