// models/head_keras.cpp: the Keras head file (models/head_keras.h): writer (engine/hdf5_io.h's
// typed writers, variable-length UTF-8 strings as h5py writes them, committed durably through
// engine/durable_file.h), reader (through engine/hdf5_io.h) and a small JSON reader for
// model_config, enough to check that a file written by Keras is the Dense stack predict computes
// (relu hidden layers, softmax output).
#include "models/head_keras.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>

#include "engine/durable_file.h"
#include "engine/error.h"
#include "engine/hdf5_io.h"
#include "engine/text_format.h"

namespace engine {

namespace {

constexpr const char* kKerasVersion = "2.21.0";  // the tf_keras release whose layout we copy

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------
std::string num(double v) { return double_roundtrip(v); }

// model_config as tf_keras 2.21 writes it for Sequential([InputLayer, Dense..., Dense]).
std::string model_config_json(const HeadLayout& L, const std::vector<std::string>& names) {
  std::ostringstream j;
  j << "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"melanoma_head\", \"layers\": ["
    << "{\"class_name\": \"InputLayer\", \"config\": {\"batch_input_shape\": [null, "
    << L.layers.front().in
    << "], \"dtype\": \"float32\", \"sparse\": false, \"ragged\": false, \"name\": \"input_1\"}}";
  for (size_t l = 0; l < L.layers.size(); ++l) {
    const bool last = l + 1 == L.layers.size();
    j << ", {\"class_name\": \"Dense\", \"config\": {\"name\": " << json_string(names[l])
      << ", \"trainable\": true, \"dtype\": \"float32\", \"units\": " << L.layers[l].out
      << ", \"activation\": \"" << (last ? "softmax" : "relu") << "\", \"use_bias\": true"
      << ", \"kernel_initializer\": {\"module\": \"keras.initializers\", \"class_name\": "
         "\"GlorotUniform\", \"config\": {\"seed\": null}, \"registered_name\": null}"
      << ", \"bias_initializer\": {\"module\": \"keras.initializers\", \"class_name\": \"Zeros\", "
         "\"config\": {}, \"registered_name\": null}"
      << ", \"kernel_regularizer\": null, \"bias_regularizer\": null, \"activity_regularizer\": "
         "null, \"kernel_constraint\": null, \"bias_constraint\": null}}";
  }
  j << "]}}";
  return j.str();
}

// training_config: what Keras's compile() would record for how the head was trained (softmax
// cross-entropy, RMSprop with the initial learning rate; our decay schedule is not a Keras
// optimizer setting and is left out). load_model compiles the model with it.
std::string training_config_json(const HeadConfig& c) {
  const RmsPropConfig& o = c.optimizer;
  std::ostringstream j;
  j << "{\"loss\": \"categorical_crossentropy\", \"metrics\": null, \"weighted_metrics\": null, "
       "\"loss_weights\": null, \"optimizer_config\": {\"class_name\": \"RMSprop\", \"config\": "
       "{\"name\": \"RMSprop\", \"learning_rate\": "
    << num(o.lr) << ", \"rho\": " << num(o.rho) << ", \"momentum\": " << num(o.momentum)
    << ", \"epsilon\": " << num(o.eps) << ", \"centered\": false}}}";
  return j.str();
}

// ---------------------------------------------------------------------------------------------
// A small JSON reader (RFC 8259 values; numbers as double; \u escapes kept only for ASCII)
// ---------------------------------------------------------------------------------------------
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double n = 0;
  std::string s;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;
  const Json* get(const std::string& key) const {
    for (const auto& f : fields)
      if (f.first == key) return &f.second;
    return nullptr;
  }
};

class JsonParser {
 public:
  JsonParser(const std::string& text, std::string where) : t_(text), where_(std::move(where)) {}
  Json parse() {
    Json v = value(0);
    ws();
    if (p_ != t_.size()) bad("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void bad(const char* what) {
    fail(where_, ": invalid JSON at byte ", p_, ": ", what);
  }
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\n' || t_[p_] == '\t' || t_[p_] == '\r'))
      ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ < t_.size() && t_[p_] == c) return ++p_, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) bad("unexpected character");
  }
  bool word(const char* w) {
    const size_t n = std::strlen(w);
    if (t_.compare(p_, n, w) == 0) return p_ += n, true;
    return false;
  }
  std::string str() {
    expect('"');
    std::string out;
    while (p_ < t_.size() && t_[p_] != '"') {
      char c = t_[p_++];
      if (c == '\\') {
        if (p_ >= t_.size()) bad("unterminated string");
        const char e = t_[p_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u': {
            if (p_ + 4 > t_.size()) bad("short \\u escape");
            const unsigned long u = std::stoul(t_.substr(p_, 4), nullptr, 16);
            p_ += 4;
            out += u < 0x80 ? static_cast<char>(u) : '?';
            break;
          }
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    if (p_ >= t_.size()) bad("unterminated string");
    ++p_;
    return out;
  }
  Json value(int depth) {
    if (depth > 64) bad("nested too deeply");
    ws();
    if (p_ >= t_.size()) bad("unexpected end");
    Json v;
    const char c = t_[p_];
    if (c == '{') {
      ++p_;
      v.kind = Json::Object;
      if (eat('}')) return v;
      do {
        ws();
        std::string k = str();
        expect(':');
        v.fields.emplace_back(std::move(k), value(depth + 1));
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++p_;
      v.kind = Json::Array;
      if (eat(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Json::String;
      v.s = str();
    } else if (word("true")) {
      v.kind = Json::Bool, v.b = true;
    } else if (word("false")) {
      v.kind = Json::Bool;
    } else if (word("null")) {
      v.kind = Json::Null;
    } else if (word("NaN") || word("Infinity") || word("-Infinity")) {
      v.kind = Json::Number;  // Python's json writes these; only their presence matters here
    } else {
      size_t used = 0;
      try {
        v.n = std::stod(t_.substr(p_, 40), &used);
      } catch (const std::exception&) {
        bad("expected a value");
      }
      v.kind = Json::Number;
      p_ += used;
    }
    return v;
  }
  const std::string& t_;
  std::string where_;
  size_t p_ = 0;
};

// The Dense layers model_config declares, in order, with their activation; checks the model is
// a plain stack of InputLayer / Dense / Dropout layers (anything else would compute something
// predict does not).
struct DenseDecl {
  std::string name, activation;
  int64_t units = 0;
};
std::vector<DenseDecl> dense_layers_of(const std::string& model_config, const std::string& where) {
  const Json root = JsonParser(model_config, where).parse();
  const Json* cls = root.get("class_name");
  const Json* cfg = root.get("config");
  const Json* layers = cfg ? cfg->get("layers") : nullptr;
  if (!cls || cls->kind != Json::String || !layers || layers->kind != Json::Array)
    fail(where, ": expected {\"class_name\": ..., \"config\": {\"layers\": [...]}}");
  if (cls->s != "Sequential" && cls->s != "Functional" && cls->s != "Model")
    fail(where, ": model class '", cls->s, "', expected Sequential or Functional");
  std::vector<DenseDecl> out;
  for (const Json& l : layers->items) {
    const Json* lc = l.get("class_name");
    const Json* c = l.get("config");
    if (!lc || lc->kind != Json::String || !c) fail(where, ": a layer without class_name/config");
    const Json* nm = c->get("name");
    const std::string name = nm && nm->kind == Json::String ? nm->s : "?";
    if (lc->s == "InputLayer" || lc->s == "Dropout") continue;
    if (lc->s != "Dense")
      fail(where, ": layer '", name, "' is a ", lc->s, "; a head file holds Dense layers only");
    const Json* act = c->get("activation");
    const Json* units = c->get("units");
    const Json* bias = c->get("use_bias");
    if (!act || act->kind != Json::String || !units || units->kind != Json::Number)
      fail(where, ": Dense layer '", name, "' without activation or units");
    if (bias && bias->kind == Json::Bool && !bias->b)
      fail(where, ": Dense layer '", name, "' has use_bias false; the head needs biases");
    out.push_back({name, act->s, static_cast<int64_t>(units->n)});
  }
  return out;
}

std::string optional_string_attr(hid_t obj, const char* name, const std::string& where) {
  return h5_has_attr(obj, name) ? h5_read_string_attr(obj, name, where) : std::string();
}

std::string base_name(const std::string& s) {
  const size_t p = s.rfind('/');
  return p == std::string::npos ? s : s.substr(p + 1);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// write / read
// ---------------------------------------------------------------------------------------------
void write_keras_head(const std::string& path, const HeadConfig& config, const HeadParams& params,
                      const KerasHeadInfo& info) {
  const HeadLayout& L = params.layout();
  const HeadLayout want = HeadLayout::of(config);
  ENGINE_CHECK(want.section == L.section && want.layers.size() == L.layers.size(), path,
               ": the parameters are not laid out for this head config");
  ENGINE_CHECK(static_cast<int64_t>(info.class_names.size()) == config.classes, path, ": ",
               info.class_names.size(), " class names for a head with ", config.classes,
               " outputs");
  std::vector<std::string> names;
  for (size_t l = 0; l < L.layers.size(); ++l) names.push_back("dense_" + std::to_string(l + 1));

  const std::string tmp = durable_tmp_name(path);
  try {
    h5_silence_errors();
    {
      H5File f = H5File::create(tmp);
      const hid_t r = f.id();
      h5_write_string_attr(r, "backend", "tensorflow", tmp);
      h5_write_string_attr(r, "keras_version", kKerasVersion, tmp);
      h5_write_string_attr(r, "model_config", model_config_json(L, names), tmp);
      h5_write_string_attr(r, "training_config", training_config_json(config), tmp);
      h5_write_string_array_attr(r, "class_names", info.class_names, tmp);
      h5_write_string_attr(r, "preprocessing", info.preprocessing, tmp);
      h5_write_string_attr(r, "inception_weights_sha256", info.inception_weights_sha256, tmp);
      h5_write_string_attr(r, "feature_precision", info.feature_precision, tmp);
      if (!info.feature_calibration.empty())
        h5_write_string_attr(r, "feature_calibration", info.feature_calibration, tmp);
      {  // the groups close before the file
        H5Id mw = h5_create_group(r, "model_weights", tmp);
        const std::string mwhere = tmp + ":/model_weights";
        h5_write_string_attr(mw.get(), "backend", "tensorflow", mwhere);
        h5_write_string_attr(mw.get(), "keras_version", kKerasVersion, mwhere);
        h5_write_string_array_attr(mw.get(), "layer_names", names, mwhere);
        const float* P = params.section(HeadSection::Params);
        for (size_t l = 0; l < L.layers.size(); ++l) {
          const std::string& n = names[l];
          const HeadLayer& ly = L.layers[l];
          H5Id g = h5_create_group(mw.get(), n, mwhere);
          h5_write_string_array_attr(g.get(), "weight_names", {n + "/kernel:0", n + "/bias:0"},
                                     mwhere + "/" + n);
          H5Id g2 = h5_create_group(g.get(), n, mwhere + "/" + n);
          const std::string where = mwhere + "/" + n + "/" + n;
          h5_write_floats(g2.get(), "kernel:0", P + ly.kernel_off,
                          {static_cast<hsize_t>(ly.in), static_cast<hsize_t>(ly.out)}, where);
          h5_write_floats(g2.get(), "bias:0", P + ly.bias_off, {static_cast<hsize_t>(ly.out)},
                          where);
        }
      }
      f.close();                     // checked: a failed final flush (disk full) is reported
    }                                // closed here, before the commit
    commit_file_durable(tmp, path);  // fsync, rename, directory fsync
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

KerasHead read_keras_head(const std::string& path) {
  H5File f = H5File::open_read(path);
  const hid_t r = f.id();
  KerasHead h;
  // Weights: /model_weights (model.save) or the root (save_weights; our files before 2027).
  std::string prefix;
  if (h5_exists(r, "/model_weights")) {
    prefix = "/model_weights";
  } else if (!h5_has_attr(r, "layer_names")) {
    fail(path, ": no /model_weights group and no layer_names attribute: not a Keras model file");
  }
  H5Id wg = h5_open_group(r, prefix.empty() ? "/" : prefix, path);
  const std::string wwhere = path + ":" + (prefix.empty() ? "/" : prefix);
  const auto layers = h5_read_string_array_attr(wg.get(), "layer_names", wwhere);
  h.keras_version = optional_string_attr(r, "keras_version", path);
  if (h.keras_version.empty())
    h.keras_version = optional_string_attr(wg.get(), "keras_version", wwhere);

  int64_t in = -1;
  for (const auto& l : layers) {
    const std::string gpath = prefix + "/" + l;
    H5Id g = h5_open_group(r, gpath, path);
    const auto wn = h5_read_string_array_attr(g.get(), "weight_names", path + ":" + gpath);
    if (wn.empty()) continue;  // InputLayer, Dropout
    if (wn.size() != 2 || base_name(wn[0]).rfind("kernel", 0) != 0 ||
        base_name(wn[1]).rfind("bias", 0) != 0)
      fail(path, ":", gpath, ": expected weight_names [kernel, bias] of a Dense layer, found ",
           wn.size(), " weights", wn.empty() ? "" : " starting with '" + wn[0] + "'");
    const std::string kpath = gpath + "/" + wn[0], bpath = gpath + "/" + wn[1];
    H5FloatArray k = h5_read_float_array(r, kpath, path);
    if (k.dims.size() != 2 || k.dims[0] < 1 || k.dims[1] < 1 || (in >= 0 && k.dims[0] != in))
      fail(path, ": dataset '", kpath, "': expected shape (", in >= 0 ? std::to_string(in) : "in",
           ", out), found ", Shape(k.dims).str());
    const int64_t out = k.dims[1];
    if (in < 0) h.config.input = k.dims[0];
    h.biases.push_back(h5_read_float_checked(r, bpath, Shape{out}, path));
    h.kernels.push_back(std::move(k.data));
    h.layer_names.push_back(l);
    in = out;
  }
  if (h.kernels.empty()) fail(wwhere, ": no Dense layers in layer_names");
  h.config.hidden.clear();
  for (size_t i = 0; i + 1 < h.biases.size(); ++i)
    h.config.hidden.push_back(static_cast<int64_t>(h.biases[i].size()));
  h.config.classes = static_cast<int64_t>(h.biases.back().size());
  h.config.dropout = 0;
  if (h.config.classes < 2)
    fail(path, ": the last layer '", h.layer_names.back(), "' has ", h.config.classes,
         " output; a softmax head needs >= 2");

  // model_config (model.save files): must declare exactly these Dense layers, relu + softmax.
  if (h5_has_attr(r, "model_config")) {
    const std::string mwhere = path + ": attribute model_config";
    const auto decl = dense_layers_of(h5_read_string_attr(r, "model_config", path), mwhere);
    if (decl.size() != h.layer_names.size())
      fail(mwhere, ": declares ", decl.size(), " Dense layers, the weights hold ",
           h.layer_names.size());
    for (size_t i = 0; i < decl.size(); ++i) {
      const bool last = i + 1 == decl.size();
      const int64_t units = static_cast<int64_t>(h.biases[i].size());
      if (decl[i].name != h.layer_names[i] || decl[i].units != units)
        fail(mwhere, ": Dense layer ", i + 1, " is '", decl[i].name, "' with ", decl[i].units,
             " units, the weights have '", h.layer_names[i], "' with ", units);
      const char* want = last ? "softmax" : "relu";
      if (decl[i].activation != want)
        fail(mwhere, ": Dense layer '", decl[i].name, "' has activation '", decl[i].activation,
             "', expected '", want, "'");
    }
  }

  h.info.class_names = h5_read_string_array_attr(r, "class_names", path);
  h.info.preprocessing = h5_read_string_attr(r, "preprocessing", path);
  h.info.inception_weights_sha256 = h5_read_string_attr(r, "inception_weights_sha256", path);
  // Heads written before the attribute existed were trained on CPU features: fp32.
  h.info.feature_precision = h5_has_attr(r, "feature_precision")
                                 ? h5_read_string_attr(r, "feature_precision", path)
                                 : "fp32";
  h.info.feature_calibration = h5_has_attr(r, "feature_calibration")
                                   ? h5_read_string_attr(r, "feature_calibration", path)
                                   : "";
  if ((h.info.feature_precision == "int8") != !h.info.feature_calibration.empty())
    fail(path, ": attribute 'feature_calibration' is ",
         h.info.feature_calibration.empty() ? "missing" : "present", " with feature_precision '",
         h.info.feature_precision, "' (int8 features need it, others have none)");
  if (static_cast<int64_t>(h.info.class_names.size()) != h.config.classes)
    fail(path, ": attribute 'class_names' has ", h.info.class_names.size(),
         " names for a head with ", h.config.classes, " outputs");
  h.config.validate();
  return h;
}

HeadCpu KerasHead::to_cpu() const {
  HeadCpu head(config);
  const HeadLayout& L = head.params().layout();
  ENGINE_CHECK(L.layers.size() == kernels.size() && kernels.size() == biases.size(),
               "KerasHead: ", kernels.size(), " kernels for ", L.layers.size(), " layers");
  for (size_t l = 0; l < L.layers.size(); ++l) {
    ENGINE_CHECK(static_cast<int64_t>(kernels[l].size()) == L.layers[l].in * L.layers[l].out &&
                     static_cast<int64_t>(biases[l].size()) == L.layers[l].out,
                 "KerasHead: layer ", l + 1, " holds ", kernels[l].size(), "+", biases[l].size(),
                 " values, its shape needs ", L.layers[l].in * L.layers[l].out, "+",
                 L.layers[l].out);
    head.set_layer(static_cast<int>(l), kernels[l].data(), biases[l].data());
  }
  return head;
}

}  // namespace engine
