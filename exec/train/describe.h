#pragma once
// glamexec describe: a model's parameters, FLOPs and one-chip memory (the accounting), and the
// buffers glamexec train itself allocates for a batch on one rank, as text or JSON.
#include <cstdint>
#include <ostream>
#include <string>

namespace glam::exec {

struct DescribeOptions {
  std::string model;           // id or TOML file
  int64_t batch_tokens = 0;    // 0: train's default, 8 sequences
  int64_t layers = 0;          // the model's first K layers (0: all)
  std::string format = "text"; // text or json
};

void run_describe(const DescribeOptions& o, std::ostream& out);

}  // namespace glam::exec
