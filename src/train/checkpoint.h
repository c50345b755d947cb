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
// Lineage: a run that starts from scratch draws a lineage id; a resumed run
// continues the lineage of the checkpoint it loads; every checkpoint records
// its lineage in metadata.json. Rotation removes only complete checkpoints of
// the saving run's own lineage (folders named exactly step_<digits> with a
// metadata.json naming it), keeps the newest keep_last_n of them and always
// the one just written, and removes by renaming to step_<N>.deleting first, so
// a kill never leaves half a folder that looks like a checkpoint.
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
  std::string lineage;      // the run's lineage id (empty in checkpoints written before lineages)
};

// A complete checkpoint of a folder: step_<digits>/ with a readable metadata.json.
struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
  std::string lineage;
};
// The complete checkpoints in `dir`, by step ("" or a missing folder: none).
std::vector<CheckpointEntry> list_checkpoints(const std::string& dir);

// Collective over `world`: every rank calls it with its own state. Returns the step folder.
std::string save_checkpoint(const JobConfig& cfg, const TrainPosition& at, const std::vector<StateTensor>& state,
                            Communicator& world);

// The checkpoint to resume from in `dir`: the one `latest` names when it is
// complete; else (no `latest`, an empty or damaged one, or one naming a
// folder that is gone or incomplete) the newest complete checkpoint, with a
// warning that says so; "" when the folder holds none.
std::string latest_checkpoint(const std::string& dir);

// The model.moe_router the checkpoint at `path` (a step folder, or a folder
// with `latest`) was trained with, from its metadata.json ("" when it does not
// say). Router kinds share their tensors, so only this tells them apart.
std::string checkpoint_router(const std::string& path);

// What a load fills: the whole training state (resume: the checkpoint's
// tensors and `state` must be the same set), or the weights only (export:
// the checkpoint's AdamW moments and router biases are left out).
enum class LoadScope { kEverything, kWeights };

// Fills this rank's pieces from a step folder (or a checkpoint folder with a
// `latest`). Any mismatch (missing or damaged file, a tensor missing on either
// side, a different shape) is a UserError naming the file, the first
// difference and how many there are; nothing is changed before every file has
// been checked. Resume is strict: a checkpoint of another model never loads.
TrainPosition load_checkpoint(const std::string& path, const std::vector<StateTensor>& state,
                              LoadScope scope = LoadScope::kEverything);

}  // namespace moe
