#include "common/atomic_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

void write_and_sync(const fs::path& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot create " + path.string());
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw std::system_error(err, std::generic_category(), "cannot write " + path.string());
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw std::system_error(errno, std::generic_category(), "cannot flush " + path.string());
}

fs::path parent_or_dot(const fs::path& p) {
  return p.has_parent_path() ? p.parent_path() : fs::path(".");
}

}  // namespace

void check_output_file(const std::string& flag, const std::filesystem::path& path) {
  const std::string where = flag + " " + path.string();
  std::error_code ec;
  if (path.empty() || path.filename().empty()) throw UsageError(where + ": expected a file name");
  if (fs::is_directory(path, ec)) throw UsageError(where + ": is a folder (expected a file name)");
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!fs::is_directory(folder, ec)) throw UsageError(where + ": folder " + folder.string() + " does not exist");
  if (access(folder.c_str(), W_OK) != 0) throw UsageError(where + ": folder " + folder.string() + " is not writable");
}

void write_file_atomically(const fs::path& path, const std::string& contents) {
  fs::path tmp = parent_or_dot(path) / ("." + path.filename().string() + ".tmp-" + random_suffix());
  try {
    write_and_sync(tmp, contents);
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

void write_directory_atomically(const fs::path& dir, const std::map<std::string, std::string>& files) {
  fs::path parent = parent_or_dot(dir);
  fs::create_directories(parent);
  std::string base = dir.filename().string();
  if (base.empty()) base = dir.parent_path().filename().string();
  fs::path staging = parent / ("." + base + ".staging-" + random_suffix());
  fs::path old = parent / ("." + base + ".old-" + random_suffix());
  try {
    fs::create_directory(staging);
    for (const auto& [name, contents] : files) write_and_sync(staging / name, contents);
    // rename() cannot replace a non-empty folder, so the old one is moved aside first.
    bool had_old = fs::exists(dir);
    if (had_old) fs::rename(dir, old);
    fs::rename(staging, dir);
    if (had_old) fs::remove_all(old);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
}

}  // namespace glam
