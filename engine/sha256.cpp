// engine/sha256.cpp: SHA-256 through OpenSSL's EVP digest API (see sha256.h). libcrypto picks the
// fastest implementation the CPU offers (SHA-NI, AVX2); every call is checked.
#include "engine/sha256.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "engine/error.h"

namespace engine {

namespace {
// The newest libcrypto error, so a failure says why ("" when OpenSSL queued none).
std::string openssl_reason() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return std::string(" (") + buf + ")";
}
}  // namespace

#define OPENSSL_CHECK(stmt)                                                                   \
  do {                                                                                        \
    if ((stmt) != 1)                                                                          \
      ::engine::fail("SHA-256: ", #stmt, " failed", openssl_reason(), " [at ", __FILE__, ":", \
                     __LINE__, "]");                                                          \
  } while (0)

void Sha256::CtxFree::operator()(evp_md_ctx_st* c) const { EVP_MD_CTX_free(c); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_) fail("SHA-256: EVP_MD_CTX_new failed", openssl_reason());
  OPENSSL_CHECK(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr));
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::update(const uint8_t* p, size_t n) {
  if (n > 0) OPENSSL_CHECK(EVP_DigestUpdate(ctx_.get(), p, n));
}

std::array<uint8_t, 32> Sha256::digest() {
  std::array<uint8_t, 32> out{};
  unsigned len = 0;
  OPENSSL_CHECK(EVP_DigestFinal_ex(ctx_.get(), out.data(), &len));
  if (len != out.size()) fail("SHA-256: EVP_DigestFinal_ex gave ", len, " bytes, expected 32");
  return out;
}

std::string Sha256::hex() {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t b : digest()) s += kDigits[b >> 4], s += kDigits[b & 15];
  return s;
}

std::string sha256_hex(const uint8_t* data, size_t size) {
  Sha256 s;
  s.update(data, size);
  return s.hex();
}

std::string sha256_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open for hashing: ", std::strerror(errno));
  std::vector<uint8_t> buf(1 << 20);  // 1 MiB reads: images are streamed, never held whole
  Sha256 s;
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      fail(path, ": read error while hashing: ", std::strerror(e));
    }
    if (n == 0) break;
    s.update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return s.hex();
}

}  // namespace engine
