#include "data/corpus.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/errors.h"

namespace glam::exec {

std::string read_text_file(const std::filesystem::path& path, const std::string& what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw UsageError(path.string() + ": is a folder, expected a " + what);
  if (!std::filesystem::exists(path, ec)) throw UsageError(path.string() + ": no such " + what);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(path.string() + ": cannot read the " + what);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string default_corpus_text() {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kDefaultCorpusDir, ec))
    if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());
  if (files.empty())
    throw UsageError(std::string("no default corpus: ") + kDefaultCorpusDir +
                     " is empty or missing (Debian's base-files); pass --text FILE");
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) text += read_text_file(f) + "\n";
  return text;
}

}  // namespace glam::exec
