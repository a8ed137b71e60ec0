#pragma once
// Runs work in a forked child process and returns the text it produced. SimGrid keeps one platform
// per process, so flow-fidelity simulations of several clusters each run in a child of their own.
#include <functional>
#include <string>

namespace glam {

// Forks; the child runs `work` and sends back its result, or the message of what it threw. Throws
// UsageError with the child's message when `work` threw a UsageError, std::runtime_error when it threw
// anything else or the child died.
std::string run_in_child_process(const std::function<std::string()>& work);

}  // namespace glam
