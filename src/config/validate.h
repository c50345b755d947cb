// Rules that a config must satisfy before any work starts. Each failure is a
// UserError naming the key, the value, the rule and the fix.
#pragma once

#include "src/config/derived.h"
#include "src/config/job_config.h"

namespace moe {

// Rules that hold for any config, whatever this build can run: sizes and
// ranges, head arithmetic, MoE settings, combinations no trainer can run
// (MoE with pipeline parallelism, FP8 with tensor parallelism, ...).
void validate_config(const JobConfig& cfg);

// Features a valid config may ask for that are not built yet. Training calls
// this; --dry-run and --print-config do not, since they only describe a job.
// Each line here is deleted when its feature lands.
void require_built_features(const JobConfig& cfg, const Layout& layout);

}  // namespace moe
