// A file written atomically and durably: the bytes go to PATH.tmp, are
// flushed to disk, and the file is renamed to PATH and its folder flushed, so
// a crash at any point leaves either the old PATH or the complete new one.
// Every byte is folded into a CRC-32 on the way (checkpoints record it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace moe {

class DurableFile {
 public:
  explicit DurableFile(const std::string& path);  // a UserError when PATH.tmp cannot be created

  void write(const void* data, size_t bytes);
  // Flushes, renames into place and flushes the folder. Returns the file's size.
  uint64_t commit();
  uint32_t crc32() const { return crc_; }

 private:
  std::string path_;
  std::unique_ptr<FILE, int (*)(FILE*)> file_;
  uint32_t crc_ = 0;
  uint64_t bytes_ = 0;
};

// Writes `text` to `path` through a DurableFile.
void write_file_durably(const std::string& path, const std::string& text);

// Flushes a folder's entries (after a rename into it) to disk.
void sync_directory(const std::string& dir);

}  // namespace moe
