#include "src/train/preemption.h"

#include <time.h>
#include <unistd.h>

#include <csignal>

namespace moe {
namespace {

volatile std::sig_atomic_t signalled = 0;
volatile std::sig_atomic_t first_at = 0;  // seconds (CLOCK_MONOTONIC) of the first signal

void on_signal(int signo) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  if (signalled) {
    // One event often arrives twice (Slurm's TERM to the ranks, and the
    // launch script's USR1 for the same scancel): only a second signal a
    // moment later means "stop now".
    if (now.tv_sec - first_at >= 2) _exit(128 + signo);
    return;
  }
  signalled = 1;
  first_at = static_cast<std::sig_atomic_t>(now.tv_sec);
}

}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = &on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);  // Ctrl-C: save and stop; a second one stops at once
}

bool preemption_requested(Communicator& world) { return any_rank(world, signalled != 0); }

}  // namespace moe
