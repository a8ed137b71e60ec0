// Regression against reference statistics, as gem5 does: each case of tests/sim/reference/cases.txt
// is simulated again and every statistic of its stats.txt compared with the committed one. A change of
// any simulated figure, or a statistic added or gone, fails here with the list of what moved; an
// intended change is committed with scripts/update_reference_stats.sh.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "support/run_command.h"

namespace glam {
namespace {

namespace fs = std::filesystem;

const fs::path kReferenceDir = fs::path(GLAM_SOURCE_DIR) / "tests/sim/reference";

// The simulator is deterministic, so figures agree to the last bit on one build; the tolerance only
// forgives last-digit differences of another compiler or libm, far below any change of the model.
constexpr double kRelativeTolerance = 1e-6;

struct Case {
  std::string name;
  std::string args;
};

std::vector<Case> read_cases() {
  std::vector<Case> cases;
  std::ifstream in(kReferenceDir / "cases.txt");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    Case c;
    if (!(words >> c.name) || c.name[0] == '#') continue;
    std::getline(words, c.args);
    c.args.erase(0, c.args.find_first_not_of(' '));
    c.args = " " + c.args;
    cases.push_back(c);
  }
  return cases;
}

// stats.txt lines "name  value  # description (unit)" between the begin and end markers.
std::map<std::string, double> parse_stats(const std::string& text) {
  std::map<std::string, double> stats;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '-') continue;
    std::istringstream words(line);
    std::string name, value;
    words >> name >> value;
    stats[name] = std::stod(value);
  }
  return stats;
}

bool agree(double reference, double now) {
  return std::fabs(now - reference) <= kRelativeTolerance * std::max(std::fabs(reference), std::fabs(now));
}

// Test names and failure headers show the case, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ReferenceStats : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceStats, EveryStatisticAsCommitted) {
  const Case& c = GetParam();
  const fs::path ref_file = kReferenceDir / (c.name + ".stats.txt");
  ASSERT_TRUE(fs::exists(ref_file)) << ref_file << " is missing: run scripts/update_reference_stats.sh";
  const auto reference = parse_stats(testing::read_whole_file(ref_file));
  ASSERT_GT(reference.size(), 10u) << ref_file;

  const fs::path out = fs::temp_directory_path() / ("glam-ref-" + c.name + "-" + std::to_string(::getpid()));
  fs::remove_all(out);
  auto r = testing::run_command("cd '" GLAM_SOURCE_DIR "' && '" GLAM_BIN_DIR "/glamsim' run" + c.args + " --quiet --out '" +
                                out.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto now = parse_stats(testing::read_whole_file(out / "stats.txt"));
  fs::remove_all(out);

  std::ostringstream moved;
  int differences = 0;
  for (const auto& [name, value] : reference) {
    auto it = now.find(name);
    if (it == now.end()) {
      moved << "  " << name << ": gone (was " << value << ")\n";
      ++differences;
    } else if (!agree(value, it->second)) {
      moved << "  " << name << ": " << value << " -> " << it->second << " ("
            << (value != 0 ? std::to_string(100 * (it->second - value) / value) + "%" : "was 0") << ")\n";
      ++differences;
    }
  }
  for (const auto& [name, value] : now)
    if (!reference.count(name)) {
      moved << "  " << name << ": new (" << value << ")\n";
      ++differences;
    }
  EXPECT_EQ(differences, 0) << c.name << " (glamsim run" << c.args << ") differs from " << ref_file << ":\n"
                            << moved.str()
                            << "If the change is intended, run scripts/update_reference_stats.sh and commit the "
                               "new reference, saying why the figures moved.";
}

INSTANTIATE_TEST_SUITE_P(Cases, ReferenceStats, ::testing::ValuesIn(read_cases()),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           std::string id;
                           for (char ch : param.param.name) id += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return id;
                         });

// The case list itself: a case without a reference, or a reference without a case, is a mistake.
TEST(ReferenceStatsFiles, EachCaseHasItsReferenceAndNoneIsLeftOver) {
  const auto cases = read_cases();
  ASSERT_GE(cases.size(), 5u);
  std::map<std::string, int> names;
  for (const auto& c : cases) EXPECT_EQ(++names[c.name], 1) << "case named twice: " << c.name;
  for (const auto& f : fs::directory_iterator(kReferenceDir)) {
    const std::string file = f.path().filename().string();
    const std::string suffix = ".stats.txt";
    if (file.size() <= suffix.size() || file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    EXPECT_TRUE(names.count(file.substr(0, file.size() - suffix.size()))) << file << " has no case in cases.txt";
  }
}

}  // namespace
}  // namespace glam
