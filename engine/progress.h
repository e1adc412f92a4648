// engine/progress.h: progress reporting for long work: "label: 120/1000 (12.0%) 35.2 img/s,
// ETA 25s" on stderr, at most every `interval` seconds plus once at the end. On a terminal it
// rewrites one line; otherwise (logs, CI) it prints a new line each time.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace engine {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "img", double interval_s = 2.0);
  void advance(int64_t n = 1);
  void set_note(std::string note) { note_ = std::move(note); }  // e.g. "3 skipped"
  void set_quiet(bool q) { quiet_ = q; }
  void finish();
  double rate() const;  // units per second so far
  int64_t done() const { return done_; }

 private:
  void print(bool final);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  double interval_s_;
  std::string note_;
  bool tty_, finished_ = false, quiet_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace engine
