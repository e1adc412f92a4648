// engine/cli_status.h: how every tool answers a CLI11 parse error: --help prints the usage and
// exits 0; a bad flag prints one line naming it and exits 2, before any work is done.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>

namespace engine {

inline int cli_parse_error_status(const CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == 0) return app.exit(e);  // --help, --help-all
  std::fprintf(stderr, "error: %s (see --help)\n", e.what());
  return 2;
}

}  // namespace engine
