// The commands of the moe_train binary, one file each (cli_train.cc,
// cli_prepare.cc, cli_eval.cc, cli_generate.cc, cli_plot.cc, cli_check_gpu.cc). run_cli (cli.cc) picks one and turns
// its errors into exit codes; each returns the exit code of a normal end.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "src/cli.h"

namespace moe {

// moe_train CONFIG.toml [...]: train, or --print-config, --dry-run,
// --archive-checkpoints, --export-hf.
int run_train_command(const CommandLine& cl, std::ostream& out);

// moe_train prepare --output=DIR [--val-fraction=F] TEXT_FILE...
int run_prepare(const std::vector<std::string>& args);

// moe_train eval CONFIG.toml [--checkpoint=PATH] [--section.key=value ...]
int run_eval(const std::vector<std::string>& args, std::ostream& out);

// moe_train generate CONFIG.toml --prompt=TEXT [sampling options] [--checkpoint=PATH] [--section.key=value ...]
int run_generate(const std::vector<std::string>& args, std::ostream& out);

// moe_train plot RUN_DIR_OR_METRICS_JSONL [--output=PNG]
int run_plot(const std::vector<std::string>& args, std::ostream& out);

// moe_train check-gpu [CONFIG] [--section.key=value ...] [--world-size=N] [--device=N]
int run_check_gpu(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace moe
