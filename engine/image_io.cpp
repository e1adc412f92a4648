// engine/image_io.cpp: JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit RGB, bit-exact
// with PIL 9.4's Image.open(...) -> ImageOps.exif_transpose -> .convert('RGB') for every input
// the tests cover (tests/test_image_io.cpp), with three deliberate choices:
//  - 16-bit PNG keeps the high byte of each sample (PIL does the same for RGB/RGBA/LA; for 16-bit
//    grayscale PIL opens mode "I" and convert('RGB') CLIPS at 255, turning most of the image
//    white; we keep the high byte there too, i.e. the image as a viewer shows it).
//  - Alpha (RGBA, LA, tRNS) is dropped, not composited over a background: PIL's convert('RGB').
//  - CMYK/YCCK JPEGs are taken as Adobe-inverted (as PIL does, Adobe marker or not) and converted
//    with PIL's formula R = nk - round(c * nk / 255), nk = 255 - k.
// DecodeOptions::jpeg_flavor = TensorFlow gives tf.io.decode_jpeg(channels=3)'s pixels instead
// (JDCT_IFAST, TF's CMYK formula; bit-exact, tests/test_keras.cpp).
// libjpeg warnings that mean damaged pixel data (premature end of file, bad Huffman code, ...)
// are errors here, whereas PIL ignores them and returns gray-filled or garbled pixels.
// Both libraries report errors through setjmp/longjmp; every libjpeg/libpng call is made inside
// one "guarded" function per library whose frame holds no C++ objects (all state lives in a job
// struct owned by the caller), so a longjmp never skips a destructor.
#include "engine/image_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>

// jpeglib.h needs size_t and FILE declared first, and jerror.h needs jpeglib.h (own blocks, so
// that clang-format keeps this order).
#include <jpeglib.h>

#include <jerror.h>  // JWRN_* message codes
#include <png.h>

#include "engine/error.h"

namespace engine {
namespace {

constexpr int64_t kMaxFileBytes = int64_t(512) << 20;

// One-line messages only: library strings are single lines, but never trust that.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

[[noreturn]] void fail_image(const std::string& name, const std::string& reason) {
  throw Error(one_line(name + ": " + reason));
}

void check_pixel_limit(const std::string& name, const char* fmt, int64_t w, int64_t h,
                       const DecodeOptions& opt) {
  if (w <= 0 || h <= 0) fail_image(name, std::string(fmt) + " header has zero width or height");
  if (w * h > opt.max_pixels)
    fail(name, ": ", fmt, " header claims ", w, " x ", h, " = ", w * h,
         " pixels, over the limit of ", opt.max_pixels,
         " (DecodeOptions::max_pixels; decompression bomb?); refused before decoding");
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation
// ---------------------------------------------------------------------------------------------

// Orientation (tag 0x0112) from IFD0 of a TIFF-structured EXIF block (starting at "II*\0" or
// "MM\0*"). Every read is bounds-checked; anything malformed gives 1 (leave the image alone),
// because a broken EXIF block says nothing reliable about the pixels.
int exif_orientation_from_tiff(const uint8_t* p, size_t n) {
  if (n < 8) return 1;
  bool le;
  if (p[0] == 'I' && p[1] == 'I')
    le = true;
  else if (p[0] == 'M' && p[1] == 'M')
    le = false;
  else
    return 1;
  auto u16 = [&](size_t off) -> uint32_t {
    return le ? uint32_t(p[off]) | uint32_t(p[off + 1]) << 8
              : uint32_t(p[off]) << 8 | uint32_t(p[off + 1]);
  };
  auto u32 = [&](size_t off) -> uint32_t {
    return le ? u16(off) | u16(off + 2) << 16 : u16(off) << 16 | u16(off + 2);
  };
  if (u16(2) != 42) return 1;
  uint64_t ifd = u32(4);
  if (ifd < 8 || ifd + 2 > n) return 1;
  uint32_t count = u16(ifd);
  // A count running past the end: read the entries that are there (PIL does the same).
  if (ifd + 2 + uint64_t(count) * 12 > n) count = uint32_t((n - ifd - 2) / 12);
  for (uint32_t i = 0; i < count; ++i) {
    size_t e = size_t(ifd + 2 + uint64_t(i) * 12);
    if (u16(e) != 0x0112) continue;
    uint32_t type = u16(e + 2), cnt = u32(e + 4);
    if (cnt < 1) return 1;
    uint32_t v;
    if (type == 3)
      v = u16(e + 8);  // SHORT, the standard type
    else if (type == 4)
      v = u32(e + 8);  // LONG: PIL accepts it too
    else
      return 1;
    return (v >= 1 && v <= 8) ? int(v) : 1;
  }
  return 1;
}

// Applies orientation 2..8 the way PIL's ImageOps.exif_transpose does (Image.transpose with
// FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90).
// For each output pixel (x, y) the source pixel is computed; W, H are the stored sizes.
Image8 apply_orientation(Image8 in, int orientation) {
  if (orientation <= 1 || orientation > 8) return in;
  const int64_t W = in.width, H = in.height;
  const bool swap = orientation >= 5;
  Image8 out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.rgb.resize(in.rgb.size());
  for (int64_t y = 0; y < out.height; ++y) {
    uint8_t* dst = out.rgb.data() + y * out.width * 3;
    for (int64_t x = 0; x < out.width; ++x) {
      int64_t sx, sy;
      switch (orientation) {
        case 2:
          sx = W - 1 - x;
          sy = y;
          break;
        case 3:
          sx = W - 1 - x;
          sy = H - 1 - y;
          break;
        case 4:
          sx = x;
          sy = H - 1 - y;
          break;
        case 5:
          sx = y;
          sy = x;
          break;
        case 6:
          sx = y;
          sy = H - 1 - x;
          break;
        case 7:
          sx = W - 1 - y;
          sy = H - 1 - x;
          break;
        default:
          sx = W - 1 - y;
          sy = x;
          break;  // 8
      }
      const uint8_t* s = in.rgb.data() + (sy * W + sx) * 3;
      dst[3 * x] = s[0], dst[3 * x + 1] = s[1], dst[3 * x + 2] = s[2];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------------------------

struct JpegErrorMgr {
  jpeg_error_mgr pub;
  jmp_buf jump;
  bool decoding = false;  // header read: extraneous bytes between markers are harmless
  char message[JMSG_LENGTH_MAX + 64] = {0};
};

// Warnings that mean the decoded pixels would be wrong (libjpeg fills what it cannot decode with
// gray or garbage and carries on).
bool jpeg_warning_is_corruption(int code, bool decoding) {
  switch (code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION: return true;
    case JWRN_EXTRANEOUS_DATA:  // during the scans: the entropy data did not end where it should
      return decoding;
    default:  // JFIF revision, unknown Adobe transform, bad ICC marker: metadata only
      return false;
  }
}

extern "C" void jpeg_error_exit_longjmp(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

extern "C" void jpeg_emit_message_strict(j_common_ptr cinfo, int msg_level) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  if (msg_level >= 0) return;  // trace messages
  err->pub.num_warnings++;
  if (!jpeg_warning_is_corruption(err->pub.msg_code, err->decoding)) return;
  char buf[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, buf);
  std::snprintf(err->message, sizeof err->message, "truncated or corrupt JPEG data (libjpeg: %s)",
                buf);
  longjmp(err->jump, 1);  // stop at once: decoding the rest of a broken file is wasted work
}

extern "C" void jpeg_output_message_silent(j_common_ptr) {}

// A progressive JPEG can hold thousands of tiny scans and make a small file cost minutes of CPU
// (the libjpeg-turbo "scan limit" advice; djpeg -maxscan). Real files have ~10.
constexpr int kMaxJpegScans = 1000;
extern "C" void jpeg_scan_limit_monitor(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxJpegScans) {
    auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
    std::snprintf(err->message, sizeof err->message,
                  "more than %d scans in a progressive JPEG (malicious file?)", kMaxJpegScans);
    longjmp(err->jump, 1);
  }
}

struct JpegJob {
  jpeg_decompress_struct cinfo;
  JpegErrorMgr err;
  jpeg_progress_mgr progress;
  bool created = false;
  // inputs
  const uint8_t* data = nullptr;
  size_t size = 0;
  int64_t dct_min_side = 0;
  // set by the header stage
  int64_t header_w = 0, header_h = 0;
  int orientation = 1;
  // set by the decode stage
  int out_w = 0, out_h = 0, comps = 0;
  std::vector<uint8_t> pixels;
  JpegJob() {
    std::memset(&cinfo, 0, sizeof cinfo);
    std::memset(&progress, 0, sizeof progress);
  }
  ~JpegJob() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

// Stage 1: header, markers. No C++ objects in this frame (see the file comment).
bool jpeg_read_header_guarded(JpegJob* j) {
  j->cinfo.err = jpeg_std_error(&j->err.pub);
  j->err.pub.error_exit = jpeg_error_exit_longjmp;
  j->err.pub.emit_message = jpeg_emit_message_strict;
  j->err.pub.output_message = jpeg_output_message_silent;
  if (setjmp(j->err.jump)) return false;
  jpeg_create_decompress(&j->cinfo);
  j->created = true;
  j->progress.progress_monitor = jpeg_scan_limit_monitor;
  j->cinfo.progress = &j->progress;
  jpeg_mem_src(&j->cinfo, j->data, static_cast<unsigned long>(j->size));
  jpeg_save_markers(&j->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&j->cinfo, TRUE);
  j->header_w = j->cinfo.image_width;
  j->header_h = j->cinfo.image_height;
  return true;
}

// Stage 2: decompression; j->pixels was sized by the caller from the computed output size.
bool jpeg_decode_guarded(JpegJob* j) {
  if (setjmp(j->err.jump)) return false;
  j->err.decoding = true;
  jpeg_start_decompress(&j->cinfo);
  if (int(j->cinfo.output_width) != j->out_w || int(j->cinfo.output_height) != j->out_h ||
      j->cinfo.output_components != j->comps) {
    std::snprintf(j->err.message, sizeof j->err.message,
                  "libjpeg output size %ux%ux%d differs from the computed %dx%dx%d",
                  j->cinfo.output_width, j->cinfo.output_height, j->cinfo.output_components,
                  j->out_w, j->out_h, j->comps);
    return false;
  }
  const size_t stride = size_t(j->out_w) * size_t(j->comps);
  while (j->cinfo.output_scanline < j->cinfo.output_height) {
    JSAMPROW row = j->pixels.data() + size_t(j->cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&j->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&j->cinfo);
  return true;
}

int exif_orientation_from_jpeg_markers(jpeg_decompress_struct* cinfo) {
  // PIL uses the first APP1 that starts with "Exif\0"; the TIFF header follows at offset 6.
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1 || m->data_length < 6) continue;
    if (std::memcmp(m->data, "Exif\0", 5) != 0) continue;
    return exif_orientation_from_tiff(m->data + 6, m->data_length - 6);
  }
  return 1;
}

// 4-byte CMYK pixels to 3-byte RGB ones, `pixel(s, o)` converting each; the two CMYK rules (TF's,
// PIL's) differ only in that function.
template <typename PixelFn>
std::vector<uint8_t> cmyk_to_rgb(const std::vector<uint8_t>& cmyk, PixelFn pixel) {
  const size_t n = cmyk.size() / 4;
  std::vector<uint8_t> rgb(n * 3);
  const uint8_t* s = cmyk.data();
  uint8_t* o = rgb.data();
  for (size_t i = 0; i < n; ++i, s += 4, o += 3) pixel(s, o);
  return rgb;
}

Image8 decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                   const DecodeOptions& opt) {
  JpegJob j;
  j.data = data;
  j.size = size;
  if (!jpeg_read_header_guarded(&j)) fail_image(name, std::string("JPEG: ") + j.err.message);
  check_pixel_limit(name, "JPEG", j.header_w, j.header_h, opt);
  j.orientation = opt.apply_exif_orientation ? exif_orientation_from_jpeg_markers(&j.cinfo) : 1;

  jpeg_decompress_struct& c = j.cinfo;
  // Same settings as PIL's decoder (libjpeg defaults): JDCT_ISLOW, fancy upsampling, so that the
  // pixels are bit-identical with the same libjpeg-turbo. TensorFlow flavour: decode_jpeg's
  // default JDCT_IFAST (tensorflow/core/kernels/image/decode_image_op.cc), fancy upsampling.
  const bool tf = opt.jpeg_flavor == DecodeOptions::JpegFlavor::TensorFlow;
  c.dct_method = tf ? JDCT_IFAST : JDCT_ISLOW;
  c.do_fancy_upsampling = TRUE;
  const bool cmyk = c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK;
  c.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;  // gray -> RGB is done by libjpeg
  int denom = 1;
  if (opt.dct_min_side > 0) {
    for (int d : {4, 2}) {
      if ((j.header_w + d - 1) / d >= opt.dct_min_side &&
          (j.header_h + d - 1) / d >= opt.dct_min_side) {
        denom = d;
        break;
      }
    }
  }
  c.scale_num = 1;
  c.scale_denom = static_cast<unsigned>(denom);
  j.out_w = int((j.header_w + denom - 1) / denom);
  j.out_h = int((j.header_h + denom - 1) / denom);
  j.comps = cmyk ? 4 : 3;
  j.pixels.resize(size_t(j.out_w) * size_t(j.out_h) * size_t(j.comps));
  if (!jpeg_decode_guarded(&j)) fail_image(name, std::string("JPEG: ") + j.err.message);

  Image8 img;
  img.width = j.out_w;
  img.height = j.out_h;
  if (!cmyk) {
    img.rgb = std::move(j.pixels);
  } else if (tf) {
    // tensorflow/core/lib/jpeg/jpeg_mem.cc: libjpeg's raw CMYK output s, integer division.
    const bool adobe = c.saw_Adobe_marker;
    img.rgb = cmyk_to_rgb(j.pixels, [adobe](const uint8_t* s, uint8_t* o) {
      const int k = s[3];
      for (int ch = 0; ch < 3; ++ch)
        o[ch] = static_cast<uint8_t>(adobe ? k * s[ch] / 255 : (255 - k) * (255 - s[ch]) / 255);
    });
  } else {
    // Stored (Adobe-inverted) values s: c = 255 - s_c, nk = 255 - k = s_k. PIL's cmyk2rgb:
    // out = nk - MULDIV255(c, nk) with MULDIV255(a, b) = ((t >> 8) + t) >> 8, t = a * b + 128.
    img.rgb = cmyk_to_rgb(j.pixels, [](const uint8_t* s, uint8_t* o) {
      const int nk = s[3];
      for (int ch = 0; ch < 3; ++ch) {
        const int t = (255 - s[ch]) * nk + 128;
        o[ch] = static_cast<uint8_t>(nk - (((t >> 8) + t) >> 8));
      }
    });
  }
  return apply_orientation(std::move(img), j.orientation);
}

// ---------------------------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------------------------

struct PngJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  char message[256] = {0};
  int64_t header_w = 0, header_h = 0;
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
  int orientation = 1;
  bool want_orientation = true;
  ~PngJob() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

extern "C" void png_error_longjmp(png_structp png, png_const_charp msg) {
  auto* j = static_cast<PngJob*>(png_get_error_ptr(png));
  std::snprintf(j->message, sizeof j->message, "%s", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

// libpng warnings (bad ancillary chunks, sRGB profile notes) do not affect the pixels.
extern "C" void png_warning_silent(png_structp, png_const_charp) {}

extern "C" void png_read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* j = static_cast<PngJob*>(png_get_io_ptr(png));
  if (n > j->size - j->pos) png_error(png, "truncated PNG data (file ends inside a chunk)");
  std::memcpy(out, j->data + j->pos, n);
  j->pos += n;
}

bool png_read_header_guarded(PngJob* j) {
  j->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, j, png_error_longjmp, png_warning_silent);
  if (!j->png) {
    std::snprintf(j->message, sizeof j->message, "png_create_read_struct failed");
    return false;
  }
  if (setjmp(png_jmpbuf(j->png))) return false;
  j->info = png_create_info_struct(j->png);
  if (!j->info) png_error(j->png, "png_create_info_struct failed");
  png_set_read_fn(j->png, j, png_read_from_memory);
  png_read_info(j->png, j->info);
  j->header_w = png_get_image_width(j->png, j->info);
  j->header_h = png_get_image_height(j->png, j->info);
  return true;
}

bool png_decode_guarded(PngJob* j) {
  if (setjmp(png_jmpbuf(j->png))) return false;
  png_structp png = j->png;
  const int color = png_get_color_type(png, j->info);
  const int depth = png_get_bit_depth(png, j->info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);  // high byte, as PIL's "RGB;16B" unpacker
  // palette_to_rgb also turns a tRNS chunk into an alpha channel: strip that one too.
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, j->info, PNG_INFO_tRNS))
    png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, j->info);
  if (png_get_rowbytes(png, j->info) != size_t(j->header_w) * 3 ||
      png_get_channels(png, j->info) != 3 || png_get_bit_depth(png, j->info) != 8)
    png_error(png, "unexpected PNG output layout after transforms");
  // j->pixels / j->rows were sized by the caller (no allocation between setjmp and longjmp).
  png_read_image(png, j->rows.data());
  // Reads up to IEND: a file cut after the pixel data is still truncated. An eXIf chunk may sit
  // after IDAT, so orientation is looked up only now.
  png_read_end(png, j->info);
  if (j->want_orientation) {
    png_uint_32 n = 0;
    png_bytep exif = nullptr;
    if (png_get_eXIf_1(png, j->info, &n, &exif) && exif)
      j->orientation = exif_orientation_from_tiff(exif, n);
  }
  return true;
}

Image8 decode_png(const uint8_t* data, size_t size, const std::string& name,
                  const DecodeOptions& opt) {
  PngJob j;
  j.data = data;
  j.size = size;
  j.want_orientation = opt.apply_exif_orientation;
  if (!png_read_header_guarded(&j)) fail_image(name, std::string("PNG: ") + j.message);
  check_pixel_limit(name, "PNG", j.header_w, j.header_h, opt);
  j.pixels.resize(size_t(j.header_w) * size_t(j.header_h) * 3);
  j.rows.resize(size_t(j.header_h));
  for (int64_t y = 0; y < j.header_h; ++y) j.rows[size_t(y)] = j.pixels.data() + y * j.header_w * 3;
  if (!png_decode_guarded(&j)) fail_image(name, std::string("PNG: ") + j.message);
  Image8 img;
  img.width = j.header_w;
  img.height = j.header_h;
  img.rgb = std::move(j.pixels);
  return apply_orientation(std::move(img), j.orientation);
}

std::string hex_prefix(const uint8_t* data, size_t size) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < std::min<size_t>(size, 8); ++i) {
    std::snprintf(buf, sizeof buf, i ? " %02x" : "%02x", data[i]);
    s += buf;
  }
  return s;
}

}  // namespace

std::string sniff_image_format(const uint8_t* d, size_t n) {
  auto starts = [&](const char* m, size_t len, size_t off = 0) {
    return n >= off + len && std::memcmp(d + off, m, len) == 0;
  };
  if (starts("\xFF\xD8\xFF", 3)) return "jpeg";
  if (starts("\x89PNG\r\n\x1A\n", 8)) return "png";
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "webp";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "tiff";
  if (starts("GIF8", 4)) return "gif";
  if (starts("BM", 2)) return "bmp";
  for (const char* brand : {"ftypheic", "ftypheix", "ftyphevc", "ftypheim", "ftypheis", "ftyphevm",
                            "ftyphevs", "ftypmif1", "ftypmsf1"})
    if (starts(brand, 8, 4)) return "heic";
  if (starts("\0\0\0\x0CjP  \r\n\x87\n", 12) || starts("\xFF\x4F\xFF\x51", 4)) return "jpeg2000";
  return "unknown";
}

Image8 decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                           const DecodeOptions& opt) {
  if (size == 0) fail_image(name, "empty file (0 bytes)");
  const std::string fmt = sniff_image_format(data, size);
  if (fmt == "jpeg") return decode_jpeg(data, size, name, opt);
  if (fmt == "png") return decode_png(data, size, name, opt);
  if (fmt == "unknown")
    fail_image(name, "not a JPEG or PNG image (first bytes " + hex_prefix(data, size) + ")");
  fail_image(name, "unsupported image format " + fmt + " (only JPEG and PNG are decoded)");
}

std::vector<uint8_t> read_image_file_bytes(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    struct stat lst;
    if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode))
      fail_image(path, "broken symbolic link (its target does not exist)");
    if (e == ENOENT) fail_image(path, "no such file");
    fail_image(path, std::string("cannot stat: ") + std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) fail_image(path, "is a directory, not an image file");
  if (!S_ISREG(st.st_mode)) fail_image(path, "not a regular file");
  if (st.st_size == 0) fail_image(path, "empty file (0 bytes)");
  if (st.st_size > kMaxFileBytes)
    fail(path, ": file is ", int64_t(st.st_size), " bytes, over the 512 MiB limit for one image");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    if (e == EACCES) fail_image(path, "permission denied");
    fail_image(path, std::string("cannot open: ") + std::strerror(e));
  }
  std::vector<uint8_t> buf(size_t(st.st_size));
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t r = ::read(fd, buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      ::close(fd);
      if (r == 0) fail_image(path, "file shrank while being read");
      fail_image(path, std::string("read error: ") + std::strerror(e));
    }
    got += size_t(r);
  }
  ::close(fd);
  return buf;
}

Image8 decode_image_file(const std::string& path, const DecodeOptions& opt) {
  const std::vector<uint8_t> buf = read_image_file_bytes(path);
  return decode_image_memory(buf.data(), buf.size(), path, opt);
}

}  // namespace engine
