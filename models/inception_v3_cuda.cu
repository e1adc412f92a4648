// models/inception_v3_cuda.cu: InceptionV3Cuda; see the header for the memory plan, the concat
// strategy and the graph capture. The op list is lowered from inception_v3_graph()
// (models/inception_graph.h), the graph the CPU executor walks too, so branch and concat order are
// the same by construction. Compile-checked only where there is no GPU; the tests in
// tests/test_inception_cuda.cpp run it against the PyTorch reference on the GPU machine.
//
// This file: construction (the op list lowered from the graph, the arena plan, weights, plans)
// and the accessors; execution (launch/wait, forward, replay, profile) is in
// models/inception_v3_cuda_run.cu. Impl and the op list types: models/inception_v3_cuda_impl.h.
#include "models/inception_v3_cuda_impl.h"

namespace engine {

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
