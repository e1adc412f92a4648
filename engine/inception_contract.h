// engine/inception_contract.h: the two numbers every part of the engine agrees on about the
// network: Inception v3 takes kInceptionInput x kInceptionInput x 3 pixels (engine/preprocessing.h
// makes them) and gives kBottleneckSize values per image (the bottleneck that the cache stores,
// engine/bottleneck_cache.h, and the head reads, models/head.h). Defined here once, in a header
// of its own, so the cache and the model loader can name them without pulling in image decoding
// (engine/preprocessing.h) or the weight loader (models/inception_weights.h).
#pragma once
#include <cstdint>

namespace engine {

constexpr int64_t kInceptionInput = 299;   // input height = width, pixels
constexpr int64_t kBottleneckSize = 2048;  // pooled mixed10 features per image

}  // namespace engine
