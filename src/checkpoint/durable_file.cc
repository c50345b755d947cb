#include "src/checkpoint/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "src/core/crc32.h"
#include "src/core/user_error.h"

namespace moe {

DurableFile::DurableFile(const std::string& path)
    : path_(path), file_(std::fopen((path + ".tmp").c_str(), "wb"), &std::fclose) {
  if (!file_) throw UserError(path + ": cannot be written; check that its folder exists and is writable");
}

void DurableFile::write(const void* data, size_t bytes) {
  if (bytes == 0) return;
  if (std::fwrite(data, 1, bytes, file_.get()) != bytes) {
    throw UserError(path_ + ": writing failed (disk full?); nothing was replaced");
  }
  crc_ = crc32_update(crc_, data, bytes);
  bytes_ += bytes;
}

uint64_t DurableFile::commit() {
  if (std::fflush(file_.get()) != 0 || ::fsync(fileno(file_.get())) != 0) {
    throw UserError(path_ + ": writing failed (disk full?); nothing was replaced");
  }
  file_.reset();
  if (std::rename((path_ + ".tmp").c_str(), path_.c_str()) != 0) {
    throw UserError(path_ + ": cannot rename the finished file into place; check the folder's permissions");
  }
  sync_directory(std::filesystem::path(path_).parent_path().string());
  return bytes_;
}

void write_file_durably(const std::string& path, const std::string& text) {
  DurableFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: the rename itself already happened
  ::fsync(fd);
  ::close(fd);
}

}  // namespace moe
