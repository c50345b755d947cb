// Numbers as the log prints them to people: counts ("1.25M"), sizes ("3.20
// GiB"), elapsed times ("1h02m03s") and remaining times ("1:02:03").
#pragma once

#include <cstdint>
#include <string>

namespace moe {

std::string human_count(double n);       // 950, 12.3k, 4.56M, 1.20B (tokens, parameters, tokens/s)
std::string human_bytes(int64_t bytes);  // 512 MiB, 3.20 GiB
std::string human_seconds(double sec);   // 42.0s, 3m05s, 1h02m03s (how long something took)
std::string human_duration(double sec);  // 3:05, 1:02:03 (an ETA)

}  // namespace moe
