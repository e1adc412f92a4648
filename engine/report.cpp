// engine/report.cpp: see report.h.
#include "engine/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "engine/durable_file.h"
#include "engine/text_format.h"

namespace engine {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

std::string fmt(double v, int prec = 4) {
  if (std::isnan(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, "%.*g", prec, v);
  return b;
}

}  // namespace

std::string layer_widths_text(const std::vector<int64_t>& widths) {
  std::string s;
  for (size_t i = 0; i < widths.size(); ++i) s += (i ? " -> " : "") + std::to_string(widths[i]);
  return s;
}

std::string svg_line_chart(const std::vector<ReportSeries>& series, const std::string& title,
                           const std::string& x_label, const std::string& y_label, int width,
                           int height, bool unit_square) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (std::isnan(s.y[i]) || std::isnan(s.x[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
    }
  if (unit_square) x0 = y0 = 0, x1 = y1 = 1;
  if (!(x0 < x1)) x0 -= 1, x1 += 1;
  if (!(y0 < y1)) y0 -= 0.5, y1 += 0.5;
  if (!unit_square) {
    const double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
  }
  const double L = 60, R = 20, T = 30, B = 45;
  const double pw = width - L - R, ph = height - T - B;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return T + ph - (y - y0) / (y1 - y0) * ph; };
  std::ostringstream os;
  os << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
     << "' font-family='sans-serif' font-size='11'>\n";
  os << "<rect x='0' y='0' width='" << width << "' height='" << height << "' fill='white'/>\n";
  os << "<text x='" << width / 2
     << "' y='16' text-anchor='middle' font-size='13' font-weight='bold'>" << esc(title)
     << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and ticks
    const double fy = y0 + (y1 - y0) * i / 5, fx = x0 + (x1 - x0) * i / 5;
    os << "<line x1='" << L << "' x2='" << L + pw << "' y1='" << Y(fy) << "' y2='" << Y(fy)
       << "' stroke='#ddd'/>\n<text x='" << L - 5 << "' y='" << Y(fy) + 4 << "' text-anchor='end'>"
       << fmt(fy, 3) << "</text>\n";
    os << "<line y1='" << T << "' y2='" << T + ph << "' x1='" << X(fx) << "' x2='" << X(fx)
       << "' stroke='#eee'/>\n<text x='" << X(fx) << "' y='" << T + ph + 15
       << "' text-anchor='middle'>" << fmt(fx, 4) << "</text>\n";
  }
  os << "<rect x='" << L << "' y='" << T << "' width='" << pw << "' height='" << ph
     << "' fill='none' stroke='#333'/>\n";
  os << "<text x='" << L + pw / 2 << "' y='" << height - 8 << "' text-anchor='middle'>"
     << esc(x_label) << "</text>\n<text transform='translate(14," << T + ph / 2
     << ") rotate(-90)' text-anchor='middle'>" << esc(y_label) << "</text>\n";
  if (unit_square)
    os << "<line x1='" << X(0) << "' y1='" << Y(0) << "' x2='" << X(1) << "' y2='" << Y(1)
       << "' stroke='#999' stroke-dasharray='4,4'/>\n";
  for (const auto& s : series) {
    os << "<polyline fill='none' stroke-width='2' stroke='" << s.color << "' points='";
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (!std::isnan(s.y[i])) os << X(s.x[i]) << "," << Y(s.y[i]) << " ";
    os << "'/>\n";
  }
  // Legend box (white, so lines under it don't cross the text).
  os << "<rect x='" << L + pw - 136 << "' y='" << T + 2 << "' width='132' height='"
     << 14 * series.size() + 6 << "' fill='white' fill-opacity='0.85' stroke='#ccc'/>\n";
  int legend = 0;
  for (const auto& s : series) {
    const double ly = T + 12 + 14 * legend++;
    os << "<line x1='" << L + pw - 130 << "' x2='" << L + pw - 112 << "' y1='" << ly - 4 << "' y2='"
       << ly - 4 << "' stroke='" << s.color << "' stroke-width='2'/><text x='" << L + pw - 108
       << "' y='" << ly << "'>" << esc(s.name) << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

void write_report_html(const std::string& path, const std::string& title,
                       const std::vector<CurvePoint>& curve, const ClassificationMetrics& test,
                       const std::vector<std::string>& class_names, const ReportHead& head,
                       const std::vector<std::pair<std::string, std::string>>& settings) {
  ReportSeries train{"train loss", "#1f77b4", {}, {}}, val{"validation loss", "#d62728", {}, {}};
  ReportSeries acc{"accuracy", "#2ca02c", {}, {}}, bacc{"balanced accuracy", "#ff7f0e", {}, {}},
      auc{"AUC", "#9467bd", {}, {}};
  for (const auto& p : curve) {
    const double s = static_cast<double>(p.step);
    train.x.push_back(s), train.y.push_back(p.train_loss);
    val.x.push_back(s), val.y.push_back(p.val_loss);
    acc.x.push_back(s), acc.y.push_back(p.val_accuracy);
    bacc.x.push_back(s), bacc.y.push_back(p.val_balanced_accuracy);
    auc.x.push_back(s), auc.y.push_back(p.val_auc);
  }
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>" << esc(title)
     << "</title>\n<style>body{font-family:sans-serif;margin:24px;max-width:1120px}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;padding:4px 10px;"
        "text-align:right}th{background:#f0f0f0}.charts{display:flex;flex-wrap:wrap;gap:12px}"
        "</style></head><body>\n<h1>"
     << esc(title) << "</h1>\n";
  os << "<p>Head: Dense " << esc(layer_widths_text(head.widths)) << ", ReLU, dropout "
     << float_roundtrip(head.dropout) << "</p>\n";
  if (test.n == 0) {
    os << "<h2>Test set</h2>\n<p>No test split (--test-percent 0): no test metrics.</p>\n";
  } else {
    os << "<h2>Test set (" << test.n
       << " images)</h2>\n<table><tr><th>AUC</th><th>balanced accuracy</th>"
          "<th>accuracy</th><th>loss</th></tr><tr><td>"
       << fmt(test.auc) << "</td><td>" << fmt(test.balanced_accuracy) << "</td><td>"
       << fmt(test.accuracy) << "</td><td>" << fmt(test.loss) << "</td></tr></table>\n";
    os << "<table><tr><th>class</th><th>sensitivity</th><th>specificity</th></tr>\n";
    for (size_t k = 0; k < class_names.size() && k < test.sensitivity.size(); ++k)
      os << "<tr><td>" << esc(class_names[k]) << "</td><td>" << fmt(test.sensitivity[k])
         << "</td><td>" << fmt(test.specificity[k]) << "</td></tr>\n";
    os << "</table>\n<h3>Confusion matrix (rows: true, columns: "
          "predicted)</h3>\n<table><tr><th></th>";
    for (const auto& c : class_names) os << "<th>" << esc(c) << "</th>";
    os << "</tr>\n";
    for (size_t i = 0; i < test.confusion.size() && i < class_names.size(); ++i) {
      os << "<tr><th>" << esc(class_names[i]) << "</th>";
      for (int64_t v : test.confusion[i]) os << "<td>" << v << "</td>";
      os << "</tr>\n";
    }
    os << "</table>\n";
  }
  const bool measured = std::any_of(curve.begin(), curve.end(), [](const CurvePoint& p) {
    return !std::isnan(p.val_loss) || !std::isnan(p.val_auc) || !std::isnan(p.val_accuracy);
  });
  os << "<h2>Curves</h2>\n<div class='charts'>\n";
  if (measured) {
    os << svg_line_chart({train, val}, "Loss", "step", "cross-entropy")
       << svg_line_chart({acc, bacc, auc}, "Validation metrics", "step", "value");
  } else {
    os << svg_line_chart({train}, "Loss", "step", "cross-entropy")
       << "<p>No validation split (--validation-percent 0): no validation metrics; the final head "
          "is the last step's.</p>\n";
  }
  if (!test.roc.empty()) {
    ReportSeries roc{"test ROC (AUC " + fmt(test.auc, 3) + ")", "#d62728", {}, {}};
    for (const auto& p : test.roc) roc.x.push_back(p.fpr), roc.y.push_back(p.tpr);
    os << svg_line_chart({roc}, "ROC, positive class '" + class_names.back() + "'",
                         "false positive rate (1 - specificity)",
                         "true positive rate (sensitivity)", 420, 420, true);
  }
  os << "</div>\n<h2>Settings</h2>\n<table>\n";
  for (const auto& [k, v] : settings)
    os << "<tr><th>" << esc(k) << "</th><td style='text-align:left'>" << esc(v) << "</td></tr>\n";
  os << "</table>\n</body></html>\n";
  write_file_durable(path, os.str());
}

}  // namespace engine
