// MappedFile: a whole file mapped read-only into memory. Token files can be
// far larger than RAM; the kernel pages in only the windows the sampler reads.
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
  const uint8_t* data() const { return data_; }  // nullptr when size() == 0
  int64_t size() const { return size_; }

 private:
  MappedFile(std::string path, const uint8_t* data, int64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_;
  int64_t size_;
};

}  // namespace moe
