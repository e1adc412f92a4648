// engine/text_format.h: the one place that quotes text for the files we write: CSV fields
// (RFC 4180: a field holding a comma, a double quote, CR or LF is wrapped in double quotes with
// inner quotes doubled), JSON strings (RFC 8259 escapes, control characters as \u00XX) and floats
// printed with enough digits to read back the same float (max_digits10 = 9 significant digits),
// so saturated probabilities like 0.99999994 do not collapse to "1" and tie in a ranking metric.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace engine {

// `s` as one CSV field: unchanged when it needs no quoting, else quoted.
std::string csv_field(const std::string& s);
// One CSV record (fields joined by commas, each through csv_field), without the line end.
std::string csv_row(const std::vector<std::string>& fields);
// `s` as a JSON string literal, quotes included.
std::string json_string(const std::string& s);
// A float in the shortest %.*g form (up to 9 significant digits) that reads back bit-identical;
// NaN and infinities as "nan", "inf", "-inf" (CSV) -- JSON callers must map them to null first.
std::string float_roundtrip(float v);
// A double likewise (up to 17 significant digits).
std::string double_roundtrip(double v);

// One JSON object, written field by field in the order given, as {"a": 1, "b": "x"} (the layout
// of our metrics files): keys and strings through json_string, doubles through double_roundtrip
// with NaN and infinities written as null (JSON has no such numbers).
class JsonObject {
 public:
  JsonObject& number(const std::string& key, double v);
  JsonObject& integer(const std::string& key, int64_t v);
  JsonObject& string(const std::string& key, const std::string& v);
  JsonObject& strings(const std::string& key, const std::vector<std::string>& v);  // ["a", "b"]
  JsonObject& null(const std::string& key);
  // A value that is already JSON text (e.g. another object's str()).
  JsonObject& json(const std::string& key, const std::string& json_text);
  std::string str() const { return body_ + "}"; }

 private:
  JsonObject& field(const std::string& key, const std::string& json_text);
  std::string body_ = "{";
};

}  // namespace engine
