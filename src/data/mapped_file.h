// MappedFile: a token file, open for the whole run. Its headers and indexes
// are parsed from a read-only mapping when it is opened; its tokens are read
// with pread, which checks first that the file is still the one opened. A
// file truncated or rewritten under a run (a tokenizer run again on the same
// path) is then a UserError naming it, not a SIGBUS in a mapped read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace moe {

class MappedFile {
 public:
  // A file that cannot be opened, stat'ed or mapped is a UserError naming it.
  static std::shared_ptr<const MappedFile> open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  // The mapping: for headers and indexes, parsed at open (nullptr when size() == 0).
  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }

  // Copies bytes [offset, offset + length) to `dest`. A file whose size or
  // modification time differs from when it was opened, or that ends before
  // the read does, is a UserError: it changed under the run.
  void read_at(int64_t offset, int64_t length, uint8_t* dest) const;

 private:
  MappedFile(std::string path, int fd, const uint8_t* data, int64_t size, int64_t mtime_ns)
      : path_(std::move(path)), fd_(fd), data_(data), size_(size), mtime_ns_(mtime_ns) {}

  [[noreturn]] void changed(const std::string& how) const;

  std::string path_;
  int fd_;
  const uint8_t* data_;
  int64_t size_;
  int64_t mtime_ns_;  // modification time at open
};

}  // namespace moe
