#include <iostream>

#include "cli/command.h"
#include "common/cli_checks.h"
#include "common/catalogue.h"
#include "model_config.h"
#include "model_table.h"

namespace glam::cli {

void add_models_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> ids;
    std::string format = "text";
    bool fields = false;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("models", "Model catalogue: parameters and FLOPs, computed beside the paper's figures");
  cmd->add_option("ids", opts->ids, "Model ids, TOML files or patterns over the catalogue ('glam-1.7b*'; default: the whole catalogue)");
  cmd->add_option("--format", opts->format, "text (or table) or json")->transform(cli_checks::output_format());
  cmd->add_flag("--fields", opts->fields, "List every model config field with its type, unit and default");
  cmd->callback([opts] {
    if (opts->fields) {
      std::cout << describe_model_fields();
      return;
    }
    std::vector<std::string> ids =
        opts->ids.empty() ? catalogue_ids("models") : expand_catalogue_patterns("models", opts->ids, "models");
    std::vector<ModelRow> rows;
    for (const auto& id : ids) rows.push_back(model_row(load_model(id)));
    if (opts->format == "json") {
      nlohmann::json out = {{"models", nlohmann::json::array()}};
      for (const auto& r : rows) out["models"].push_back(model_row_json(r));
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << render_model_table(rows);
    }
  });
}

}  // namespace glam::cli
