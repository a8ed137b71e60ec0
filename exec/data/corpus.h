#pragma once
// The text the project trains on when the user gives none: the license texts that Debian's
// base-files package ships in /usr/share/common-licenses (about 240 KB of English prose, present on
// every Debian system, so nothing is downloaded). Any user text file can replace it (--text).
#include <filesystem>
#include <string>

namespace glam::exec {

inline constexpr const char* kDefaultCorpusDir = "/usr/share/common-licenses";

// The default corpus: the regular files (not links) of kDefaultCorpusDir, sorted by name, joined.
std::string default_corpus_text();
// A user's text file; a missing or unreadable file is a UsageError.
// The whole file; UsageError naming it as `what` ("text file", "SentencePiece model") when it is
// missing, a folder or unreadable.
std::string read_text_file(const std::filesystem::path& path, const std::string& what = "text file");

}  // namespace glam::exec
