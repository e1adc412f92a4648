// tests/test_sha256.cpp: SHA-256 (engine/sha256.h, OpenSSL libcrypto) against independent
// references: the FIPS 180-4 example vectors, and Python hashlib values for inputs around the
// padding boundaries and for a file streamed across read boundaries.
// Run: ./test_sha256 (writes only under the system temporary directory).
#include <gtest/gtest.h>

#include "cache_test_util.h"

using namespace engine;
using namespace engine::test;

// ------------------------------------------------------------------------------------ SHA-256
TEST(Sha256, FipsVectors) {
  auto h = [](const std::string& s) {
    return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(h(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(h("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(h("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(h("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklm"
              "nopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(h(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // Lengths around the 56-byte padding limit and the 64-byte block (values from Python hashlib).
  const std::pair<size_t, const char*> cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"}};
  for (auto [n, want] : cases) {
    std::string s(n, 'a');
    EXPECT_EQ(sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), n), want) << "length " << n;
  }
}

TEST(Sha256, FileIsStreamedAcrossReadBoundaries) {
  TempDir dir;
  std::string bytes(3 * (1 << 20) + 17, '\0');  // three full 1 MiB reads and a tail
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i % 251);
  write_bytes(dir.file("img.bin"), bytes);
  EXPECT_EQ(sha256_file(dir.file("img.bin")),
            "fe2aaf82bfa2ffec207a0c6fa7ce7d4af268d67e2672fdaec675f3f9b65d0854");  // hashlib
  write_bytes(dir.file("a.bin"), std::string(1000000, 'a'));
  EXPECT_EQ(sha256_file(dir.file("a.bin")),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_ONE_LINE_ERROR(error_of([&] { sha256_file(dir.file("missing.jpg")); }),
                        dir.file("missing.jpg"));
}
