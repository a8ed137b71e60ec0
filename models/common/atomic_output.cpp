#include "common/atomic_output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <system_error>

#include "common/errors.h"

namespace glam {
namespace fs = std::filesystem;
namespace {

std::string random_suffix() {
  std::random_device rd;
  std::uniform_int_distribution<unsigned> dist(0, 0xffffff);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06x", dist(rd));
  return buf;
}

// Creates `path` (which must be new), writes what `produce` hands over, and flushes it to the disk.
void write_and_sync(const fs::path& path, const std::function<void(const ByteSink&)>& produce) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot create " + path.string());
  try {
    produce([&](const void* data, size_t bytes) {
      const char* p = static_cast<const char*>(data);
      size_t done = 0;
      while (done < bytes) {
        ssize_t n = ::write(fd, p + done, bytes - done);
        if (n < 0) {
          if (errno == EINTR) continue;
          throw std::system_error(errno, std::generic_category(), "cannot write " + path.string());
        }
        done += static_cast<size_t>(n);
      }
    });
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "cannot flush " + path.string());
  }
  if (::close(fd) != 0) throw std::system_error(errno, std::generic_category(), "cannot flush " + path.string());
}

// A signal that ends the process mid-write (a batch scheduler's SIGTERM at its time limit, ^C) removes
// the temporary first: a checkpoint's is gigabytes. Installed for the write alone, and only for signals
// whose action is still the default (ending the process), so no one else's handler is displaced. One
// temporary at a time: the programs write their outputs one after another.
char g_temp_path[4096];
volatile std::sig_atomic_t g_temp_set = 0;
constexpr int kEndingSignals[] = {SIGTERM, SIGINT, SIGHUP};

extern "C" void remove_temp_and_end(int sig) {
  if (g_temp_set) ::unlink(g_temp_path);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

class TempRemovedOnSignal {
 public:
  explicit TempRemovedOnSignal(const fs::path& temp) {
    const std::string path = temp.string();
    if (path.size() >= sizeof g_temp_path) return;
    std::memcpy(g_temp_path, path.c_str(), path.size() + 1);
    g_temp_set = 1;
    for (size_t i = 0; i < std::size(kEndingSignals); ++i) {
      if (::sigaction(kEndingSignals[i], nullptr, &before_[i]) != 0 || before_[i].sa_handler != SIG_DFL) continue;
      struct sigaction handler {};
      handler.sa_handler = remove_temp_and_end;
      sigemptyset(&handler.sa_mask);
      installed_[i] = ::sigaction(kEndingSignals[i], &handler, nullptr) == 0;
    }
  }
  ~TempRemovedOnSignal() {
    for (size_t i = 0; i < std::size(kEndingSignals); ++i)
      if (installed_[i]) ::sigaction(kEndingSignals[i], &before_[i], nullptr);
    g_temp_set = 0;
  }
  TempRemovedOnSignal(const TempRemovedOnSignal&) = delete;
  TempRemovedOnSignal& operator=(const TempRemovedOnSignal&) = delete;

 private:
  bool installed_[std::size(kEndingSignals)] = {};
  struct sigaction before_[std::size(kEndingSignals)] = {};
};

fs::path parent_or_dot(const fs::path& p) {
  return p.has_parent_path() ? p.parent_path() : fs::path(".");
}

// "out/" and "out/." name the folder "out".
fs::path folder_path(const fs::path& given) {
  fs::path dir = given.lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();
  return dir;
}

}  // namespace

namespace {
// What an existing path is when it is neither absent nor a regular file ("" otherwise): the rename of an
// atomic write would replace a device, pipe or socket with a file, and a link rather than its target.
std::string not_a_regular_file(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(path, ec);
  if (ec || status.type() == fs::file_type::not_found || status.type() == fs::file_type::regular) return "";
  switch (status.type()) {
    case fs::file_type::symlink: return "a symbolic link";
    case fs::file_type::block:
    case fs::file_type::character: return "a device";
    case fs::file_type::fifo: return "a named pipe";
    case fs::file_type::socket: return "a socket";
    default: return "not a regular file";
  }
}
}  // namespace

void check_output_file(const std::string& flag, const std::filesystem::path& path) {
  const std::string where = flag + " " + path.string();
  std::error_code ec;
  if (path.empty() || path.filename().empty()) throw UsageError(where + ": expected a file name");
  if (fs::is_directory(path, ec)) throw UsageError(where + ": is a folder (expected a file name)");
  if (const std::string kind = not_a_regular_file(path); !kind.empty())
    throw UsageError(where + ": is " + kind + ", which the output would replace (expected a new or regular file)");
  const fs::path folder = parent_or_dot(path);
  if (fs::exists(folder, ec) && !fs::is_directory(folder, ec))
    throw UsageError(where + ": " + folder.string() + " is a file, not a folder");
  if (!fs::is_directory(folder, ec)) throw UsageError(where + ": folder " + folder.string() + " does not exist");
  // access(W_OK) passes where creating a file still fails (root on /proc or /sys, a root-squashed
  // NFS share): create and remove one there, as the write will.
  const fs::path probe = folder / (".glam-probe-" + random_suffix());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    const int error = errno;
    throw UsageError(where + ": folder " + folder.string() + " is not writable (" + std::strerror(error) + ")");
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

void write_file_atomically(const fs::path& path, const std::string& contents) {
  write_file_atomically(path, [&](const ByteSink& write) { write(contents.data(), contents.size()); });
}

void write_file_atomically(const fs::path& path, const std::function<void(const ByteSink&)>& produce) {
  fs::path tmp = parent_or_dot(path) / ("." + path.filename().string() + ".tmp-" + random_suffix());
  const TempRemovedOnSignal removed_on_signal(tmp);
  try {
    write_and_sync(tmp, produce);
    // Checked again at the rename: the path may have changed since check_output_file.
    if (const std::string kind = not_a_regular_file(path); !kind.empty())
      throw std::system_error(std::make_error_code(std::errc::file_exists),
                              path.string() + " is " + kind + ", which the output would replace");
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

namespace {

// The output is staged in a new folder beside `dir` (or, for missing parents, in the nearest folder
// that exists): make and remove one there now, so that a place that takes no new folders is bad
// input before the work rather than a failure after it.
void check_folder_can_be_made(const std::string& where, const fs::path& dir) {
  fs::path existing = parent_or_dot(dir);
  std::error_code ec;
  while (!fs::exists(existing, ec)) {  // a relative path's missing first folder climbs to "."
    const fs::path up = parent_or_dot(existing);
    if (up == existing) break;
    existing = up;
  }
  if (!fs::is_directory(existing, ec))
    throw UsageError(where + ": " + existing.string() + " is not a folder, so the output cannot be made under it");
  const fs::path probe = existing / (".glam-probe-" + random_suffix());
  if (!fs::create_directory(probe, ec) || ec)
    throw UsageError(where + ": cannot make a folder in " + existing.string() + " (" +
                     (ec ? ec.message() : "it exists already") + ")");
  fs::remove(probe, ec);
}

// The checks of check_output_folder that write nothing (the writer repeats them before it writes);
// returns the folder.
fs::path checked_output_folder(const std::string& where, const fs::path& given, const std::set<std::string>& names) {
  const fs::path dir = folder_path(given);
  const fs::path last = dir.filename();
  if (dir.empty() || last.empty() || last == "." || last == "..")
    throw UsageError(where + ": expected the name of a new folder (the output replaces it as a whole)");
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (ec == std::errc::not_a_directory)  // out/x with out a file
    throw UsageError(where + ": " + dir.parent_path().string() + " is a file, not a folder");
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw UsageError(where + ": cannot look at it (" + ec.message() + ")");
  if (!fs::exists(status)) return dir;
  if (!fs::is_directory(status)) throw UsageError(where + ": is a file, expected a folder for the outputs");
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::error_code type_ec;
    if (!entry.is_regular_file(type_ec) || !names.count(name))
      throw UsageError(where + ": holds " + name +
                       (names.count(name) ? ", a folder or a link where this command writes a file"
                                          : ", which this command does not write") +
                       "; the output replaces the folder as a whole, so give a new folder or one of an earlier output");
  }
  if (ec) throw UsageError(where + ": cannot read the folder (" + ec.message() + ")");
  return dir;
}

}  // namespace

// An earlier output is moved aside when the new one replaces it. In a sticky folder (/tmp) only the
// owner of the output or of the folder, or root, may move it: another user's earlier output is bad
// input before the work. (Write permission on the folder is checked by making a folder in it.)
void check_folder_can_be_moved(const std::string& where, const fs::path& dir) {
  struct stat folder {}, parent {};
  if (::stat(dir.c_str(), &folder) != 0 || ::stat(parent_or_dot(dir).c_str(), &parent) != 0) return;
  const uid_t me = ::geteuid();
  if ((parent.st_mode & S_ISVTX) && me != 0 && folder.st_uid != me && parent.st_uid != me)
    throw UsageError(where + ": cannot replace the earlier output there: it is another user's, in a folder where "
                     "only its owner may move it (sticky); give a new folder");
}

void check_output_folder(const std::string& flag, const fs::path& given, const std::set<std::string>& names) {
  const std::string where = flag + " " + given.string();
  const fs::path dir = checked_output_folder(where, given, names);
  check_folder_can_be_made(where, dir);
  check_folder_can_be_moved(where, dir);
}

void write_directory_atomically(const fs::path& given, const std::map<std::string, std::string>& files) {
  std::set<std::string> names;
  for (const auto& [name, contents] : files) names.insert(name);
  const fs::path dir = checked_output_folder("output folder " + given.string(), given, names);
  fs::path parent = parent_or_dot(dir);
  fs::create_directories(parent);
  const std::string base = dir.filename().string();
  fs::path staging = parent / ("." + base + ".staging-" + random_suffix());
  fs::path old = parent / ("." + base + ".old-" + random_suffix());
  bool moved_old = false;
  try {
    fs::create_directory(staging);
    for (const auto& [name, contents] : files)
      write_and_sync(staging / name, [&](const ByteSink& write) { write(contents.data(), contents.size()); });
    // rename() cannot replace a non-empty folder, so the old one is moved aside first.
    if (fs::exists(dir)) {
      fs::rename(dir, old);
      moved_old = true;
    }
    fs::rename(staging, dir);
    // The new output is in place: an old one that cannot be removed (files of another user's in it)
    // is said, not a failure of the command.
    std::error_code left;
    if (moved_old && (fs::remove_all(old, left), left))
      std::cerr << "warning: the earlier output, moved aside to " << old.string() << ", could not be removed ("
                << left.message() << ")\n";
  } catch (const fs::filesystem_error& e) {  // after the work: an I/O failure, not bad input
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    std::string earlier;
    if (moved_old && !fs::exists(dir, ignored)) {
      fs::rename(old, dir, ignored);
      if (ignored) earlier = "; the earlier output is in " + old.string();
    }
    throw std::system_error(e.code(), "output folder " + given.string() + ": cannot write it" + earlier);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
}

}  // namespace glam
