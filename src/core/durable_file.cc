#include "src/core/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <streambuf>

#include "src/core/crc32.h"
#include "src/core/user_error.h"

namespace moe {
namespace {

// A stream buffer that hands its bytes to a DurableFile in blocks.
class DurableStreamBuf : public std::streambuf {
 public:
  explicit DurableStreamBuf(DurableFile& file) : file_(file) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  void flush_to_file() {
    file_.write(pbase(), static_cast<size_t>(pptr() - pbase()));
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }

 protected:
  int_type overflow(int_type c) override {
    flush_to_file();
    if (!traits_type::eq_int_type(c, traits_type::eof())) sputc(traits_type::to_char_type(c));
    return traits_type::not_eof(c);
  }
  int sync() override {
    flush_to_file();
    return 0;
  }

 private:
  DurableFile& file_;
  std::array<char, 1 << 16> buffer_;
};

}  // namespace

DurableFile::DurableFile(const std::string& path)
    : path_(path),
      temp_(path + ".tmp-" + std::to_string(::getpid())),
      file_(std::fopen(temp_.c_str(), "wb"), &std::fclose) {
  if (!file_) throw UserError(path + ": cannot be written; check that its folder exists and is writable");
}

DurableFile::~DurableFile() {
  if (committed_) return;
  file_.reset();
  std::remove(temp_.c_str());
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
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    throw UserError(path_ + ": cannot rename the finished file into place; check the folder's permissions");
  }
  committed_ = true;
  sync_directory(std::filesystem::path(path_).parent_path().string());
  return bytes_;
}

void write_file_durably(const std::string& path, const std::string& text) {
  DurableFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

void write_file_durably(const std::string& path, const std::function<void(std::ostream&)>& write_contents) {
  DurableFile f(path);
  DurableStreamBuf buffer(f);
  std::ostream out(&buffer);
  out.exceptions(std::ios::badbit);  // a failed write throws its UserError instead of being swallowed
  write_contents(out);
  buffer.flush_to_file();
  f.commit();
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: the rename itself already happened
  ::fsync(fd);
  ::close(fd);
}

}  // namespace moe
