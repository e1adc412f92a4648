// engine/sha256.h: SHA-256 (FIPS 180-4), streaming, computed by OpenSSL's libcrypto (EVP). Content
// hashes of images (the cache's key for "changed"), the weights' fingerprint, and the checksum of
// cache journal pieces. Tests: tests/test_sha256.cpp (FIPS 180 vectors, padding boundaries).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace engine {

// Streaming SHA-256: update() any number of times, then digest() or hex() once. Move-only (it
// owns an EVP context); a libcrypto failure throws engine::Error naming the call.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const uint8_t* p, size_t n);
  std::array<uint8_t, 32> digest();
  std::string hex();  // lower-case

 private:
  struct CtxFree {
    void operator()(evp_md_ctx_st* c) const;
  };
  std::unique_ptr<evp_md_ctx_st, CtxFree> ctx_;
};

std::string sha256_hex(const uint8_t* data, size_t size);  // lower-case hex
std::string sha256_file(const std::string& path);          // throws Error naming the file

}  // namespace engine
