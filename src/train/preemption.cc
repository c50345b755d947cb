#include "src/train/preemption.h"

#include <unistd.h>

#include <csignal>

namespace moe {
namespace {

volatile std::sig_atomic_t signalled = 0;

void on_signal(int signo) {
  if (signalled) _exit(128 + signo);  // the second signal: stop now
  signalled = 1;
}

}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = &on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

bool preemption_requested(Communicator& world) {
  return any_rank(world, signalled != 0);
}

}  // namespace moe
