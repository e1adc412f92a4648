// tools/predict.cpp: classifies images with the Inception weights and a head trained by
// tools/train, and writes an ISIC-style CSV: `image` (the file name without its image extension:
// img.v1.jpg -> img.v1) and one probability column per class, in the head's class order, each
// printed so that it reads back as the same float32 (engine/text_format.h; fields CSV-quoted).
//
//   predict --weights inception.h5 --head run/head_keras.h5 --out predictions.csv
//           [--device auto|cpu|cuda] [--precision auto|fp32|bf16|int8|tf32|fp16] [--batch 16]
//           IMAGE_OR_DIR...
//
// The images go through models/extract_pipeline.h (decode workers, double-buffered batches on the
// CPU or GPU backend of models/bottleneck_backend.h); rows are written in the order of the image
// list as their batches complete. The head records the precision of the features it was trained
// on (and, for int8, their calibration): --precision auto (the default) computes in it when this
// device can, else in fp32 with one note line; an explicit other --precision is allowed with one
// warning line (int8 needs an int8 head: the calibration comes from it).
//
// The head file is read by models/head_keras.h. The preprocessing (engine/preprocessing.h) is
// read from it, since it records the cache it was trained on, so features are made exactly as in
// training; a head trained with other Inception weights is refused. Before any work: bad flags,
// an unusable --out (a folder, a missing or read-only parent folder) and two images with the same
// id (gray.png and gray.jpg, or one name in two class folders) end with one line and exit 2. Bad
// images are skipped with one line each (exit 3); other errors exit 1. The CSV is written to
// `<out>.tmp.<pid>` and committed durably (engine/durable_file.h: fsync, rename, directory fsync);
// the temp file is removed on failure, SIGTERM, SIGINT.
#include <signal.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "engine/cli_status.h"
#include "engine/cuda_device.h"
#include "engine/dataset.h"
#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/image_io.h"
#include "engine/preprocessing.h"
#include "engine/progress.h"
#include "engine/sha256.h"
#include "engine/text_format.h"
#include "models/bottleneck_backend.h"
#include "models/extract_pipeline.h"
#include "models/head.h"
#include "models/head_keras.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

// A usage problem found before any work: one line, exit 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The ISIC id of an image file: its name without a known image extension (case-insensitive);
// other dots stay (img.v1.jpg -> img.v1; scan.v2 -> scan.v2).
std::string image_id(const std::string& file) {
  const std::string name = fs::path(file).filename().string();
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0) return name;
  std::string ext = name.substr(dot + 1);
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const char* const kImageExt[] = {"jpg", "jpeg", "jpe", "jfif", "png",
                                          "bmp", "gif",  "tif", "tiff", "webp"};
  for (const char* e : kImageExt)
    if (ext == e) return name.substr(0, dot);
  return name;
}

// --out must be creatable: not a folder, in an existing writable folder.
void check_output_path(const std::string& out) {
  std::error_code ec;
  if (fs::is_directory(out, ec))
    throw UsageError("--out " + out + ": is a folder, expected a CSV file path");
  fs::path parent = fs::path(out).parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::exists(parent, ec))
    throw UsageError("--out " + out + ": folder " + parent.string() + " does not exist");
  if (!fs::is_directory(parent, ec))
    throw UsageError("--out " + out + ": " + parent.string() + " is not a folder");
  if (access(parent.c_str(), W_OK | X_OK) != 0)
    throw UsageError("--out " + out + ": folder " + parent.string() + " is not writable");
}

// The temp CSV, removed by the signal handler (unlink and raise are async-signal-safe).
char g_tmp_path[4096] = {0};
extern "C" void on_terminate(int sig) {
  if (g_tmp_path[0]) unlink(g_tmp_path);
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Classify images with Inception v3 + a trained head; writes an ISIC-style CSV"};
  std::string weights, head_path, out, device = "auto", precision = "auto";
  std::vector<std::string> inputs;
  int batch = 16;
  bool quiet = false;
  app.add_option("--weights", weights,
                 "Keras InceptionV3 HDF5 weights (the ones the head was trained with)")
      ->required();
  app.add_option("--head", head_path, "head_keras.h5 written by tools/train")->required();
  app.add_option("--out", out, "CSV to write: image,<class 1>,...,<class K> (probabilities)")
      ->required();
  app.add_option("--batch", batch, "images per network batch")->check(CLI::Range(1, 4096));
  app.add_option("--device", device, "cpu, cuda or auto (auto: the GPU when one is usable)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--precision", precision,
                 "auto (default: the precision the head was trained on, when this device computes "
                 "it; else fp32), fp32, bf16 or int8 (CPU; int8 needs an int8 head), tf32 or fp16 "
                 "(GPU)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16", "int8", "tf32", "fp16"}));
  app.add_flag("--quiet", quiet, "no progress output");
  app.add_option("images", inputs, "image files or folders (searched recursively)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli_parse_error_status(app, e);  // --help: 0; a bad flag: one line, 2
  }
  const char* nl = isatty(fileno(stderr)) ? "\n" : "";
  std::string tmp;
  try {
    check_output_path(out);
    // Every image and its id before any work: ISIC CSVs need unique ids.
    std::vector<std::string> files, ids;
    std::map<std::string, size_t> first_of;
    for (const auto& in : inputs) {
      std::error_code ec;
      if (fs::is_directory(in, ec)) {
        Dataset ds = list_dataset(in, DatasetOptions{"", "", "", true});
        for (const auto& im : ds.images) files.push_back(im.full_path);
      } else {
        files.push_back(in);  // missing or bad files are reported when read
      }
    }
    for (size_t i = 0; i < files.size(); ++i) {
      ids.push_back(image_id(files[i]));
      auto [it, fresh] = first_of.emplace(ids.back(), i);
      if (!fresh)
        throw UsageError("image id '" + ids.back() + "' twice: " + files[it->second] + " and " +
                         files[i] +
                         " (the CSV needs unique ids; rename one or predict them separately)");
    }

    BackendRequest request;
    request.device = device;
    request.precision = precision;
    request.batch = batch;
    Device dev;
    try {
      dev = check_backend_request(request);  // --precision fp16 on the CPU: exit 2, no work
    } catch (const BackendUsageError& e) {
      throw UsageError(e.what());
    }
    const KerasHead kh = read_keras_head(head_path);
    if (kh.config.input != kBottleneckSize)
      fail(head_path, ": the head takes ", kh.config.input,
           " inputs, the Inception bottleneck has ", kBottleneckSize);
    if (sha256_file(weights) != kh.info.inception_weights_sha256)
      fail(head_path, ": the head was trained on features of other Inception weights (sha256 ",
           kh.info.inception_weights_sha256.substr(0, 12), "...) than ", weights);
    // The head's training cache says how its features were made; predict makes them the same way.
    const Preprocessing pre = Preprocessing::parse(kh.info.preprocessing, head_path);
    if (pre.size != kInceptionInput)
      fail(head_path, ": preprocessing size=", pre.size, ", the network takes ", kInceptionInput);
    auto note = [](const std::string& s) { std::fprintf(stderr, "note: %s\n", s.c_str()); };
    const std::string& trained = kh.info.feature_precision;
    if (precision == "auto") {
      // The head's precision where this device computes it (--device auto with bf16/int8: the
      // CPU); else fp32, said in one line.
      BackendRequest want = request;
      want.precision = trained;
      std::string why;
      try {
        dev = check_backend_request(want);
        precision = resolve_precision(trained, dev, [&](const std::string& s) { why = s; });
      } catch (const BackendUsageError&) {
        precision = "fp32";
        why = std::string("the ") + (dev == Device::CPU ? "CPU" : "GPU") + " does not compute " +
              trained + "; computing fp32 instead";
      }
      if (precision != trained)
        note(head_path + " was trained on " + trained + " features; " + why +
             ", so the probabilities differ from the training run's by that precision's error");
    } else {
      precision = resolve_precision(precision, dev, note);
      if (precision == "int8" && trained != "int8")
        throw UsageError("--precision int8 needs the activation ranges of an int8 head; " +
                         head_path + " was trained on " + trained + " features");
      if (trained != precision)
        std::fprintf(stderr,
                     "warning: %s was trained on %s features; these are computed in %s, so the "
                     "probabilities differ from the training run's by that precision's error\n",
                     head_path.c_str(), trained.c_str(), precision.c_str());
    }
    request.precision = precision;
    if (precision == "int8")  // trained is int8 here (auto, or checked above)
      request.calibration = Int8Calibration::parse(kh.info.feature_calibration, head_path);
    HeadCpu head = kh.to_cpu();
    const size_t K = static_cast<size_t>(kh.config.classes);

    InceptionWeights iw = load_inception_v3_weights(weights);
    if (!random_weights_warning(iw).empty())
      std::fprintf(stderr, "%s\n", random_weights_warning(iw).c_str());
    // No larger than the work: the GPU prepares (and checks the memory of) its largest batch first.
    request.batch = std::max<int64_t>(1, std::min<int64_t>(batch, int64_t(files.size())));
    std::unique_ptr<BottleneckBackend> net = open_bottleneck_backend(
        iw, request, [](const std::string& s) { std::fprintf(stderr, "note: %s\n", s.c_str()); });

    // A unique temp name beside --out (two runs never share one), removed on failure and by
    // SIGTERM/SIGINT; the name is set before the file exists so no signal can leak it.
    tmp = durable_tmp_name(out);
    if (tmp.size() >= sizeof g_tmp_path) fail(out, ": path too long");
    std::memcpy(g_tmp_path, tmp.c_str(), tmp.size() + 1);
    struct sigaction sa {};
    sa.sa_handler = on_terminate;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::ofstream csv(tmp);
    if (!csv) fail(out, ": cannot write ", tmp);
    std::vector<std::string> row{"image"};
    row.insert(row.end(), kh.info.class_names.begin(), kh.info.class_names.end());
    csv << csv_row(row) << "\n";

    Progress progress("predict", static_cast<int64_t>(files.size()));
    progress.set_quiet(quiet);
    std::vector<std::string> skipped;
    // Batches complete in the order the workers decoded them; rows go out in list order, each
    // as soon as every row before it is known (row "" = skipped image).
    std::vector<std::string> rows(files.size());
    std::vector<uint8_t> known(files.size(), 0);
    size_t next_row = 0;
    auto flush_rows = [&] {
      for (; next_row < files.size() && known[next_row]; ++next_row) {
        csv << rows[next_row];
        std::string().swap(rows[next_row]);
      }
    };
    PipelineOptions po;
    po.pre = pre;
    po.batch = batch;
    po.hash = false;  // no cache: the content key is not needed
    PipelineHooks hooks;
    hooks.skipped = [&](size_t i, const std::string& reason) {
      skipped.push_back(reason);
      std::fprintf(stderr, "%sskip: %s\n", isatty(fileno(stderr)) ? "\r\033[K" : "",
                   reason.c_str());
      known[i] = 1;
      flush_rows();
      progress.advance(1);
      return false;
    };
    std::vector<float> probs;
    hooks.batch = [&](const std::vector<size_t>& idx, const std::vector<std::string>&,
                      const float* b) {
      const size_t n = idx.size();
      probs.resize(n * K);
      head.predict(b, static_cast<int64_t>(n), probs.data());
      for (size_t i = 0; i < n; ++i) {
        std::vector<std::string> row{ids[idx[i]]};
        for (size_t k = 0; k < K; ++k) row.push_back(float_roundtrip(probs[i * K + k]));
        rows[idx[i]] = csv_row(row) + "\n";
        known[idx[i]] = 1;
      }
      flush_rows();
      progress.advance(static_cast<int64_t>(n));
    };
    run_pipeline(files, *net, po, hooks);
    progress.finish();
    csv.close();
    if (!csv) fail(out, ": write failed (", tmp, ")");
    commit_file_durable(tmp, out);  // fsync, rename, directory fsync: a crash leaves old or new
    g_tmp_path[0] = 0;
    std::printf("predictions: %s: %zu images, %zu skipped\n", out.c_str(),
                files.size() - skipped.size(), skipped.size());
    return skipped.empty() ? 0 : 3;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%serror: %s\n", nl, e.what());
    return 2;
  } catch (const std::exception& e) {
    if (!tmp.empty()) std::remove(tmp.c_str());
    std::fprintf(stderr, "%serror: %s\n", nl, e.what());
    return 1;
  }
}
