// GPU run records kept under reports/measured/ are validated in every test run, so the
// simulator keeps being checked against real hardware after the GPU is gone.
#include <gtest/gtest.h>

#include <filesystem>

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
  ValidationSummary s = validate_records(records, std::nullopt, Fidelity::kAnalytical);
  ASSERT_EQ(s.records.size(), records.size());
  for (const auto& r : s.records) {
    EXPECT_GT(r.simulated_step_s, 0) << r.record.file;
    EXPECT_FALSE(r.ops.empty()) << r.record.file << ": no op ids in common with the simulation";
  }
  // Loose bounds: the benchmark targets (5% median, 10% per op) are reported in the issue notes;
  // this guards against the simulator drifting far from real hardware.
  EXPECT_LT(s.median_abs_step_error, 0.25) << s.to_text();
  EXPECT_LT(s.max_abs_step_error, 0.60) << s.to_text();
}

}  // namespace
}  // namespace glam
