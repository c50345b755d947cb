#include "src/data/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "src/core/user_error.h"

namespace moe {

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write_contents) {
  // The pid keeps processes that prepare the same file at once (ranks on one node) apart.
  const std::string temp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw UserError("cannot create " + temp + " (" + std::strerror(errno) +
                      "); check that its directory is writable");
    }
    write_contents(out);
    out.flush();
    if (!out) {
      std::remove(temp.c_str());
      throw UserError("cannot write " + temp + "; check the free space and permissions of its file system");
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    throw UserError("cannot rename " + temp + " to " + path + " (" + std::strerror(err) + "); check permissions");
  }
}

}  // namespace moe
