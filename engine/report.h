// engine/report.h: the training report a person opens in a browser: one self-contained HTML
// file with inline SVG charts (loss and validation metrics against the step, the test ROC curve),
// the test metrics and confusion matrix, the head that was trained, and the run's settings. No
// JavaScript, no network. Written durably (engine/durable_file.h).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/metrics.h"

namespace engine {

struct CurvePoint {
  int64_t step = 0;
  double train_loss = 0;  // mean over the steps since the previous point
  double val_loss = 0, val_accuracy = 0, val_balanced_accuracy = 0,
         val_auc = 0;  // NaN: not measured
};

struct ReportSeries {
  std::string name, color;
  std::vector<double> x, y;
};

// A line chart as an SVG element (axes, ticks, legend); NaN points are skipped.
std::string svg_line_chart(const std::vector<ReportSeries>& series, const std::string& title,
                           const std::string& x_label, const std::string& y_label, int width = 520,
                           int height = 320, bool unit_square = false);

// The head the report is about, taken from the trained head itself (its config as saved with
// its weights), never from the flags: e.g. widths {2048, 64, 32, 16, 3}.
struct ReportHead {
  std::vector<int64_t> widths;  // input, hidden layers..., classes
  float dropout = 0;            // the rate the head trained with (HeadConfig::dropout)
};
// "2048 -> 64 -> 32 -> 16 -> 3"
std::string layer_widths_text(const std::vector<int64_t>& widths);

void write_report_html(const std::string& path, const std::string& title,
                       const std::vector<CurvePoint>& curve, const ClassificationMetrics& test,
                       const std::vector<std::string>& class_names, const ReportHead& head,
                       const std::vector<std::pair<std::string, std::string>>& settings);

}  // namespace engine
