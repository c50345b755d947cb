// The resolved config as JSON, in schema order (for --print-config, and later
// for checkpoint metadata and the metrics file header).
#pragma once

#include <nlohmann/json.hpp>

#include "src/config/job_config.h"

namespace moe {

nlohmann::ordered_json config_to_json(const JobConfig& cfg);

}  // namespace moe
