// Atomic outputs: a signal that ends the process mid-write removes the temporary, and an output
// folder that takes no new files is refused before any work.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "common/atomic_output.h"
#include "common/errors.h"

namespace glam {
namespace {

namespace fs = std::filesystem;

fs::path fresh_folder(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

int files_in(const fs::path& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++n;
  return n;
}

// A child process writes part of a file, then gets `sig` (as a batch scheduler's SIGTERM at its time
// limit, or ^C): it ends by that signal, and neither the file nor its temporary is left.
TEST(AtomicOutput, ASignalMidWriteRemovesTheTemporary) {
  for (int sig : {SIGTERM, SIGINT}) {
    const fs::path dir = fresh_folder("glam-atomic-signal");
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // As in a process started in the foreground (a background shell ignores SIGINT), the signal unblocked.
      std::signal(sig, SIG_DFL);
      sigset_t unblock;
      sigemptyset(&unblock);
      sigaddset(&unblock, sig);
      sigprocmask(SIG_UNBLOCK, &unblock, nullptr);
      try {
        write_file_atomically(dir / "checkpoint", [&](const ByteSink& write) {
          write("half of it", 10);
          std::raise(sig);
          write("never", 5);
        });
      } catch (...) {
        ::_exit(2);
      }
      ::_exit(0);  // not reached: the signal ends the child
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
    EXPECT_EQ(files_in(dir), 0) << "signal " << sig;
    fs::remove_all(dir);
  }
  // A write leaves the signals' actions as they were: the default back after it, and another
  // action (here: ignored) never displaced.
  const fs::path dir = fresh_folder("glam-atomic-after");
  auto action_of = [](int sig) {
    struct sigaction now {};
    ::sigaction(sig, nullptr, &now);
    return now.sa_handler;
  };
  const auto term_before = std::signal(SIGTERM, SIG_DFL), int_before = std::signal(SIGINT, SIG_IGN);
  write_file_atomically(dir / "done", "whole");
  EXPECT_EQ(action_of(SIGTERM), SIG_DFL);
  EXPECT_EQ(action_of(SIGINT), SIG_IGN);
  std::signal(SIGTERM, term_before);
  std::signal(SIGINT, int_before);
  fs::remove_all(dir);
}

TEST(AtomicOutput, AFolderThatTakesNoFilesIsRefusedFirst) {
  const fs::path dir = fresh_folder("glam-atomic-folder");
  EXPECT_NO_THROW(check_output_file("--record", dir / "r.json"));
  EXPECT_EQ(files_in(dir), 0);  // the probe is gone
  EXPECT_THROW(check_output_file("--record", dir / "missing" / "r.json"), UsageError);
  EXPECT_THROW(check_output_file("--record", dir), UsageError);
  // An earlier output folder is checked by moving it aside and back: it is there as it was, alone.
  write_directory_atomically(dir / "out", {{"report.md", "earlier"}});
  EXPECT_NO_THROW(check_output_folder("--out", dir / "out", {"report.md"}));
  EXPECT_EQ(files_in(dir), 1);
  EXPECT_EQ(files_in(dir / "out"), 1);
  EXPECT_TRUE(fs::is_regular_file(dir / "out" / "report.md"));
  fs::remove_all(dir / "out");
  // /proc takes no new files even for root, whom access(W_OK) lets through
  if (fs::is_directory("/proc/self")) EXPECT_THROW(check_output_file("--record", "/proc/self/r.json"), UsageError);
  fs::remove_all(dir);
}

// The rename of an atomic write replaces what is at the path: a regular file, yes; a named pipe, a
// device or a symbolic link (whose target would stay as it was) are refused before any work, and at
// the write itself.
TEST(AtomicOutput, OnlyANewOrRegularFileIsReplaced) {
  const fs::path dir = fresh_folder("glam-atomic-special");
  write_file_atomically(dir / "regular.json", "old");
  EXPECT_NO_THROW(check_output_file("--record", dir / "regular.json"));
  ASSERT_EQ(::mkfifo((dir / "pipe").c_str(), 0644), 0);
  fs::create_symlink(dir / "regular.json", dir / "link");
  for (const auto& [path, kind] : std::vector<std::pair<fs::path, std::string>>{
           {dir / "pipe", "a named pipe"}, {dir / "link", "a symbolic link"}, {"/dev/null", "a device"}}) {
    try {
      check_output_file("--record", path);
      ADD_FAILURE() << path << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--record " + path.string() + ": is " + kind), std::string::npos)
          << e.what();
    }
  }
  EXPECT_THROW(write_file_atomically(dir / "pipe", "new"), std::system_error);
  EXPECT_THROW(write_file_atomically(dir / "link", "new"), std::system_error);
  EXPECT_EQ(fs::status(dir / "pipe").type(), fs::file_type::fifo);
  EXPECT_TRUE(fs::is_symlink(dir / "link"));
  EXPECT_EQ(files_in(dir), 3);  // no temporary left
  fs::remove_all(dir);
}

}  // namespace
}  // namespace glam
