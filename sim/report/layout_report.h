#pragma once
// The layouts the plan chooser compared (`glamsim run|plan --layouts`): each with its memory per
// chip and, where it fits, its simulated step, so a user sees what the chosen plan won against.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/default_plan.h"

namespace glam {

std::string layouts_text(const std::vector<LayoutTrial>& trials, const ParallelPlan& chosen, double hbm_bytes);
nlohmann::json layouts_json(const std::vector<LayoutTrial>& trials, const ParallelPlan& chosen);

}  // namespace glam
