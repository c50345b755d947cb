#include "src/data/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/core/user_error.h"

namespace moe {
namespace {

[[noreturn]] void fail(const std::string& path, const char* step, int err) {
  throw UserError("data file " + path + ": cannot " + step + " it (" + std::strerror(err) +
                  "); check that the path is right and readable");
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + static_cast<int64_t>(st.st_mtim.tv_nsec);
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "open", errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, "stat", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw UserError("data file " + path + ": is not a regular file; point the dataset path at token files");
  }
  const int64_t size = static_cast<int64_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {  // mmap rejects a zero length; an empty file maps to nothing
    void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail(path, "memory-map", err);
    }
    data = static_cast<const uint8_t*>(p);
  }
  return std::shared_ptr<const MappedFile>(new MappedFile(path, fd, data, size, mtime_ns(st)));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
  ::close(fd_);
}

void MappedFile::changed(const std::string& how) const {
  throw UserError("data file " + path_ + ": changed while the run reads it (" + how +
                  "); a token file must stay as it is while a run reads it: write new data under another name, or "
                  "restore this file, then resume from the last checkpoint");
}

void MappedFile::read_at(int64_t offset, int64_t length, uint8_t* dest) const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail(path_, "stat", errno);
  if (static_cast<int64_t>(st.st_size) != size_) {
    changed(std::to_string(size_) + " bytes when opened, " + std::to_string(st.st_size) + " now");
  }
  if (mtime_ns(st) != mtime_ns_) changed("rewritten since it was opened");
  while (length > 0) {
    const ssize_t n = ::pread(fd_, dest, static_cast<size_t>(length), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path_, "read", errno);
    if (n == 0) changed("it ends at byte " + std::to_string(offset) + ", before the tokens it held");
    offset += n;
    length -= n;
    dest += n;
  }
}

}  // namespace moe
