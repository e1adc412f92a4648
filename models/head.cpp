// models/head.cpp: the CPU classifier head (models/head.h): arena layout and Glorot init,
// forward/backward through the dense_grad, dropout and softmax_xent kernels, the fused RMSProp
// update, and the HDF5 checkpoint (written with the HDF5 C API, every call checked; read back
// through engine/hdf5_io.h). The Keras head file is models/head_keras.{h,cpp}.
#include "models/head.h"

#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "kernels/dense_grad.h"
#include "kernels/dropout.h"
#include "kernels/softmax_xent.h"

namespace engine {

// ---------------------------------------------------------------------------------------------
// Config, layout, arena
// ---------------------------------------------------------------------------------------------
void HeadConfig::validate() const {
  ENGINE_CHECK(input >= 1, "HeadConfig: input must be >= 1, got ", input);
  for (size_t i = 0; i < hidden.size(); ++i)
    ENGINE_CHECK(hidden[i] >= 1, "HeadConfig: hidden[", i, "] must be >= 1, got ", hidden[i]);
  ENGINE_CHECK(classes >= 2, "HeadConfig: classes must be >= 2, got ", classes);
  ENGINE_CHECK(dropout >= 0.f && dropout < 1.f, "HeadConfig: dropout must be in [0, 1), got ",
               dropout);
  ENGINE_CHECK(class_weights.empty() || static_cast<int64_t>(class_weights.size()) == classes,
               "HeadConfig: class_weights has ", class_weights.size(), " values for ", classes,
               " classes");
  for (float w : class_weights)
    ENGINE_CHECK(w >= 0.f && std::isfinite(w), "HeadConfig: class weight ", w, " is not >= 0");
  ENGINE_CHECK(optimizer.lr > 0 && optimizer.rho >= 0 && optimizer.rho < 1 && optimizer.eps > 0 &&
                   optimizer.momentum >= 0 && optimizer.decay_rate > 0,
               "HeadConfig: bad optimizer settings (lr ", optimizer.lr, ", rho ", optimizer.rho,
               ", eps ", optimizer.eps, ", momentum ", optimizer.momentum, ", decay_rate ",
               optimizer.decay_rate, ")");
}

HeadLayout HeadLayout::of(const HeadConfig& c) {
  c.validate();
  auto pad = [](int64_t v) { return (v + 15) / 16 * 16; };
  HeadLayout L;
  int64_t in = c.input, off = 0;
  std::vector<int64_t> outs = c.hidden;
  outs.push_back(c.classes);
  for (int64_t out : outs) {
    HeadLayer l;
    l.in = in;
    l.out = out;
    l.kernel_off = off;
    off += pad(in * out);
    l.bias_off = off;
    off += pad(out);
    L.layers.push_back(l);
    in = out;
  }
  L.section = off;
  return L;
}

HeadParams::HeadParams(const HeadConfig& c) : layout_(HeadLayout::of(c)) {
  buf_ = alloc_host(4 * layout_.section);
  std::memset(buf_.get(), 0, sizeof(float) * 4 * layout_.section);
}

Tensor HeadParams::kernel(HeadSection s, int l) {
  const HeadLayer& L = layout_.layers.at(static_cast<size_t>(l));
  return Tensor::view(section(s) + L.kernel_off, Shape{L.in, L.out});
}
Tensor HeadParams::bias(HeadSection s, int l) {
  const HeadLayer& L = layout_.layers.at(static_cast<size_t>(l));
  return Tensor::view(section(s) + L.bias_off, Shape{L.out});
}

void head_init_arena(const HeadConfig& c, const HeadLayout& layout, float* arena) {
  const int64_t P = layout.section;
  std::memset(arena, 0, sizeof(float) * 4 * P);
  for (size_t l = 0; l < layout.layers.size(); ++l) {
    const HeadLayer& L = layout.layers[l];
    const double limit = std::sqrt(6.0 / static_cast<double>(L.in + L.out));
    float* w = arena + L.kernel_off;
    const int64_t count = L.in * L.out;
    // Philox stream 0x100 + l, step 0: 24-bit uniforms in [0, 1) -> [-limit, limit).
    for (int64_t g = 0; g < (count + 3) / 4; ++g) {
      const Philox4x32 r =
          dropout_words(c.seed, 0, 0x100u + static_cast<uint32_t>(l), static_cast<uint64_t>(g));
      for (int j = 0; j < 4 && g * 4 + j < count; ++j) {
        const double u = static_cast<double>(r.v[j] >> 8) * (1.0 / 16777216.0);
        w[g * 4 + j] = static_cast<float>((2.0 * u - 1.0) * limit);
      }
    }
  }
  const float ms0 = c.optimizer.ms_init();
  float* ms = arena + 2 * P;
  for (int64_t i = 0; i < P; ++i) ms[i] = ms0;
}

HeadState head_initial_state(const HeadConfig& c) {
  HeadParams a(c);
  head_init_arena(c, a.layout(), a.data());
  HeadState s;
  s.config = c;
  const int64_t P = a.section_size();
  auto take = [&](HeadSection sec) {
    return std::vector<float>(a.section(sec), a.section(sec) + P);
  };
  s.params = take(HeadSection::Params), s.ms = take(HeadSection::Ms),
  s.mom = take(HeadSection::Mom);
  return s;
}

// ---------------------------------------------------------------------------------------------
// HeadCpu
// ---------------------------------------------------------------------------------------------
HeadCpu::HeadCpu(const HeadConfig& c) : cfg_(c), arena_(c) {
  head_init_arena(cfg_, arena_.layout(), arena_.data());
}

HeadCpu::HeadCpu(const HeadState& s) : cfg_(s.config), arena_(s.config), step_(s.step) {
  const int64_t P = arena_.section_size();
  ENGINE_CHECK(static_cast<int64_t>(s.params.size()) == P &&
                   static_cast<int64_t>(s.ms.size()) == P &&
                   static_cast<int64_t>(s.mom.size()) == P,
               "HeadCpu: state sections have ", s.params.size(), "/", s.ms.size(), "/",
               s.mom.size(), " floats, the config needs ", P);
  std::memcpy(arena_.section(HeadSection::Params), s.params.data(), sizeof(float) * P);
  std::memcpy(arena_.section(HeadSection::Ms), s.ms.data(), sizeof(float) * P);
  std::memcpy(arena_.section(HeadSection::Mom), s.mom.data(), sizeof(float) * P);
}

void HeadCpu::set_layer(int l, const float* kernel, const float* bias) {
  Tensor k = arena_.kernel(HeadSection::Params, l), b = arena_.bias(HeadSection::Params, l);
  std::memcpy(k.data(), kernel, sizeof(float) * k.numel());
  std::memcpy(b.data(), bias, sizeof(float) * b.numel());
}

void HeadCpu::ensure_batch(int64_t n) {
  ENGINE_CHECK(n >= 1, "HeadCpu: batch size must be >= 1, got ", n);
  if (n == batch_) return;
  batch_ = n;
  const size_t nh = cfg_.hidden.size();
  act_.assign(nh, {});
  drop_.assign(nh, {});
  int64_t widest = cfg_.input;
  for (size_t i = 0; i < nh; ++i) {
    act_[i].resize(static_cast<size_t>(n * cfg_.hidden[i]));
    drop_[i].resize(static_cast<size_t>(n * cfg_.hidden[i]));
    widest = std::max(widest, cfg_.hidden[i]);
  }
  widest = std::max(widest, cfg_.classes);
  logits_.resize(static_cast<size_t>(n * cfg_.classes));
  dlogits_.resize(logits_.size());
  gbuf_.resize(static_cast<size_t>(n * widest));
  dbuf_.resize(static_cast<size_t>(n * widest));
}

float* HeadCpu::forward(const float* x, int64_t n, bool dropout) {
  ensure_batch(n);
  const HeadLayout& L = arena_.layout();
  const float* P = arena_.section(HeadSection::Params);
  const float* in = x;
  const bool drop = dropout && cfg_.dropout > 0.f;
  for (size_t l = 0; l < L.layers.size(); ++l) {
    const HeadLayer& ly = L.layers[l];
    const bool last = l + 1 == L.layers.size();
    float* out = last ? logits_.data() : act_[l].data();
    sgemm_rowmajor_cpu(false, false, n, ly.out, ly.in, 1.f, in, ly.in, P + ly.kernel_off, ly.out,
                       0.f, out, ly.out, "head forward");
    bias_act_forward_cpu(out, P + ly.bias_off, n, ly.out, !last);
    if (!last) {
      if (drop) {
        dropout_forward_cpu(out, drop_[l].data(), n * ly.out, cfg_.dropout,
                            DropoutKey{cfg_.seed, step_, static_cast<uint32_t>(l + 1)});
        in = drop_[l].data();
      } else {
        in = out;
      }
    }
  }
  return logits_.data();
}

float HeadCpu::forward_backward(const float* x, const int32_t* y, int64_t n, bool dropout) {
  forward(x, n, dropout);
  const bool drop = dropout && cfg_.dropout > 0.f;
  const float loss = softmax_xent_cpu(
      logits_.data(), y, cfg_.class_weights.empty() ? nullptr : cfg_.class_weights.data(), n,
      cfg_.classes, dlogits_.data());
  const HeadLayout& L = arena_.layout();
  const float* P = arena_.section(HeadSection::Params);
  float* G = arena_.section(HeadSection::Grads);
  const float* g = dlogits_.data();  // dLoss/d(pre-activation) of layer l
  for (size_t li = L.layers.size(); li-- > 0;) {
    const HeadLayer& ly = L.layers[li];
    const float* in = li == 0 ? x : (drop ? drop_[li - 1].data() : act_[li - 1].data());
    sgemm_rowmajor_cpu(true, false, ly.in, ly.out, n, 1.f, in, ly.in, g, ly.out, 0.f,
                       G + ly.kernel_off, ly.out, "head backward dW");
    bias_grad_cpu(g, G + ly.bias_off, n, ly.out);
    if (li == 0) break;
    // d(input of layer li) = g @ W^T, then back through dropout and ReLU of layer li-1.
    sgemm_rowmajor_cpu(false, true, n, ly.in, ly.out, 1.f, g, ly.out, P + ly.kernel_off, ly.out,
                       0.f, dbuf_.data(), ly.in, "head backward dx");
    if (drop)
      dropout_backward_cpu(dbuf_.data(), dbuf_.data(), n * ly.in, cfg_.dropout,
                           DropoutKey{cfg_.seed, step_, static_cast<uint32_t>(li)});
    relu_backward_cpu(dbuf_.data(), act_[li - 1].data(), gbuf_.data(), n * ly.in);
    g = gbuf_.data();
  }
  return loss;
}

float HeadCpu::train_step(const float* x, const int32_t* y, int64_t n) {
  const float loss = forward_backward(x, y, n, true);
  rmsprop_update_cpu(arena_.section(HeadSection::Params), arena_.section(HeadSection::Grads),
                     arena_.section(HeadSection::Ms), arena_.section(HeadSection::Mom),
                     arena_.section_size(), cfg_.optimizer, &step_);
  return loss;
}

void HeadCpu::predict(const float* x, int64_t n, float* probs) {
  const float* z = forward(x, n, false);
  softmax_cpu(z, probs, n, cfg_.classes);
}

// ---------------------------------------------------------------------------------------------
// HDF5: checkpoint
// ---------------------------------------------------------------------------------------------
namespace {
constexpr const char* kStateFormat = "melanoma-head-state";
constexpr int64_t kStateVersion = 1;

}  // namespace

void head_save_state(const std::string& path, const HeadConfig& c, const HeadParams& p,
                     int64_t step) {
  H5File f = H5File::create(path);
  const hid_t r = f.id();
  // Strings as fixed-length ASCII attributes (what h5py writes for numpy 'S' values).
  const H5Strings fixed = H5Strings::FixedAscii;
  h5_write_string_attr(r, "format", kStateFormat, path, fixed);
  h5_write_int_attr(r, "format_version", kStateVersion, path);
  h5_write_int_attr(r, "step", step, path);
  h5_write_int_attr(r, "input", c.input, path);
  h5_write_int_attr(r, "classes", c.classes, path);
  h5_write_int_attr(r, "num_hidden", static_cast<int64_t>(c.hidden.size()), path);
  for (size_t i = 0; i < c.hidden.size(); ++i)
    h5_write_int_attr(r, "hidden_" + std::to_string(i), c.hidden[i], path);
  h5_write_double_attr(r, "dropout", c.dropout, path);
  // The seed is a uint64: stored as its int64 bit pattern.
  h5_write_int_attr(r, "seed", static_cast<int64_t>(c.seed), path);
  const RmsPropConfig& o = c.optimizer;
  h5_write_string_attr(r, "optimizer", o.formula == RmsPropFormula::TF1 ? "tf1" : "torch", path,
                       fixed);
  h5_write_double_attr(r, "lr", o.lr, path);
  h5_write_double_attr(r, "rho", o.rho, path);
  h5_write_double_attr(r, "momentum", o.momentum, path);
  h5_write_double_attr(r, "eps", o.eps, path);
  h5_write_double_attr(r, "decay_rate", o.decay_rate, path);
  h5_write_int_attr(r, "decay_steps", o.decay_steps, path);
  h5_write_int_attr(r, "staircase", o.staircase ? 1 : 0, path);
  h5_write_int_attr(r, "num_class_weights", static_cast<int64_t>(c.class_weights.size()), path);
  if (!c.class_weights.empty())
    h5_write_floats(r, "class_weights", c.class_weights.data(), {c.class_weights.size()}, path);
  const hsize_t P = static_cast<hsize_t>(p.section_size());
  h5_write_floats(r, "params", p.section(HeadSection::Params), {P}, path);
  h5_write_floats(r, "ms", p.section(HeadSection::Ms), {P}, path);
  h5_write_floats(r, "mom", p.section(HeadSection::Mom), {P}, path);
  f.close();  // checked: a failed final flush (disk full) is reported
}

HeadState head_load_state(const std::string& path) {
  H5File f = H5File::open_read(path);
  const hid_t r = f.id();
  const std::string fmt = h5_read_string_attr(r, "format", path);
  if (fmt != kStateFormat) fail(path, ": format '", fmt, "', expected '", kStateFormat, "'");
  const int64_t ver = h5_read_int_attr(r, "format_version", path);
  if (ver != kStateVersion) fail(path, ": format_version ", ver, ", expected ", kStateVersion);
  HeadState s;
  HeadConfig& c = s.config;
  s.step = h5_read_int_attr(r, "step", path);
  c.input = h5_read_int_attr(r, "input", path);
  c.classes = h5_read_int_attr(r, "classes", path);
  const int64_t nh = h5_read_int_attr(r, "num_hidden", path);
  if (nh < 0 || nh > 64) fail(path, ": num_hidden ", nh, " out of range");
  c.hidden.clear();
  for (int64_t i = 0; i < nh; ++i)
    c.hidden.push_back(h5_read_int_attr(r, "hidden_" + std::to_string(i), path));
  c.dropout = static_cast<float>(h5_read_double_attr(r, "dropout", path));
  c.seed = static_cast<uint64_t>(h5_read_int_attr(r, "seed", path));
  const std::string opt = h5_read_string_attr(r, "optimizer", path);
  if (opt != "tf1" && opt != "torch") fail(path, ": optimizer '", opt, "', expected tf1 or torch");
  RmsPropConfig& o = c.optimizer;
  o.formula = opt == "tf1" ? RmsPropFormula::TF1 : RmsPropFormula::Torch;
  o.lr = h5_read_double_attr(r, "lr", path);
  o.rho = h5_read_double_attr(r, "rho", path);
  o.momentum = h5_read_double_attr(r, "momentum", path);
  o.eps = h5_read_double_attr(r, "eps", path);
  o.decay_rate = h5_read_double_attr(r, "decay_rate", path);
  o.decay_steps = h5_read_int_attr(r, "decay_steps", path);
  o.staircase = h5_read_int_attr(r, "staircase", path) != 0;
  const int64_t ncw = h5_read_int_attr(r, "num_class_weights", path);
  if (ncw > 0) c.class_weights = h5_read_float_checked(r, "class_weights", Shape{ncw}, path);
  c.validate();
  const int64_t P = HeadLayout::of(c).section;
  s.params = h5_read_float_checked(r, "params", Shape{P}, path);
  s.ms = h5_read_float_checked(r, "ms", Shape{P}, path);
  s.mom = h5_read_float_checked(r, "mom", Shape{P}, path);
  return s;
}

}  // namespace engine
