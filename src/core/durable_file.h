// The one way files are written: atomically and durably. The bytes go to a
// temporary sibling (PATH.tmp-<pid>, so that processes writing the same file
// at once, ranks on one node, stay apart), are flushed to disk, and the file
// is renamed to PATH and its folder flushed: a crash or an error at any point
// leaves either the old PATH or the complete new one, never a part, and an
// abandoned temporary file is removed. Every byte is folded into a CRC-32 on
// the way (checkpoints record it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

namespace moe {

class DurableFile {
 public:
  explicit DurableFile(const std::string& path);  // a UserError when the temporary file cannot be created
  ~DurableFile();                                 // without commit(): the temporary file is removed
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, size_t bytes);
  // Flushes, renames into place and flushes the folder. Returns the file's size.
  uint64_t commit();
  uint32_t crc32() const { return crc_; }

 private:
  std::string path_, temp_;
  std::unique_ptr<FILE, int (*)(FILE*)> file_;
  uint32_t crc_ = 0;
  uint64_t bytes_ = 0;
  bool committed_ = false;
};

// Writes `text` to `path` through a DurableFile.
void write_file_durably(const std::string& path, const std::string& text);
// Same, for contents written to a stream: `write_contents` writes the whole
// file to the stream it is given (large files stream through, not held).
void write_file_durably(const std::string& path, const std::function<void(std::ostream&)>& write_contents);

// Flushes a folder's entries (after a rename into it) to disk.
void sync_directory(const std::string& dir);

}  // namespace moe
