// Preemption: Slurm sends SIGTERM (preemption, scancel) or the signal asked
// for with `#SBATCH --signal=USR1@120` before a time limit, and a user at a
// terminal presses Ctrl-C (SIGINT). The first SIGTERM, SIGUSR1 or SIGINT only
// sets a flag: every rank finishes its current step, the ranks
// agree (any rank signalled means all stop), save a checkpoint together and
// exit with kRequeueExitCode, which scripts/slurm turns into `scontrol
// requeue`. A second signal, 2 s or more after the first, ends the process at
// once (exit 128 + signal); one sooner is the same event by another route.
#pragma once

#include "src/parallel/communicator.h"

namespace moe {

constexpr int kRequeueExitCode = 75;  // EX_TEMPFAIL: "try again", with a checkpoint to resume from

void install_preemption_handlers();
// Collective over `world` (one tiny all-reduce): whether any rank was signalled.
bool preemption_requested(Communicator& world);

}  // namespace moe
