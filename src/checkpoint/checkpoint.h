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
// Health (divergence.h): a checkpoint is provisional when written, and the
// step after it makes it healthy or unhealthy. Unhealthy checkpoints never
// count toward keep_last_n, the newest healthy one is kept until a newer one
// is confirmed, and resume prefers a checkpoint that is not unhealthy.
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
#include "src/checkpoint/loss_history.h"
#include "src/checkpoint/state_tensor.h"

namespace moe {

// Checkpoints written before health was recorded count as healthy.
enum class CheckpointHealth { kProvisional, kHealthy, kUnhealthy };
const char* health_name(CheckpointHealth h);

struct TrainPosition {
  int64_t step = 0;         // the last finished optimizer step
  int64_t tokens_seen = 0;  // through that step
  std::string lineage;      // the run's lineage id (empty in checkpoints written before lineages)
  LossHistory losses;       // the healthy losses through that step
  CheckpointHealth health = CheckpointHealth::kProvisional;  // a loaded checkpoint's; a save writes provisional
};

// A complete checkpoint of a folder: step_<digits>/ with a readable metadata.json.
struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
  std::string lineage;
  CheckpointHealth health = CheckpointHealth::kHealthy;
  std::string health_note;  // why it is unhealthy
};
// The complete checkpoints in `dir`, by step ("" or a missing folder: none).
std::vector<CheckpointEntry> list_checkpoints(const std::string& dir);

// Collective over `world`: every rank calls it with its own state. Returns the step folder.
std::string save_checkpoint(const JobConfig& cfg, const TrainPosition& at, const std::vector<StateTensor>& state,
                            Communicator& world);

// Moves every complete checkpoint of `dir`, its `latest` and its metrics.jsonl into
// <dir>/archive/<UTC time>/ (renames: nothing is copied or deleted), so that a
// run in `dir` starts afresh. Returns that folder, or "" when there was
// nothing to move. The caller holds the folder's lock.
std::string archive_checkpoints(const std::string& dir);

// Rank 0, after the step that follows the checkpoint in `step_dir`: records
// its health (`unhealthy_why` empty: healthy; else unhealthy, and why) in its
// metadata.json, then rotates `c.dir` within `lineage`. A failure to write is
// a warning: the checkpoint stays provisional, which is safe.
void record_checkpoint_health(const CheckpointConfig& c, const std::string& step_dir, const std::string& unhealthy_why,
                              const std::string& lineage);

// The checkpoint to resume from in `dir`: the one `latest` names when it is
// complete and not unhealthy; else (no `latest`, an empty or damaged one, one
// naming a folder that is gone or incomplete, or an unhealthy checkpoint) the
// newest complete checkpoint that is not unhealthy (when all are, the newest),
// with a warning that says so; "" when the folder holds none.
std::string latest_checkpoint(const std::string& dir);

// The newest healthy checkpoint in `dir` ("" when there is none).
std::string newest_healthy_checkpoint(const std::string& dir);

// A step folder as given, or the one a checkpoint folder's `latest` names.
std::string resolve_step_folder(const std::string& path);

// The checkpoint a command reads (`eval`, `generate`): `given` (a step folder
// or a checkpoint folder), else checkpoint.load_path, else the latest in
// checkpoint.dir. None is a UserError: "<command>: ... holds no checkpoint to <purpose> ...".
std::string checkpoint_to_read(const CheckpointConfig& c, const std::string& given, const std::string& command,
                               const std::string& purpose);

// The model.moe_router the checkpoint at `path` (a step folder, or a folder
// with `latest`) was trained with, from its metadata.json ("" when it does not
// say). Router kinds share their tensors, so only this tells them apart.
std::string checkpoint_router(const std::string& path);

// What a load fills: the whole training state (resume: the checkpoint's
// tensors and `state` must be the same set); the weights only (export: the
// checkpoint's AdamW moments and router biases are left out); or the weights
// the checkpoint and the model share by name (checkpoint.initial_load_path,
// a new run: the model's other tensors keep their initial values, the
// checkpoint's others are ignored, and a warning lists both).
enum class LoadScope { kEverything, kWeights, kInitialWeights };

// Fills this rank's pieces from a step folder (or a checkpoint folder with a
// `latest`). Any mismatch (missing or damaged file, a tensor missing on either
// side, a different shape) is a UserError naming the file, the first
// difference and how many there are; nothing is changed before every file has
// been checked. Resume is strict: a checkpoint of another model never loads.
TrainPosition load_checkpoint(const std::string& path, const std::vector<StateTensor>& state,
                              LoadScope scope = LoadScope::kEverything);

}  // namespace moe
