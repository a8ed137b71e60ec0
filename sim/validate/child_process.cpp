#include "validate/child_process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "common/errors.h"

namespace glam {

namespace {

// The child's message: one status byte ('o' result, 'u' usage error, 'e' other error), then the text.
void write_all(int fd, const std::string& s) {
  for (size_t done = 0; done < s.size();) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the parent is gone: nothing to tell
    done += static_cast<size_t>(n);
  }
}

}  // namespace

std::string run_in_child_process(const std::function<std::string()>& work) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error(std::string("cannot make a pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]), ::close(fds[1]);
    throw std::runtime_error(std::string("cannot start a child process: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::close(fds[0]);
    std::string message;
    try {
      message = "o" + work();
    } catch (const UsageError& e) {
      message = std::string("u") + e.what();
    } catch (const std::exception& e) {
      message = std::string("e") + e.what();
    } catch (...) {
      message = "ean error that is not a std::exception";
    }
    write_all(fds[1], message);
    ::close(fds[1]);
    ::_exit(0);  // no atexit handlers or destructors of the parent's state
  }
  ::close(fds[1]);
  std::string got;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got.empty() || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("a child process simulating part of the work died (" +
                             std::string(WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                                             : "status " + std::to_string(WEXITSTATUS(status))) +
                             ")");
  const std::string text = got.substr(1);
  if (got[0] == 'u') throw UsageError(text);
  if (got[0] == 'e') throw std::runtime_error(text);
  return text;
}

nlohmann::json json_figure(double value) {
  if (std::isfinite(value)) return value;
  return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
}

double figure_of(const nlohmann::json& j) {
  if (!j.is_string()) return j.get<double>();
  const std::string& text = j.get_ref<const std::string&>();
  if (text == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (text == "inf" || text == "-inf") return (text == "inf" ? 1 : -1) * std::numeric_limits<double>::infinity();
  return j.get<double>();  // the type error, naming the value's type
}

}  // namespace glam
