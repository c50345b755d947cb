#include "src/data/data_files.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "src/core/user_error.h"

namespace moe {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string without_suffix(const std::string& s, size_t n) { return s.substr(0, s.size() - n); }

bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

class Rejecter {
 public:
  Rejecter(const std::string& section, const std::string& path) : section_(section), path_(path) {}
  [[noreturn]] void operator()(const std::string& problem, const std::string& fix) const {
    throw UserError(fmt::format("{}.dataset_path = {}: {}; {}", section_, path_, problem, fix));
  }

 private:
  const std::string& section_;
  const std::string& path_;
};

std::vector<DataFileSpec> find_in_directory(const std::string& dir, const std::string& pattern, const Rejecter& reject,
                                            const std::string& section) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // Megatron indexes travel with their .bin and are never token files themselves.
    if (ends_with(name, ".idx")) continue;
    if (::fnmatch(pattern.c_str(), name.c_str(), FNM_PERIOD) != 0) continue;
    if (is_file(it->path().string())) names.push_back(name);
  }
  if (ec) reject(fmt::format("cannot list the directory ({})", ec.message()), "check that it is readable");
  if (names.empty()) {
    reject(fmt::format("no file matches {}.file_pattern \"{}\"", section, pattern),
           fmt::format("set {}.file_pattern to match the token files there (e.g. \"*.npy\", \"*.bin\"; Megatron pairs "
                       "are matched by their .bin)",
                       section));
  }
  std::sort(names.begin(), names.end());

  std::vector<DataFileSpec> files;
  for (const std::string& name : names) {
    const std::string path = (fs::path(dir) / name).string();
    std::string idx;
    if (ends_with(name, ".bin") && is_file(without_suffix(path, 4) + ".idx")) idx = without_suffix(path, 4) + ".idx";
    files.push_back({path, idx});
  }
  // A directory of Megatron pairs with one .idx missing would otherwise read
  // that .bin as raw tokens without a word.
  const auto is_pair = [](const DataFileSpec& f) { return !f.megatron_idx_path.empty(); };
  if (std::any_of(files.begin(), files.end(), is_pair)) {
    for (const DataFileSpec& f : files) {
      if (!is_pair(f) && ends_with(f.path, ".bin")) {
        reject(fmt::format("{} has no {}.idx beside it, while other .bin files here are Megatron-LM pairs", f.path,
                           without_suffix(f.path, 4)),
               "copy the missing .idx, or move the .bin out of the directory");
      }
    }
  }
  return files;
}

}  // namespace

std::vector<DataFileSpec> find_data_files(const std::string& dataset_path, const std::string& file_pattern,
                                          const std::string& config_section) {
  const Rejecter reject(config_section, dataset_path);
  if (dataset_path.empty()) reject("is empty", "set it to a token file or a directory of token files");
  std::error_code ec;
  if (fs::is_directory(dataset_path, ec)) return find_in_directory(dataset_path, file_pattern, reject, config_section);

  const std::string& p = dataset_path;
  const bool exists = fs::exists(p, ec);
  // Megatron pairs may be named by either file or, as Megatron does, by the shared prefix.
  std::string prefix;
  if (exists && ends_with(p, ".idx"))
    prefix = without_suffix(p, 4);
  else if (exists && ends_with(p, ".bin") && is_file(without_suffix(p, 4) + ".idx"))
    prefix = without_suffix(p, 4);
  else if (!exists && (is_file(p + ".bin") || is_file(p + ".idx")))
    prefix = p;
  if (!prefix.empty()) {
    const std::string bin = prefix + ".bin", idx = prefix + ".idx";
    if (!is_file(bin)) reject(fmt::format("Megatron-LM pair is missing {}", bin), "copy the .bin beside its .idx");
    if (!is_file(idx)) reject(fmt::format("Megatron-LM pair is missing {}", idx), "copy the .idx beside its .bin");
    return {{bin, idx}};
  }
  if (!exists) {
    reject("does not exist",
           "set it to a token file (.npy, .bin) or a directory of them, or prepare one from text first");
  }
  return {{p, ""}};
}

}  // namespace moe
