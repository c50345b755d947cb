// metadata.json of a checkpoint, parsed and checked before anything is read:
// every number is bounded, every piece lies inside its tensor and names a
// listed file, so the loader never trusts a length or offset from disk.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/core/tensor.h"  // numel_of, shape_text

namespace moe {

struct CheckpointFileMeta {
  std::string name;  // a plain file name inside the step folder
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

// One rank's slice of a tensor: elements [begin, begin + count) of the
// flattened block of shape local_shape at local_offset.
struct CheckpointPiece {
  int64_t file = 0;  // index into CheckpointMetadata::files
  std::vector<int64_t> local_offset, local_shape;
  int64_t begin = 0, count = 0;
};

struct CheckpointTensorMeta {
  std::vector<int64_t> shape;
  std::vector<CheckpointPiece> pieces;
};

struct CheckpointMetadata {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  std::string lineage;             // the run's lineage id ("" before lineages were recorded)
  std::string health = "healthy";  // "provisional", "healthy" or "unhealthy" (absent before it was recorded)
  double loss_mean = 0;            // the healthy losses through this step (divergence.h)
  int64_t losses_seen = 0;
  std::vector<CheckpointFileMeta> files;
  std::map<std::string, CheckpointTensorMeta> tensors;
};

constexpr const char* kCheckpointFormat = "moe_train checkpoint 1";

// `path` names the file in messages. A UserError (path, what is wrong) for
// anything malformed or out of bounds.
CheckpointMetadata parse_checkpoint_metadata(const std::string& text, const std::string& path);

}  // namespace moe
