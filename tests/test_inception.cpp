// tests/test_inception.cpp: the whole Inception v3 CPU forward against the PyTorch reference
// (tests/reference/make_reference.py: torch ops, Keras semantics, computed in float64 and stored
// as float32): the stem, every mixed block, the bottleneck and the predictions top, for the
// reference images, from both the 1-based and the 0-based /model_weights file. Also checks that
// a second forward pass allocates no new activation memory.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "inception_reference.h"
#include "models/inception_v3.h"
#include "test_util.h"

using namespace engine;
using engine::test::reference_file;
using namespace engine::test;

namespace {

void check_against_reference(const std::string& weights_file, int64_t micro_batch) {
  Reference ref = open_reference();
  InceptionWeights w = load_inception_v3_weights(weights_file);
  InceptionV3Cpu model(w, micro_batch);
  const int64_t n = ref.inputs.n();
  ASSERT_GE(n, 2) << "reference must hold at least 2 images";
  Tensor bottleneck(Shape{n, kBottleneckSize});
  int taps_seen = 0;
  model.forward(
      ref.inputs, bottleneck, [&](const std::string& name, const Tensor& t, int64_t first) {
        // The tap sees images [first, first + t.n()) of the batch: compare with that slice.
        Tensor all = h5_read_tensor(ref.file.id(), "/blocks/" + name, ref.file.path());
        const int64_t per_image = all.numel() / all.dim(0);
        std::vector<int64_t> dims = all.shape().dims();
        dims[0] = t.n();
        Tensor want = Tensor::view(all.data() + first * per_image, Shape(dims));
        const double scale = is_shallow_block(name) ? kShallowAtolScale : kBlockAtolScale;
        auto r =
            engine::test::tensors_close(t, want, scale * engine::test::max_abs(all), kBlockRtol,
                                        name + " images " + std::to_string(first) + "+");
        EXPECT_TRUE(r);
        std::printf("  %s\n", r.message());
        ++taps_seen;
      });
  // stem + mixed0..mixed10, once per micro-batch
  EXPECT_EQ(taps_seen, 12 * ((n + micro_batch - 1) / micro_batch));
  Tensor want = h5_read_tensor(ref.file.id(), "/blocks/bottleneck", ref.file.path());
  auto r = engine::test::tensors_close(bottleneck, want,
                                       kBottleneckAtolScale * engine::test::max_abs(want),
                                       kBottleneckRtol, "bottleneck");
  EXPECT_TRUE(r);
  std::printf("  %s\n", r.message());
  if (model.has_top()) {
    Tensor probs(Shape{n, model.top_classes()});
    model.predict_top(bottleneck, probs);
    Tensor pw = h5_read_tensor(ref.file.id(), "/blocks/predictions", ref.file.path());
    // Softmax outputs of 1000 classes are ~1e-3: judged absolutely at 1e-6 (1e-3 relative).
    EXPECT_TRUE(engine::test::tensors_close(probs, pw, 1e-6, 1e-4, "predictions"));
  }
}

}  // namespace

TEST(InceptionV3Cpu, BlocksAndBottleneckMatchPyTorch_OneBasedFile) {
  check_against_reference(reference_file("inception_v3_1based.h5"), 1);  // default micro-batch
}

TEST(InceptionV3Cpu, BlocksAndBottleneckMatchPyTorch_ZeroBasedModelWeightsFile_WholeBatch) {
  check_against_reference(reference_file("inception_v3_0based_model_weights.h5"), 2);
}

TEST(InceptionV3Cpu, RepeatedForwardAllocatesNothingNew) {
  InceptionWeights w = load_inception_v3_weights(reference_file("inception_v3_1based.h5"));
  InceptionV3Cpu model(w);
  Tensor x = Tensor::zeros(Shape{1, 299, 299, 3});
  Tensor b(Shape{1, kBottleneckSize});
  model.forward(x, b);
  const int64_t bytes = model.activation_bytes(), allocs = model.activation_allocations();
  model.forward(x, b);
  model.forward(x, b);
  EXPECT_EQ(model.activation_bytes(), bytes);
  EXPECT_EQ(model.activation_allocations(), allocs);
  // The live set at 1 image is a few of the largest activations (149x149x32 floats = 2.8 MB,
  // 147x147x64 = 5.5 MB), far less than the ~40 MB of all activations together.
  EXPECT_LT(bytes, 30ll << 20);
}

TEST(InceptionV3Cpu, RejectsWrongInputShape) {
  InceptionWeights w = load_inception_v3_weights(reference_file("inception_v3_1based.h5"));
  InceptionV3Cpu model(w);
  Tensor x = Tensor::zeros(Shape{1, 224, 224, 3});
  Tensor b(Shape{1, kBottleneckSize});
  EXPECT_THROW(model.forward(x, b), Error);
}

TEST(InceptionV3Cpu, BatchInvariantModeGivesBitIdenticalBottlenecks) {
  // tools/extract relies on this: an image's bottleneck must not depend on which batch it was in.
  Reference ref = open_reference();
  InceptionV3Cpu model(load_inception_v3_weights(reference_file("inception_v3_1based.h5")));
  model.set_batch_invariant(true);
  Tensor both(Shape{2, kBottleneckSize});
  model.forward(ref.inputs, both);
  for (int64_t i = 0; i < 2; ++i) {
    const int64_t image = 299 * 299 * 3;
    Tensor one_in = Tensor::view(ref.inputs.data() + i * image, Shape{1, 299, 299, 3});
    Tensor one(Shape{1, kBottleneckSize});
    model.forward(one_in, one);
    EXPECT_EQ(0, std::memcmp(one.data(), both.data() + i * kBottleneckSize,
                             kBottleneckSize * sizeof(float)))
        << "image " << i << " alone differs from the same image in a batch of 2";
  }
}
