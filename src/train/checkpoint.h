// Checkpoints: a directory step_<N>/ holding one safetensors file per rank
// (the state pieces that rank writes: each piece is written by one replica)
// and metadata.json: the config, the step, the tokens seen, the data and
// schedule position, every tensor's global shape and which file holds which
// slice of it, and each file's size and CRC-32.
//
// Saving is atomic: every rank writes into step_<N>.tmp/; when all have
// finished, rank 0 writes the metadata, renames the folder to step_<N>, then
// points `latest` at it (itself a renamed file), and only then removes old
// checkpoints beyond keep_last_n. A crash at any point leaves the previous
// checkpoint and `latest` intact.
//
// Loading reshards: each rank rebuilds the global tensors it needs from the
// slices in the files and keeps its own piece under the current layout, so a
// checkpoint loads under any layout and world size. Files are checked
// (size, CRC-32, shapes) before anything is used.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/config/job_config.h"
#include "src/parallel/communicator.h"
#include "src/train/state_tensor.h"

namespace moe {

struct TrainPosition {
  int64_t step = 0;         // the last finished optimizer step
  int64_t tokens_seen = 0;  // through that step
};

// Collective over `world`: every rank calls it with its own state. Returns the step folder.
std::string save_checkpoint(const JobConfig& cfg, const TrainPosition& at, const std::vector<StateTensor>& state,
                            Communicator& world);

// The step folder that <dir>/latest names, or "" when there is none.
std::string latest_checkpoint(const std::string& dir);

// Fills this rank's pieces from a step folder (or a checkpoint folder with a
// `latest`). Any mismatch (missing or damaged file, missing tensor, different
// shape) is a UserError naming the file and the tensor; nothing is changed
// before every file has been checked.
TrainPosition load_checkpoint(const std::string& path, const std::vector<StateTensor>& state);

}  // namespace moe
