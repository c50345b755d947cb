#include "src/data/default_corpus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "src/core/user_error.h"
#include "src/core/durable_file.h"
#include "src/data/prepare.h"

namespace moe {
namespace fs = std::filesystem;
namespace {

// Written after everything else; its presence means the corpus is whole.
constexpr char kCompleteMarker[] = "COMPLETE";

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// Files with no extension, sorted by name: the text files of the package.
std::vector<std::string> fortune_files(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.has_extension() || p.filename().string().front() == '.' || !fs::is_regular_file(p)) continue;
    files.push_back(p.string());
  }
  if (ec)
    throw UserError(fmt::format("default corpus: cannot list {} ({}); run ./scripts/setup.sh", dir, ec.message()));
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<std::string> split_fortune_entries(const std::string& text) {
  std::vector<std::string> entries;
  std::string entry;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const size_t next = end == std::string::npos ? text.size() : end + 1;
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, end - pos, "%") == 0) {
      if (!is_blank(entry)) entries.push_back(entry);
      entry.clear();
    } else {
      entry.append(text, pos, next - pos);
    }
    pos = next;
  }
  if (!is_blank(entry)) entries.push_back(entry);
  return entries;
}

std::string find_fortunes_dir(const char* prefix_list) {
  const std::string list = prefix_list ? prefix_list : "";
  for (size_t begin = 0; begin <= list.size();) {
    size_t end = list.find(':', begin);
    if (end == std::string::npos) end = list.size();
    const std::string prefix = list.substr(begin, end - begin);
    std::error_code ec;
    const fs::path dir = fs::path(prefix) / "share" / "games" / "fortunes";
    if (!prefix.empty() && fs::is_directory(dir, ec)) return dir.string();
    begin = end + 1;
  }
  return kFortunesDir;
}

std::string ensure_default_corpus(const std::string& cache_dir, const std::string& fortunes_dir) {
  const std::string root = (fs::path(cache_dir) / "fortunes").string();
  std::error_code ec;
  if (fs::exists(fs::path(root) / kCompleteMarker, ec) && fs::exists(fs::path(root) / "train" / "tokens.npy", ec) &&
      fs::exists(fs::path(root) / "val" / "tokens.npy", ec)) {
    return root;
  }
  if (!fs::is_directory(fortunes_dir, ec)) {
    throw UserError(
        fmt::format("default corpus: {} does not exist (no data.dataset_path is set, so training uses the "
                    "text of the Debian package fortunes); run ./scripts/setup.sh (or scripts/setup.sh "
                    "--prefix=DIR and source DIR/env.sh), or set data.dataset_path",
                    fortunes_dir));
  }
  std::vector<std::string> documents;
  const std::vector<std::string> files = fortune_files(fortunes_dir);
  for (const std::string& file : files) {
    for (std::string& entry :
         split_fortune_entries(read_text_file(file, "default corpus", "run ./scripts/setup.sh to reinstall fortunes")))
      documents.push_back(std::move(entry));
  }
  if (documents.empty()) {
    throw UserError(
        fmt::format("default corpus: {} holds no fortune text; run ./scripts/setup.sh to reinstall "
                    "fortunes, or set data.dataset_path",
                    fortunes_dir));
  }
  const std::string source = fmt::format("{} entries of {} fortune files in {} (Debian package fortunes)",
                                         documents.size(), files.size(), fortunes_dir);
  prepare_documents_dataset(documents, root, kDefaultCorpusValFraction, source);
  write_file_durably((fs::path(root) / kCompleteMarker).string(),
                     [&](std::ostream& out) { out << "complete: " << source << "\n"; });
  return root;
}

}  // namespace moe
