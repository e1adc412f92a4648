// models/head.h: the trainable classifier head on the 2048-d Inception bottleneck:
//   Dense(in -> h1) ReLU Dropout(p) [Dense(h_k -> h_k+1) ReLU Dropout(p)]... Dense(-> K),
//   softmax cross-entropy (optional per-class weights), RMSProp (TF1 or torch formula) with an
//   exponentially decaying learning rate. Defaults: 2048 -> 512 -> 512 -> K, p = 0.5.
// Weights are Glorot-uniform (limit sqrt(6/(in+out))) drawn from Philox4x32-10 keyed by the seed
// (portable: no std:: distribution), biases zero. Parameters, gradients and the two optimizer
// slots live in ONE 64-byte aligned allocation (HeadParams), four equal sections of P floats, each
// laid out by HeadLayout (kernel (in,out) then bias (out) per layer, Keras layout, every tensor
// starting on a 16-float boundary; padding is zero in params/grads and stays so). One RMSProp
// launch updates the whole parameter section. HeadCpu runs it on the CPU; HeadCuda (models/
// head_cuda.cu, ENGINE_HAVE_CUDA only) has the same API on the GPU with the step in a CUDA graph.
// Checkpoints (save_state/load_state) hold params, ms, mom, step and the config: resuming is bit
// for bit the same as never stopping (dropout masks depend only on (seed, step)).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/inception_contract.h"
#include "engine/tensor.h"
#include "kernels/rmsprop.h"

namespace engine {

struct HeadConfig {
  int64_t input = kBottleneckSize;
  std::vector<int64_t> hidden{512, 512};
  int64_t classes = 2;
  float dropout = 0.5f;  // rate of dropping, in [0, 1); 0 disables dropout
  uint64_t seed = 0;
  RmsPropConfig optimizer;
  std::vector<float> class_weights;  // empty: all 1; else `classes` non-negative values
  void validate() const;             // throws naming the bad field
};

struct HeadLayer {
  int64_t in = 0, out = 0;
  int64_t kernel_off = 0, bias_off = 0;  // offsets inside one section
};

struct HeadLayout {
  std::vector<HeadLayer> layers;  // hidden.size() + 1 layers, dense_1 .. dense_L
  int64_t section = 0;            // P: padded length of one section
  static HeadLayout of(const HeadConfig& c);
};

enum class HeadSection { Params = 0, Grads = 1, Ms = 2, Mom = 3 };

// The arena: 4 * P floats, sections in HeadSection order.
class HeadParams {
 public:
  explicit HeadParams(const HeadConfig& c);
  const HeadLayout& layout() const { return layout_; }
  int64_t section_size() const { return layout_.section; }
  float* section(HeadSection s) { return buf_.get() + static_cast<int>(s) * layout_.section; }
  const float* section(HeadSection s) const {
    return buf_.get() + static_cast<int>(s) * layout_.section;
  }
  // Views of layer l (0-based) in a section: kernel (in, out), bias (out).
  Tensor kernel(HeadSection s, int l);
  Tensor bias(HeadSection s, int l);
  float* data() { return buf_.get(); }
  const float* data() const { return buf_.get(); }
  int64_t total() const { return 4 * layout_.section; }

 private:
  HeadLayout layout_;
  HostBuffer buf_;
};

// Glorot-uniform kernels, zero biases, ms = ms_init, mom = 0, grads 0: the whole arena.
void head_init_arena(const HeadConfig& c, const HeadLayout& layout, float* arena);

// Checkpoint file (HDF5, format "melanoma-head-state" version 1): root attributes for the config
// and step, datasets /params, /ms, /mom of P floats (the arena sections, padding included).
void head_save_state(const std::string& path, const HeadConfig& c, const HeadParams& p,
                     int64_t step);
struct HeadState {
  HeadConfig config;
  std::vector<float> params, ms, mom;
  int64_t step = 0;
};
HeadState head_load_state(const std::string& path);
// The state of a fresh head: head_init_arena's params and slots, step 0 (what HeadCpu(c) holds).
HeadState head_initial_state(const HeadConfig& c);
// The Keras head file (tools/train's head_keras.h5): models/head_keras.h.

// What the training loop (models/head_trainer.h) needs of a head, on either device: HeadCpu and
// HeadCuda both are one. The state it saves is device-independent (params, ms, mom, step), so a
// run checkpointed on one device resumes on the other.
class HeadBackend {
 public:
  virtual ~HeadBackend() = default;
  // One training step (forward with dropout keyed by (seed, step), loss, backward, RMSProp,
  // step + 1); returns the loss of the forward pass.
  virtual float train_step(const float* x, const int32_t* y, int64_t n) = 0;
  // Softmax probabilities (n, K) of host rows x, no dropout, into host `probs`.
  virtual void predict(const float* x, int64_t n, float* probs) = 0;
  virtual int64_t step() const = 0;
  virtual const HeadConfig& config() const = 0;
  virtual void save_state(const std::string& path) const = 0;  // head_save_state's file
  virtual const char* device() const = 0;                      // "cpu" / "cuda"
};

class HeadCpu final : public HeadBackend {
 public:
  explicit HeadCpu(const HeadConfig& c);
  explicit HeadCpu(const HeadState& s);  // resume from a checkpoint

  // Forward (dropout keyed by (seed, step)), loss, backward, one RMSProp update; returns the loss
  // of the forward pass (before the update).
  float train_step(const float* x, const int32_t* y, int64_t n) override;
  // Forward + backward into the gradient section, no update, dropout as in train_step at the
  // current step (or none when dropout=false). Returns the loss.
  float forward_backward(const float* x, const int32_t* y, int64_t n, bool dropout = true);
  // Softmax probabilities (n, K), no dropout.
  void predict(const float* x, int64_t n, float* probs) override;
  int64_t step() const override { return step_; }
  // Sets the optimizer step counter (the decayed lr and the dropout key of the next step): with
  // params() (parameter and optimizer-slot sections) the whole training state can be imposed,
  // e.g. to teacher-force one step from another implementation's state.
  void set_step(int64_t s) { step_ = s; }
  const HeadConfig& config() const override { return cfg_; }
  HeadParams& params() { return arena_; }
  const HeadParams& params() const { return arena_; }
  // Copies a layer's kernel (in*out) and bias (out) into the parameter section.
  void set_layer(int l, const float* kernel, const float* bias);

  void save_state(const std::string& path) const override {
    head_save_state(path, cfg_, arena_, step_);
  }
  const char* device() const override { return "cpu"; }
  static HeadCpu load_state(const std::string& path) { return HeadCpu(head_load_state(path)); }

 private:
  void ensure_batch(int64_t n);
  float* forward(const float* x, int64_t n, bool dropout);  // returns logits

  HeadConfig cfg_;
  HeadParams arena_;
  int64_t step_ = 0;
  int64_t batch_ = 0;
  std::vector<std::vector<float>> act_, drop_;  // per hidden layer: ReLU output, dropout output
  std::vector<float> logits_, dlogits_, gbuf_, dbuf_;
};

#ifdef ENGINE_HAVE_CUDA
// The same head on the GPU (models/head_cuda.cu): one cudaMalloc holds the arena (4 sections of
// P floats, same layout), the activations and batch for up to `max_batch` rows, the labels, the
// step counter, the loss and cuBLAS's workspace. Every copy runs on the head's own stream. The
// first train_step at a batch size runs eagerly (modules load, cuBLAS picks its kernels outside
// any capture) and then captures the whole step (forward, loss, backward, RMSProp, step
// increment) into a CUDA graph; later steps at that size copy the batch in and replay it. The
// step counter lives on the device (dropout and RMSProp read it there, so every replay sees the
// current step); step() returns a host mirror kept in step. Masks and updates match HeadCpu's
// kernels (dropout and RMSProp bit for bit; GEMMs and exp/log to float rounding).
class HeadCuda final : public HeadBackend {
 public:
  static constexpr int64_t kDefaultMaxBatch = 128;
  explicit HeadCuda(const HeadConfig& c, int64_t max_batch = kDefaultMaxBatch);
  explicit HeadCuda(const HeadState& s, int64_t max_batch = kDefaultMaxBatch);
  ~HeadCuda() override;
  HeadCuda(const HeadCuda&) = delete;
  HeadCuda& operator=(const HeadCuda&) = delete;
  HeadCuda(HeadCuda&&) noexcept;
  HeadCuda& operator=(HeadCuda&&) noexcept;

  // Host x, y; n in [1, max_batch].
  float train_step(const float* x, const int32_t* y, int64_t n) override;
  // Host x, probs; any n >= 0 (done in chunks of max_batch rows).
  void predict(const float* x, int64_t n, float* probs) override;
  int64_t step() const override { return step_; }
  int64_t max_batch() const;
  const HeadConfig& config() const override { return cfg_; }
  const char* device() const override { return "cuda"; }
  void copy_arena_to(HeadParams& host) const;  // all 4 sections, device -> host
  // Replaces the whole training state (params, ms, mom, step; grads zeroed), e.g. to
  // teacher-force a step from another implementation's state.
  void set_state(const HeadState& s);
  void set_layer(int l, const float* kernel, const float* bias);
  void save_state(const std::string& path) const override;
  static HeadCuda load_state(const std::string& path) { return HeadCuda(head_load_state(path)); }

  struct Impl;  // device state; defined in head_cuda.cu only

 private:
  HeadConfig cfg_;
  std::unique_ptr<Impl> impl_;  // the CUDA types stay out of this header
  int64_t step_ = 0;            // mirror of the device counter, advanced by train_step
};
#endif

}  // namespace engine
