#pragma once
// Runs work in a forked child process and returns the text it produced. SimGrid keeps one platform
// per process, so flow-fidelity simulations of several clusters each run in a child of their own.
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace glam {

// Forks; the child runs `work` and sends back its result, or the message of what it threw. Throws
// UsageError with the child's message when `work` threw a UsageError, std::runtime_error when it threw
// anything else or the child died.
std::string run_in_child_process(const std::function<std::string()>& work);

// A figure as JSON that reads back as the same double, for results sent back from a child: a
// non-finite one (JSON has no number for it; nlohmann would write null) as "nan", "inf" or "-inf".
nlohmann::json json_figure(double value);
// Throws nlohmann::json::type_error for anything json_figure does not write.
double figure_of(const nlohmann::json& j);

}  // namespace glam
