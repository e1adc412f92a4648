// models/inception_v3_lowp.cpp: the bf16 and int8 CPU executors of inception_v3_graph() (see
// models/inception_v3_lowp.h): oneDNN convolutions and pools on bf16 or u8 NHWC activations,
// our own concat (a copy, with a 256-entry requantisation table where an int8 piece's scale
// differs from the concat's) and global average pool (accumulated in fp32 / int32). The int8
// scales are arranged so that concats are plain copies: a conv whose only reader is a concat
// writes straight at the concat's scale; pools keep their input's scale.
#include "models/inception_v3_lowp.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>

#include "engine/buffer_pool.h"
#include "engine/error.h"
#include "kernels/conv2d.h"
#include "kernels/dnnl_context.h"
#include "models/inception_graph.h"
#include "models/inception_v3.h"

namespace engine {

const char* cpu_precision_name(CpuPrecision p) {
  switch (p) {
    case CpuPrecision::FP32: return "fp32";
    case CpuPrecision::BF16: return "bf16";
    case CpuPrecision::INT8: return "int8";
  }
  return "?";
}

CpuPrecision parse_cpu_precision(const std::string& s) {
  if (s == "fp32") return CpuPrecision::FP32;
  if (s == "bf16") return CpuPrecision::BF16;
  if (s == "int8") return CpuPrecision::INT8;
  fail("CPU precision: expected fp32, bf16 or int8, got '", s, "'");
}

std::string cpu_isa_name() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41: return "sse41";
    case isa::avx: return "avx";
    case isa::avx2: return "avx2";
    case isa::avx2_vnni: return "avx2_vnni";
    case isa::avx512_mic: return "avx512_mic";
    case isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case isa::avx512_core: return "avx512_core";
    case isa::avx512_core_vnni: return "avx512_core_vnni";
    case isa::avx512_core_bf16: return "avx512_core_bf16";
    case isa::avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
  }
}

std::string cpu_precision_unavailable(CpuPrecision p) {
  using isa = dnnl::cpu_isa;
  const isa i = dnnl::get_effective_cpu_isa();
  // oneDNN 2.6 would run bf16 on plain AVX-512 by emulation (several times slower than fp32):
  // only the native instructions count.
  const bool bf16 = i == isa::avx512_core_bf16 || i == isa::avx512_core_amx;
  const bool vnni = bf16 || i == isa::avx512_core_vnni || i == isa::avx2_vnni;
  if (p == CpuPrecision::BF16 && !bf16)
    return "bf16 needs AVX512_BF16 or AMX instructions; oneDNN reports " + cpu_isa_name() +
           " on this CPU";
  if (p == CpuPrecision::INT8 && !vnni)
    return "int8 needs AVX512_VNNI, AVX_VNNI or AMX instructions; oneDNN reports " +
           cpu_isa_name() + " on this CPU";
  return "";
}

// ---------------------------------------------------------------------------------------------
// Calibration.

namespace {
constexpr const char* kCalibrationTag = "int8-minmax-v1";
}

std::string Int8Calibration::serialize() const {
  const InceptionGraph& g = inception_v3_graph();
  ENGINE_CHECK(max.size() == g.tensors.size(), "Int8Calibration: holds ", max.size(),
               " ranges, the graph has ", g.tensors.size(), " tensors");
  std::string s = std::string(kCalibrationTag) + " images=" + std::to_string(images);
  char buf[96];
  for (size_t i = 0; i < g.tensors.size(); ++i) {
    if (static_cast<int>(i) == g.output) continue;  // the bottleneck stays fp32
    std::snprintf(buf, sizeof buf, " %s=%.9g", g.tensors[i].name.c_str(), max[i]);
    s += buf;
  }
  return s;
}

Int8Calibration Int8Calibration::parse(const std::string& text, const std::string& where) {
  const InceptionGraph& g = inception_v3_graph();
  std::vector<std::string> tok;
  for (size_t p = 0; p < text.size();) {
    const size_t q = std::min(text.find(' ', p), text.size());
    if (q > p) tok.push_back(text.substr(p, q - p));
    p = q + 1;
  }
  auto bad = [&](const std::string& why) { fail(where, ": int8 calibration: ", why); };
  if (tok.empty() || tok[0] != kCalibrationTag)
    bad("expected it to start with '" + std::string(kCalibrationTag) + "', got '" +
        text.substr(0, 40) + "'");
  if (tok.size() != g.tensors.size() + 1)  // tag + images= + every tensor but the output
    bad("expected " + std::to_string(g.tensors.size() - 1) + " tensor ranges, got " +
        std::to_string(tok.size() < 2 ? 0 : tok.size() - 2));
  Int8Calibration c;
  char* end = nullptr;
  if (tok[1].rfind("images=", 0) != 0) bad("second field must be images=N, got '" + tok[1] + "'");
  c.images = std::strtoll(tok[1].c_str() + 7, &end, 10);
  if (*end != '\0' || c.images < 1) bad("bad image count '" + tok[1] + "'");
  c.max.assign(g.tensors.size(), 0.f);
  size_t k = 2;
  for (size_t i = 0; i < g.tensors.size(); ++i) {
    if (static_cast<int>(i) == g.output) continue;
    const std::string& t = tok[k++];
    const std::string want = g.tensors[i].name + "=";
    if (t.compare(0, want.size(), want) != 0)
      bad("expected the range of " + g.tensors[i].name + ", got '" + t + "'");
    const double v = std::strtod(t.c_str() + want.size(), &end);
    if (*end != '\0' || end == t.c_str() + want.size() || !std::isfinite(v) || v < 0)
      bad("range of " + g.tensors[i].name + " is not a finite number >= 0: '" + t + "'");
    c.max[i] = static_cast<float>(v);
  }
  return c;
}

Int8Calibration calibrate_int8(const InceptionWeights& w, const Tensor& images) {
  const InceptionGraph& g = inception_v3_graph();
  ENGINE_CHECK(images.rank() == 4 && images.n() >= 1 && images.h() == kInceptionInput &&
                   images.w() == kInceptionInput && images.c() == 3,
               "calibrate_int8: images must be (N >= 1, 299, 299, 3), got ", images.shape().str());
  Int8Calibration c;
  c.images = images.n();
  c.max.assign(g.tensors.size(), 0.f);
  float& in = c.max[static_cast<size_t>(g.input)];
  const float* px = images.data();
  for (int64_t i = 0, n = images.numel(); i < n; ++i) in = std::max(in, std::fabs(px[i]));
  InceptionV3Cpu model(w);
  model.set_tap_every_tensor(true);
  Tensor b(Shape{images.n(), kBottleneckSize});
  model.forward(images, b, [&](const std::string& name, const Tensor& t, int64_t) {
    const int id = g.find_tensor(name);
    ENGINE_CHECK(id >= 0, "calibrate_int8: tap of unknown tensor ", name);
    float m = c.max[static_cast<size_t>(id)];
    const float* v = t.data();  // hoisted: Shape::numel() is out of line
    for (int64_t i = 0, n = t.numel(); i < n; ++i) m = std::max(m, v[i]);
    c.max[static_cast<size_t>(id)] = m;
  });
  return c;
}

// ---------------------------------------------------------------------------------------------
// The executor.

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

uint16_t to_bf16(float f) {  // round to nearest even; inputs are finite ([-1, 1])
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

struct InceptionV3CpuLowp::Impl {
  struct Entry {  // one primitive for one (micro-batch size, execution slot)
    dnnl::primitive prim;
    dnnl::memory::desc src_md, dst_md;
    dnnl::memory weights;
    dnnl::memory scratchpad;
  };
  struct OpState {
    std::string layer;             // "conv2d_17 (mixed1)" for messages
    dnnl::memory weights;          // conv: reordered once to the layout oneDNN picked
    dnnl::memory bias;             // conv: f32 (int8: divided by the input x weight scales)
    std::vector<float> bias_data;  // backs `bias`
    dnnl::primitive_attr attr;     // conv: scratchpad, ReLU (bf16) or output scales (int8)
    std::vector<std::array<uint8_t, 256>> requant;  // concat, int8: per input
    std::vector<bool> requant_needed;  // concat, int8: false = the piece is copied as it is
    std::map<std::pair<int64_t, int64_t>, Entry> cache;
    std::mutex mu;
  };

  CpuPrecision precision;
  int64_t micro_batch;
  // The first conv (3 -> 32 channels, 0.3% of the FLOPs) runs in fp32 on the fp32 image, and
  // only its output is rounded: rounding the image itself to bf16 (or to int8's 1/127 steps) is
  // the largest single error of either mode (tests/test_inception_lowp.cpp measures it).
  int first_conv = -1;
  std::unique_ptr<Conv2dCpu> stem;
  bool batch_invariant = false;
  std::vector<dt> tensor_dt;        // per graph tensor
  std::vector<float> tensor_scale;  // int8: real value = q * scale
  std::vector<OpState> ops;
  // ENGINE_LOWP_PROFILE=1: seconds per op summed over calls, printed by the destructor.
  bool profile = std::getenv("ENGINE_LOWP_PROFILE") != nullptr;
  std::vector<double> op_seconds;
  std::vector<int64_t> op_images;
  std::mutex profile_mu;
  ~Impl();
  std::vector<BufferPool> pools;

  int64_t elem(int id) const { return tensor_dt[static_cast<size_t>(id)] == dt::bf16 ? 2 : 1; }
  dnnl::memory::desc md(int tensor, int64_t n) const;
  dnnl::convolution_forward::primitive_desc conv_pd(const GraphOp& op, const OpState& st,
                                                    int64_t n) const;
  dnnl::pooling_forward::primitive_desc pool_pd(const GraphOp& op, int64_t n) const;
  Entry& entry(int op_index, int64_t n);
  void forward_chunk(const Tensor& x, Tensor& bottleneck, const Tap& tap, int64_t first);
  std::mutex tap_mu;
  BufferPool& pool() {
    return pools.at(omp_in_parallel() ? static_cast<size_t>(omp_get_thread_num()) : 0);
  }
};

namespace {

// Fails when oneDNN fell back to a reference (emulated, slow) implementation.
void require_fast(const std::string& layer, const char* impl) {
  if (std::strncmp(impl, "ref", 3) == 0)
    fail("inception ", layer, ": oneDNN has only its slow reference kernel (", impl,
         ") for this layer on this CPU (", cpu_isa_name(), "); use --precision fp32");
}

}  // namespace

dnnl::memory::desc InceptionV3CpuLowp::Impl::md(int id, int64_t n) const {
  const GraphTensor& t = inception_v3_graph().tensor(id);
  return dnnl::memory::desc({n, t.c, t.h, t.w}, tensor_dt[static_cast<size_t>(id)], tag::nhwc);
}

dnnl::convolution_forward::primitive_desc InceptionV3CpuLowp::Impl::conv_pd(const GraphOp& op,
                                                                            const OpState& st,
                                                                            int64_t n) const {
  const GraphTensor& in = inception_v3_graph().tensor(op.inputs.at(0));
  const PadInfo ph = tf_padding(in.h, op.kh, op.stride, op.padding);
  const PadInfo pw = tf_padding(in.w, op.kw, op.stride, op.padding);
  const dt wdt = precision == CpuPrecision::BF16 ? dt::bf16 : dt::s8;
  dnnl::memory::desc w({op.cout, op.cin, op.kh, op.kw}, wdt, tag::any);
  dnnl::convolution_forward::desc d(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, md(op.inputs[0], n),
      w, dnnl::memory::desc({op.cout}, dt::f32, tag::x), md(op.output, n), {op.stride, op.stride},
      {ph.before, pw.before}, {ph.after, pw.after});
  return dnnl::convolution_forward::primitive_desc(d, st.attr, dnnl_cpu_engine());
}

dnnl::pooling_forward::primitive_desc InceptionV3CpuLowp::Impl::pool_pd(const GraphOp& op,
                                                                        int64_t n) const {
  const GraphTensor& in = inception_v3_graph().tensor(op.inputs.at(0));
  const PadInfo ph = tf_padding(in.h, op.kh, op.stride, op.padding);
  const PadInfo pw = tf_padding(in.w, op.kw, op.stride, op.padding);
  const auto alg = op.type == GraphOpType::MaxPool ? dnnl::algorithm::pooling_max
                                                   : dnnl::algorithm::pooling_avg_exclude_padding;
  dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, alg, md(op.inputs[0], n),
                                md(op.output, n), {op.stride, op.stride}, {op.kh, op.kw},
                                {ph.before, pw.before}, {ph.after, pw.after});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return dnnl::pooling_forward::primitive_desc(d, attr, dnnl_cpu_engine());
}

InceptionV3CpuLowp::Impl::Entry& InceptionV3CpuLowp::Impl::entry(int op_index, int64_t n) {
  OpState& st = ops[static_cast<size_t>(op_index)];
  const GraphOp& op = inception_v3_graph().ops[static_cast<size_t>(op_index)];
  const auto key = std::make_pair(n, omp_in_parallel() ? 1 + omp_get_thread_num() : 0);
  std::lock_guard<std::mutex> lock(st.mu);
  auto it = st.cache.find(key);
  if (it != st.cache.end()) return it->second;
  Entry e = dnnl_checked("inception", st.layer, "primitive creation", [&] {
    Entry en;
    auto finish = [&](const dnnl::primitive_desc_base& pd) {
      require_fast(st.layer, pd.impl_info_str());
      if (std::getenv("ENGINE_CONV_VERBOSE"))
        std::fprintf(stderr, "inception %s %s n=%ld: %s\n", cpu_precision_name(precision),
                     st.layer.c_str(), static_cast<long>(n), pd.impl_info_str());
      en.src_md = pd.src_desc();
      en.dst_md = pd.dst_desc();
      en.scratchpad = dnnl::memory(pd.scratchpad_desc(), dnnl_cpu_engine());
    };
    if (op.type == GraphOpType::Conv) {
      const auto pd = conv_pd(op, st, n);
      finish(pd);
      en.prim = dnnl::convolution_forward(pd);
      en.weights = st.weights;
      if (pd.weights_desc() != st.weights.get_desc()) {  // this shape wants another blocking
        en.weights = dnnl::memory(pd.weights_desc(), dnnl_cpu_engine());
        dnnl::reorder(st.weights, en.weights).execute(dnnl_thread_stream(), st.weights, en.weights);
        dnnl_thread_stream().wait();
      }
    } else {
      const auto pd = pool_pd(op, n);
      finish(pd);
      en.prim = dnnl::pooling_forward(pd);
    }
    return en;
  });
  return st.cache.emplace(key, std::move(e)).first->second;
}

InceptionV3CpuLowp::InceptionV3CpuLowp(const InceptionWeights& w, CpuPrecision precision,
                                       const Int8Calibration& cal, int64_t micro_batch)
    : impl_(std::make_unique<Impl>()) {
  ENGINE_CHECK(precision != CpuPrecision::FP32,
               "InceptionV3CpuLowp: fp32 runs in InceptionV3Cpu (models/inception_v3.h)");
  ENGINE_CHECK(micro_batch >= 1, "InceptionV3CpuLowp: micro_batch must be >= 1, got ", micro_batch);
  const std::string missing = cpu_precision_unavailable(precision);
  ENGINE_CHECK(missing.empty(), missing);
  const InceptionGraph& g = inception_v3_graph();
  ENGINE_CHECK(w.convs.size() == g.conv_ops.size(), "InceptionV3CpuLowp: expected ",
               g.conv_ops.size(), " convs, got ", w.convs.size());
  Impl& im = *impl_;
  im.precision = precision;
  im.micro_batch = micro_batch;
  const bool q = precision == CpuPrecision::INT8;
  const size_t nt = g.tensors.size();
  if (q)
    ENGINE_CHECK(cal.max.size() == nt, "InceptionV3CpuLowp: int8 needs a calibration of ", nt,
                 " tensor ranges, got ", cal.max.size(), " (calibrate_int8)");
  im.tensor_dt.assign(nt, q ? dt::u8 : dt::bf16);
  im.tensor_dt[static_cast<size_t>(g.input)] = dt::f32;  // read only by the fp32 first conv
  im.tensor_scale.assign(nt, 1.f);
  if (q) {
    // A dead tensor (max 0) still needs a positive scale: its u8 values are all 0 anyway.
    for (size_t t = 0; t < nt; ++t) im.tensor_scale[t] = std::max(cal.max[t], 1e-6f) / 255.f;
    for (const GraphOp& op : g.ops)  // a conv read only by a concat writes at the concat's scale
      if (op.type == GraphOpType::Concat)
        for (int i : op.inputs)
          if (g.tensor(i).uses == 1 &&
              g.ops[static_cast<size_t>(g.tensor(i).producer)].type == GraphOpType::Conv)
            im.tensor_scale[static_cast<size_t>(i)] =
                im.tensor_scale[static_cast<size_t>(op.output)];
    for (const GraphOp& op : g.ops)  // topological: pools keep their input's (final) scale
      if (op.type == GraphOpType::MaxPool || op.type == GraphOpType::AvgPool)
        im.tensor_scale[static_cast<size_t>(op.output)] =
            im.tensor_scale[static_cast<size_t>(op.inputs[0])];
  }
  im.ops = std::vector<Impl::OpState>(g.ops.size());
  dnnl::stream& strm = dnnl_thread_stream();
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const GraphOp& op = g.ops[i];
    Impl::OpState& st = im.ops[i];
    st.layer = op.name + " (" + op.block + ")";
    if (op.type == GraphOpType::Concat && q) {
      const float so = im.tensor_scale[static_cast<size_t>(op.output)];
      st.requant.resize(op.inputs.size());
      st.requant_needed.assign(op.inputs.size(), false);
      for (size_t k = 0; k < op.inputs.size(); ++k) {
        const float si = im.tensor_scale[static_cast<size_t>(op.inputs[k])];
        if (si == so) continue;
        st.requant_needed[k] = true;
        for (int v = 0; v < 256; ++v)
          st.requant[k][static_cast<size_t>(v)] = static_cast<uint8_t>(
              std::min(255.f, std::nearbyint(static_cast<float>(v) * (si / so))));
      }
    }
    if (op.type != GraphOpType::Conv) continue;
    const FoldedConv& fc = w.convs.at(static_cast<size_t>(op.weight));
    if (op.inputs[0] == g.input) {
      ENGINE_CHECK(g.tensor(g.input).uses == 1 && im.first_conv < 0,
                   "InceptionV3CpuLowp: the image must have one reader, the first conv");
      Conv2dSpec spec;
      spec.kh = op.kh, spec.kw = op.kw, spec.stride = op.stride, spec.padding = op.padding;
      im.first_conv = static_cast<int>(i);
      im.stem = std::make_unique<Conv2dCpu>(st.layer, fc.w_hwio, fc.bias, op.cin, op.cout, spec);
      continue;
    }
    const int64_t cout = op.cout, rows = static_cast<int64_t>(fc.w_hwio.size()) / cout;
    ENGINE_CHECK(rows == op.kh * op.kw * op.cin && fc.bias.size() == static_cast<size_t>(cout),
                 "InceptionV3CpuLowp: ", st.layer, ": weight shapes disagree with the graph");
    dnnl_checked("inception", st.layer, "weight setup", [&] {
      st.attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      st.bias_data = fc.bias;
      dnnl::memory user;
      std::vector<int8_t> wq;
      if (!q) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        st.attr.set_post_ops(po);
        user = dnnl::memory({{cout, op.cin, op.kh, op.kw}, dt::f32, tag::hwio}, dnnl_cpu_engine(),
                            const_cast<float*>(fc.w_hwio.data()));
      } else {
        // Per output channel: w = wq * sw[o], wq in [-127, 127]. dst_q = s_in * sw / s_out *
        // (acc + bias / (s_in * sw)): oneDNN 2.x adds the bias before the output scale. The u8
        // destination saturates at 0, which is the ReLU.
        const float s_in = im.tensor_scale[static_cast<size_t>(op.inputs[0])];
        const float s_out = im.tensor_scale[static_cast<size_t>(op.output)];
        std::vector<float> sw(static_cast<size_t>(cout), 0.f), out_scale(sw.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < cout; ++o)
            sw[o] = std::max(sw[o], std::fabs(fc.w_hwio[static_cast<size_t>(r * cout + o)]));
        for (int64_t o = 0; o < cout; ++o) {
          sw[o] = sw[o] > 0 ? sw[o] / 127.f : 1.f;
          out_scale[o] = s_in * sw[o] / s_out;
          st.bias_data[o] = fc.bias[o] / (s_in * sw[o]);
        }
        wq.resize(fc.w_hwio.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < cout; ++o) {
            const size_t k = static_cast<size_t>(r * cout + o);
            wq[k] = static_cast<int8_t>(std::nearbyint(fc.w_hwio[k] / sw[o]));
          }
        st.attr.set_output_scales(1 << 1, out_scale);  // mask bit 1: per output channel
        user = dnnl::memory({{cout, op.cin, op.kh, op.kw}, dt::s8, tag::hwio}, dnnl_cpu_engine(),
                            wq.data());
      }
      st.bias = dnnl::memory({{cout}, dt::f32, tag::x}, dnnl_cpu_engine(), st.bias_data.data());
      const auto pd = im.conv_pd(op, st, 1);
      st.weights = dnnl::memory(pd.weights_desc(), dnnl_cpu_engine());
      dnnl::reorder(user, st.weights).execute(strm, user, st.weights);
      strm.wait();
      return 0;
    });
  }
}

InceptionV3CpuLowp::~InceptionV3CpuLowp() = default;

InceptionV3CpuLowp::Impl::~Impl() {
  if (!profile || op_seconds.empty()) return;
  const InceptionGraph& g = inception_v3_graph();
  double total = 0;
  for (double t : op_seconds) total += t;
  std::fprintf(stderr, "inception %s profile (ms per image per thread, GFLOP/s for convs):\n",
               cpu_precision_name(precision));
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const GraphOp& op = g.ops[i];
    const GraphTensor& o = g.tensor(op.output);
    const double per = op_images[i] ? op_seconds[i] / static_cast<double>(op_images[i]) : 0;
    const double flop =
        op.type == GraphOpType::Conv ? 2.0 * op.kh * op.kw * op.cin * op.cout * o.h * o.w : 0;
    std::fprintf(stderr, "  %-28s %-8s %7.3f ms %5.1f%% %7.1f\n", ops[i].layer.c_str(),
                 graph_op_type_name(op.type), per * 1e3, 100 * op_seconds[i] / total,
                 per > 0 ? flop / per / 1e9 : 0.0);
  }
}

void InceptionV3CpuLowp::set_batch_invariant(bool on) { impl_->batch_invariant = on; }
CpuPrecision InceptionV3CpuLowp::precision() const { return impl_->precision; }
double InceptionV3CpuLowp::flops_per_image() const { return inception_v3_flops_per_image(); }
int64_t InceptionV3CpuLowp::activation_bytes() const {
  int64_t b = 0;
  for (const BufferPool& p : impl_->pools) b += p.reserved_bytes();
  return b;
}

void InceptionV3CpuLowp::forward(const Tensor& x, Tensor& bottleneck, const Tap& tap) {
  Impl& im = *impl_;
  constexpr int64_t kIn = kInceptionInput;
  ENGINE_CHECK(x.rank() == 4 && x.h() == kIn && x.w() == kIn && x.c() == 3,
               "InceptionV3CpuLowp::forward: input must be (N, 299, 299, 3), got ",
               x.shape().str());
  ENGINE_CHECK(bottleneck.shape() == (Shape{x.n(), kBottleneckSize}),
               "InceptionV3CpuLowp::forward: bottleneck must be (", x.n(), ", ", kBottleneckSize,
               "), got ", bottleneck.shape().str());
  const int64_t image = kIn * kIn * 3, mb = im.micro_batch;
  const int64_t chunks = (x.n() + mb - 1) / mb;
  auto run_chunk = [&](int64_t c) {
    const int64_t first = c * mb, n = std::min(mb, x.n() - first);
    const Tensor xs =
        Tensor::view(const_cast<float*>(x.data()) + first * image, Shape{n, kIn, kIn, 3});
    Tensor bs =
        Tensor::view(bottleneck.data() + first * kBottleneckSize, Shape{n, kBottleneckSize});
    im.forward_chunk(xs, bs, tap, first);
  };
  // The same thread layout as InceptionV3Cpu::forward (models/inception_v3.h).
  const int threads = micro_batch_threads(chunks, im.batch_invariant);
  if (im.pools.size() < static_cast<size_t>(threads)) im.pools.resize(static_cast<size_t>(threads));
  run_micro_batches(chunks, threads, run_chunk);
}

void InceptionV3CpuLowp::Impl::forward_chunk(const Tensor& x, Tensor& bottleneck, const Tap& tap,
                                             int64_t first) {
  const InceptionGraph& g = inception_v3_graph();
  const int64_t n = x.n();
  auto bytes_of = [&](int id) {
    const GraphTensor& t = g.tensor(id);
    return n * t.h * t.w * t.c * elem(id);
  };
  auto acquire = [&](int id) { return pool().acquire(Shape{(bytes_of(id) + 3) / 4}); };
  std::vector<PooledTensor> live(g.tensors.size());
  dnnl::stream& strm = dnnl_thread_stream();
  std::vector<double> seconds(profile ? g.ops.size() : 0);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const GraphOp& op = g.ops[i];
    OpState& st = ops[i];
    const auto t0 = std::chrono::steady_clock::now();
    const auto data = [&](int id) { return live[static_cast<size_t>(id)]->data(); };
    if (static_cast<int>(i) == first_conv) {  // fp32 conv of the fp32 image, output rounded
      const GraphTensor& t = g.tensor(op.output);
      PooledTensor f = pool().acquire(Shape{n, t.h, t.w, t.c});
      stem->forward(x, *f);
      PooledTensor y = acquire(op.output);
      const float* v = f->data();
      const int64_t count = f->numel();
      if (precision == CpuPrecision::BF16) {
        auto* d = reinterpret_cast<uint16_t*>(y->data());
        for (int64_t k = 0; k < count; ++k) d[k] = to_bf16(v[k]);
      } else {
        const float inv = 1.f / tensor_scale[static_cast<size_t>(op.output)];
        auto* d = reinterpret_cast<uint8_t*>(y->data());
        for (int64_t k = 0; k < count; ++k)  // post-ReLU: v >= 0
          d[k] = static_cast<uint8_t>(std::min(255.f, std::nearbyint(v[k] * inv)));
      }
      live[static_cast<size_t>(op.output)] = std::move(y);
    } else if (op.type == GraphOpType::GlobalAvgPool) {
      const int id = op.inputs[0];
      const GraphTensor& t = g.tensor(id);
      const int64_t hw = t.h * t.w, c = t.c;
      for (int64_t b = 0; b < n; ++b) {
        float* o = bottleneck.data() + b * c;
        if (precision == CpuPrecision::BF16) {
          const auto* s = reinterpret_cast<const uint16_t*>(data(id)) + b * hw * c;
          std::vector<float> acc(static_cast<size_t>(c), 0.f);
          for (int64_t p = 0; p < hw; ++p)
            for (int64_t k = 0; k < c; ++k) acc[k] += from_bf16(s[p * c + k]);
          for (int64_t k = 0; k < c; ++k) o[k] = acc[k] / static_cast<float>(hw);
        } else {
          const auto* s = reinterpret_cast<const uint8_t*>(data(id)) + b * hw * c;
          std::vector<int32_t> acc(static_cast<size_t>(c), 0);
          for (int64_t p = 0; p < hw; ++p)
            for (int64_t k = 0; k < c; ++k) acc[k] += s[p * c + k];
          const float sc = tensor_scale[static_cast<size_t>(id)] / static_cast<float>(hw);
          for (int64_t k = 0; k < c; ++k) o[k] = static_cast<float>(acc[k]) * sc;
        }
      }
    } else if (op.type == GraphOpType::Concat) {
      PooledTensor y = acquire(op.output);
      const GraphTensor& out = g.tensor(op.output);
      const int64_t pixels = n * out.h * out.w, e = elem(op.output), oc = out.c * e;
      auto* yb = reinterpret_cast<uint8_t*>(y->data());
      int64_t off = 0;
      for (size_t k = 0; k < op.inputs.size(); ++k) {
        const int id = op.inputs[k];
        const int64_t ic = g.tensor(id).c * e;
        const auto* xb = reinterpret_cast<const uint8_t*>(data(id));
        const bool rq = !st.requant_needed.empty() && st.requant_needed[k];
        for (int64_t p = 0; p < pixels; ++p) {
          uint8_t* d = yb + p * oc + off;
          const uint8_t* s = xb + p * ic;
          if (!rq) {
            std::memcpy(d, s, static_cast<size_t>(ic));
          } else {
            const auto& lut = st.requant[k];
            for (int64_t j = 0; j < ic; ++j) d[j] = lut[s[j]];
          }
        }
        off += ic;
      }
      live[static_cast<size_t>(op.output)] = std::move(y);
    } else {  // conv or pool through oneDNN
      PooledTensor y = acquire(op.output);
      Entry& e = entry(static_cast<int>(i), n);
      dnnl_checked("inception", st.layer, "execution", [&] {
        dnnl::memory src(e.src_md, dnnl_cpu_engine(), data(op.inputs[0]));
        dnnl::memory dst(e.dst_md, dnnl_cpu_engine(), y->data());
        if (op.type == GraphOpType::Conv)
          e.prim.execute(strm, {{DNNL_ARG_SRC, src},
                                {DNNL_ARG_WEIGHTS, e.weights},
                                {DNNL_ARG_BIAS, st.bias},
                                {DNNL_ARG_DST, dst},
                                {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
        else
          e.prim.execute(
              strm,
              {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, e.scratchpad}});
        strm.wait();
        return 0;
      });
      live[static_cast<size_t>(op.output)] = std::move(y);
    }
    if (profile)
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (tap && op.type != GraphOpType::GlobalAvgPool) {
      const GraphTensor& t = g.tensor(op.output);
      Tensor f(Shape{n, t.h, t.w, t.c});
      const float sc = tensor_scale[static_cast<size_t>(op.output)];
      const void* q = data(op.output);
      for (int64_t k = 0; k < f.numel(); ++k)
        f.data()[k] = precision == CpuPrecision::BF16
                          ? from_bf16(static_cast<const uint16_t*>(q)[k])
                          : static_cast<float>(static_cast<const uint8_t*>(q)[k]) * sc;
      std::lock_guard<std::mutex> lock(tap_mu);
      tap(t.name, f, first);
    }
    for (int id : op.inputs)
      if (id != g.input && g.tensor(id).last_use == static_cast<int>(i))
        live[static_cast<size_t>(id)] = {};
  }
  if (profile) {
    std::lock_guard<std::mutex> lock(profile_mu);
    op_seconds.resize(g.ops.size());
    op_images.resize(g.ops.size());
    for (size_t i = 0; i < g.ops.size(); ++i) op_seconds[i] += seconds[i], op_images[i] += n;
  }
}

}  // namespace engine
