#pragma once
// Outputs are written atomically: a reader sees the old file or the complete new one,
// never a partial write (write to a temporary beside the target, fsync, rename).
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>

namespace glam {

void write_file_atomically(const std::filesystem::path& path, const std::string& contents);

// The same for contents too large to hold twice: `produce` hands them over in pieces, calling its
// argument write(data, bytes) as often as it needs.
using ByteSink = std::function<void(const void* data, size_t bytes)>;
void write_file_atomically(const std::filesystem::path& path, const std::function<void(const ByteSink&)>& produce);

// Checks, before any work, that `path` can be written as a file: its folder exists and is writable,
// and it is new or a regular file (not a folder, device, pipe, socket or link, which the rename would
// replace). UsageError naming the option (`flag`, e.g. "--record") and the path.
void check_output_file(const std::string& flag, const std::filesystem::path& path);

// Checks, before any work, that `dir` may be replaced by an output folder holding `names`: it is new,
// or a folder holding only files of those names (an earlier output of the same command). Anything
// else there (a user's files, subfolders, the current folder) is refused rather than replaced.
// UsageError naming the option (`flag`, e.g. "--out") and the path.
void check_output_folder(const std::string& flag, const std::filesystem::path& dir, const std::set<std::string>& names);

// Writes every (relative name -> contents) file into `dir` (which check_output_folder must accept). The files are first written
// completely into a fresh sibling folder, which then replaces `dir` in one rename, so a
// crash leaves either the previous folder or the complete new one.
void write_directory_atomically(const std::filesystem::path& dir,
                                const std::map<std::string, std::string>& files);

}  // namespace glam
