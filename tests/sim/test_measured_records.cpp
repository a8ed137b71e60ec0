// GPU run records kept under reports/measured/ are validated in every test run, so the
// simulator keeps being checked against real hardware after the GPU is gone: with the chip's
// default profile and, when present, the GPU's measured one (profile-h200.toml); and the energy
// model's chip power against the GPUs' energy counters.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <optional>

#include "validate/validation.h"

namespace glam {
namespace {

std::vector<std::string> measured_records() {
  std::vector<std::string> out;
  const auto dir = std::filesystem::path(GLAM_SOURCE_DIR) / "reports" / "measured";
  if (!std::filesystem::is_directory(dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(MeasuredRecords, SimulatorPredictsTheGpuRuns) {
  auto records = measured_records();
  if (records.empty()) GTEST_SKIP() << "no GPU run records under reports/measured/ yet (scripts/gpu_check.sh makes them)";
  // With the chip's default profile, and with the GPU's measured one when gpu_check.sh wrote it.
  std::vector<std::optional<std::string>> profiles = {std::nullopt};
  const auto measured_profile = std::filesystem::path(GLAM_SOURCE_DIR) / "reports" / "measured" / "profile-h200.toml";
  if (std::filesystem::exists(measured_profile)) profiles.push_back(measured_profile.string());
  for (const auto& profile : profiles) {
    ValidationSummary s = validate_records(records, profile, Fidelity::kAnalytical);
    ASSERT_EQ(s.records.size(), records.size());
    for (const auto& r : s.records) {
      EXPECT_GT(r.simulated_step_s, 0) << r.record.file;
      EXPECT_FALSE(r.ops.empty()) << r.record.file << ": no op ids in common with the simulation";
    }
    // Loose bounds: the benchmark targets (5% median, 10% per op) are reported in the issue notes;
    // this guards against the simulator drifting far from real hardware.
    EXPECT_LT(s.median_abs_step_error, 0.25) << profile.value_or("default profile") << "\n" << s.to_text();
    EXPECT_LT(s.max_abs_step_error, 0.60) << profile.value_or("default profile") << "\n" << s.to_text();
    // Where the GPU's energy counter was read, the energy model's chip power within 40% of it (a
    // guard as loose as the step's; the figures themselves go in the issue notes).
    for (const auto& r : s.records)
      if (r.record.measured_power_W > 0) {
        EXPECT_LT(std::fabs(r.power_error()), 0.40) << r.record.file << "\n" << s.to_text();
      }
  }
}

}  // namespace
}  // namespace glam
