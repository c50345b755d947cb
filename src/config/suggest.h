// "Did you mean": the closest known name to a misspelt one.
#pragma once

#include <string>
#include <vector>

namespace moe {

// Levenshtein distance (insert, delete, substitute, each cost 1).
int edit_distance(const std::string& a, const std::string& b);

// The candidate closest to `word`, if close enough to be a plausible typo
// (distance at most a third of the word, and at least 2 allowed); else "".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace moe
