// models/inception_v3_cuda_run.cu: InceptionV3Cuda execution: launch()/wait() on the pinned
// slots, the synchronous forward paths, graph replay, per-block and per-layer runs. Construction
// and accessors are in models/inception_v3_cuda.cu; Impl in models/inception_v3_cuda_impl.h.
#include "models/inception_v3_cuda_impl.h"

namespace engine {

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

}  // namespace engine
