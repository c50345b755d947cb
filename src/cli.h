// The `moe_train` command line, as a function so tests can run it in-process:
//
//   moe_train CONFIG.toml [--section.key=value ...] [--print-config] [--dry-run]
//             [--world-size=N] [--export-hf=DIR] [--init-from-hf=DIR] [--log-all-ranks]
//   moe_train prepare --output=DIR [--val-fraction=F] TEXT_FILE...
//   moe_train eval CONFIG.toml [--checkpoint=PATH] [--section.key=value ...]
//   moe_train generate CONFIG.toml --prompt=TEXT [--max-new-tokens=N --temperature=T --top-k=K --top-p=P --seed=S]
//   moe_train plot RUN_DIR_OR_METRICS_JSONL [--output=PNG]
//   moe_train check-gpu [CONFIG.toml] [--section.key=value ...] [--device=N]
//   moe_train --version
//
// Returns the process exit code: 0 success, 2 bad input (one line on stderr,
// from rank 0 only), 1 anything else.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace moe {

struct CommandLine {
  std::string config_path;
  std::vector<std::string> overrides;  // "section.key=value"
  bool print_config = false;
  bool dry_run = false;
  bool help = false;
  bool version = false;
  bool log_all_ranks = false;
  bool skip_gpu_check = false;       // --skip-gpu-check: train on CUDA without the check before step 1
  int64_t world_size = 0;            // --world-size for --dry-run/--print-config; 0 = not given
  std::string export_hf_dir;         // --export-hf: write the model's weights in HF format and exit
  std::string init_from_hf_dir;      // --init-from-hf: start from an HF checkpoint (unless a checkpoint is resumed)
  bool archive_checkpoints = false;  // --archive-checkpoints: move checkpoint.dir's checkpoints aside and exit
};

// Throws UserError on a malformed command line.
CommandLine parse_command_line(const std::vector<std::string>& args);

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The binary's entry: run_cli, and when a rank of a multi-rank job ends with
// a user error its peers may not share (a file missing on one node), the
// whole job ends within seconds with that rank's line instead of waiting for
// the others in a collective.
int run_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace moe
