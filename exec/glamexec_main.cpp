// glamexec: the reference executor of the GLaM training step.
#include <iostream>

#include <CLI/CLI.hpp>

#include "accounting.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "model_config.h"

int main(int argc, char** argv) {
  CLI::App app{"glamexec: run the GLaM training step on the CPU or a GPU and record what it measured"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "glamexec 0.1.0");
  std::string model_id;
  int64_t tokens = 1024;
  CLI::App* describe = app.add_subcommand("describe", "Parameters, FLOPs and single-chip memory of a model");
  describe->add_option("--model", model_id, "Model id or TOML file")->required();
  describe->add_option("--batch-tokens", tokens, "Tokens per step")->check(CLI::PositiveNumber);
  describe->callback([&] {
    glam::ModelConfig m = glam::load_model(model_id);
    auto p = glam::count_params(m);
    auto f = glam::flops_per_token(m);
    glam::ShardingForMemory s;
    s.tokens_per_chip = tokens;
    auto mem = glam::memory_per_chip(m, s);
    std::cout << m.id << ": " << glam::format_count(p.total) << " parameters, " << glam::format_count(p.activated)
              << " activated; " << glam::format_fixed(f.train() / 1e9, 1) << " GFLOP per token per step\n"
              << "one chip, " << tokens << " tokens: weights " << glam::format_bytes(mem.weights_bytes)
              << ", gradients " << glam::format_bytes(mem.gradients_bytes) << ", optimizer "
              << glam::format_bytes(mem.optimizer_bytes) << ", activations " << glam::format_bytes(mem.activations_bytes)
              << "\n";
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : glam::kExitBadInput;
  } catch (const glam::ConfigError& e) {
    std::cerr << "glamexec: error: " << e.what() << "\n";
    return glam::kExitBadInput;
  } catch (const glam::UsageError& e) {
    std::cerr << "glamexec: error: " << e.what() << "\n";
    return glam::kExitBadInput;
  }
  return 0;
}
