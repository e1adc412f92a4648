// engine/text_format.cpp: CSV and JSON quoting, round-trip float printing and the JSON object
// writer (see the header).
#include "engine/text_format.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace engine {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string csv_row(const std::vector<std::string>& fields) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) out += ',';
    out += csv_field(fields[i]);
  }
  return out;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 bytes pass through unchanged
        }
    }
  }
  out += '"';
  return out;
}

namespace {
template <typename T>
std::string roundtrip(T v, int max_digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  for (int p = 6; p <= max_digits; ++p) {  // shortest form that reads back exactly
    std::snprintf(buf, sizeof buf, "%.*g", p, static_cast<double>(v));
    if (static_cast<T>(std::strtod(buf, nullptr)) == v) break;
  }
  return buf;
}
}  // namespace

std::string float_roundtrip(float v) { return roundtrip<float>(v, 9); }
std::string double_roundtrip(double v) { return roundtrip<double>(v, 17); }

JsonObject& JsonObject::field(const std::string& key, const std::string& json_text) {
  if (body_.size() > 1) body_ += ", ";
  body_ += json_string(key) + ": " + json_text;
  return *this;
}
JsonObject& JsonObject::number(const std::string& key, double v) {
  return field(key, std::isfinite(v) ? double_roundtrip(v) : std::string("null"));
}
JsonObject& JsonObject::integer(const std::string& key, int64_t v) {
  return field(key, std::to_string(v));
}
JsonObject& JsonObject::string(const std::string& key, const std::string& v) {
  return field(key, json_string(v));
}
JsonObject& JsonObject::strings(const std::string& key, const std::vector<std::string>& v) {
  std::string a = "[";
  for (size_t i = 0; i < v.size(); ++i) a += (i ? ", " : "") + json_string(v[i]);
  return field(key, a + "]");
}
JsonObject& JsonObject::null(const std::string& key) { return field(key, "null"); }
JsonObject& JsonObject::json(const std::string& key, const std::string& json_text) {
  return field(key, json_text);
}

}  // namespace engine
