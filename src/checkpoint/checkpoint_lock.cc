#include "src/checkpoint/checkpoint_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "src/core/user_error.h"

namespace moe {

CheckpointLock::CheckpointLock(const std::string& dir) {
  const std::string path = dir + "/.lock";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw UserError(fmt::format("checkpoint.dir = \"{}\": cannot create {} ({}); point it at a writable folder", dir,
                                path, std::strerror(errno)));
  }
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    if (error == EWOULDBLOCK) {
      char holder[256] = {};
      const ssize_t n = pread(fd_, holder, sizeof holder - 1, 0);
      std::string who = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "another process";
      while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
      close(fd_);
      fd_ = -1;
      throw UserError(
          fmt::format("checkpoint.dir = \"{}\" is in use by another run ({}): two runs would overwrite "
                      "each other's checkpoints; wait for it to end, or give this run another "
                      "checkpoint.dir",
                      dir, who));
    }
    // A file system without locks (some network mounts): go on, unprotected.
    spdlog::warn("checkpoint.dir = \"{}\": cannot lock {} ({}); nothing stops a second run from using this folder", dir,
                 path, std::strerror(error));
    return;
  }
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[64] = {};
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  const std::string me = fmt::format("host {}, pid {}, since {}\n", host, static_cast<long>(getpid()), when);
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    spdlog::warn("checkpoint.dir = \"{}\": cannot write who holds {}", dir, path);
  }
}

CheckpointLock::~CheckpointLock() {
  if (fd_ >= 0) close(fd_);  // releases the lock
}

}  // namespace moe
