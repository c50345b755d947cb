// One run at a time per checkpoint folder: rank 0 holds an exclusive lock on
// <dir>/.lock (flock) for the whole run, and writes its host, pid and start
// time into it. The lock goes with the process (a killed run leaves no stale
// lock behind); a second run is refused with one line naming the holder.
#pragma once

#include <string>

namespace moe {

class CheckpointLock {
 public:
  // Creates the folder if needed. A UserError when another process holds the
  // lock (naming its host and pid) or the folder cannot be written.
  explicit CheckpointLock(const std::string& dir);
  ~CheckpointLock();
  CheckpointLock(const CheckpointLock&) = delete;
  CheckpointLock& operator=(const CheckpointLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace moe
