#pragma once
// Runs one of the project's commands in a shell and captures its exit code, stdout and stderr,
// for end-to-end tests of glamsim and glamexec.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace glam::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string read_whole_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `command_line` is passed to /bin/sh; GLAM_BIN_DIR is prepended to PATH.
inline CommandResult run_command(const std::string& command_line) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("glam-cmd-" + std::to_string(::getpid()) + "-" +
                                              std::to_string(std::rand()));
  fs::create_directories(dir);
  std::string full = "PATH=\"" GLAM_BIN_DIR ":$PATH\" " + command_line + " >" + (dir / "out").string() + " 2>" +
                     (dir / "err").string();
  int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_whole_file(dir / "out");
  r.err = read_whole_file(dir / "err");
  fs::remove_all(dir);
  return r;
}

}  // namespace glam::testing
