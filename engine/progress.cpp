// engine/progress.cpp: see progress.h.
#include "engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace engine {

Progress::Progress(std::string label, int64_t total, std::string unit, double interval_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      interval_s_(interval_s),
      tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

double Progress::rate() const {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return s > 0 ? static_cast<double>(done_) / s : 0.0;
}

void Progress::advance(int64_t n) {
  done_ += n;
  auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_).count() >= interval_s_) {
    last_ = now;
    print(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  print(true);
}

void Progress::print(bool final) {
  if (quiet_) return;
  double r = rate();
  double pct =
      total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0;
  char eta[32] = "";
  if (!final && r > 0 && total_ > done_)
    std::snprintf(eta, sizeof eta, ", ETA %.0fs", static_cast<double>(total_ - done_) / r);
  std::fprintf(stderr, "%s%s: %lld/%lld (%.1f%%) %.2f %s/s%s%s%s%s", tty_ ? "\r" : "",
               label_.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), pct,
               r, unit_.c_str(), eta, note_.empty() ? "" : ", ", note_.c_str(),
               (final || !tty_) ? "\n" : (tty_ ? "\033[K" : ""));
  std::fflush(stderr);
}

}  // namespace engine
