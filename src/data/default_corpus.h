// The default corpus: when no dataset is configured, training reads real
// English text that every machine has after ./scripts/setup.sh, the Debian
// package `fortunes` (/usr/share/games/fortunes, or PREFIX/share/games/fortunes
// after `scripts/setup.sh --prefix=PREFIX`). Each file there without an
// extension is text (the .dat indexes and .u8 links are skipped), with lines
// holding a single "%" between entries; each entry becomes one document of the
// byte-level dataset (prepare.h), files in name order, 2% held out for val.
#pragma once

#include <string>
#include <vector>

namespace moe {

inline constexpr char kFortunesDir[] = "/usr/share/games/fortunes";
inline constexpr double kDefaultCorpusValFraction = 0.02;

// Returns cache_dir/fortunes, the dataset root (train/tokens.npy,
// val/tokens.npy), preparing it first unless a complete copy is there (its
// marker file, written last, says so). Safe to call from several processes at
// once: each writes whole files under temporary names. A missing fortunes_dir
// is a UserError that says to run ./scripts/setup.sh.
std::string ensure_default_corpus(const std::string& cache_dir, const std::string& fortunes_dir);

// Where the fortunes are: the first PREFIX/share/games/fortunes folder of the
// colon-separated prefix list (MOE_TRAIN_PREFIX, which a user-space install
// sets) that exists, else kFortunesDir.
std::string find_fortunes_dir(const char* prefix_list);

// The entries of one fortune file: the text between lines that are exactly
// "%", each ending with its last newline; blank entries are dropped.
std::vector<std::string> split_fortune_entries(const std::string& text);

}  // namespace moe
