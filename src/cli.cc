#include "src/cli.h"

#include <fmt/format.h>

#include <new>

#include "src/cli_options.h"
#include "src/commands.h"
#include "src/core/build_info.h"
#include "src/core/log.h"
#include "src/core/user_error.h"
#include "src/linked_libraries.h"
#include "src/parallel/communicator.h"
#include "src/parallel/launch_env.h"
#include "src/train/trainer.h"

namespace moe {
namespace {

const char* kUsage =
    "usage: moe_train CONFIG.toml [--section.key=value ...] [options]\n"
    "\n"
    "Trains the Mixture-of-Experts model that CONFIG.toml describes.\n"
    "\n"
    "options:\n"
    "  --section.key=value   override one config key, e.g. --optimizer.lr=3e-4\n"
    "  --print-config        print the resolved config as JSON and exit\n"
    "  --dry-run             print parameters, FLOPs and memory per rank, and exit\n"
    "  --world-size=N        rank count assumed by --dry-run/--print-config to resolve\n"
    "                        distributed.dp_shard = -1 (default: the layout's product)\n"
    "  --export-hf=DIR       write the model's weights as Hugging Face model.safetensors +\n"
    "                        config.json (Llama, Mixtral or Qwen2-MoE) and exit\n"
    "  --init-from-hf=DIR    start training from the weights of a Hugging Face checkpoint\n"
    "                        folder of this model's shape (config.json + model.safetensors\n"
    "                        or its index; F32, BF16 or F16); a resumed checkpoint wins\n"
    "  --archive-checkpoints move the checkpoints in checkpoint.dir (and its latest) to\n"
    "                        checkpoint.dir/archive/<UTC time>/ and exit: the next run\n"
    "                        there starts afresh, and nothing is deleted\n"
    "  --log-all-ranks       info-level logs from every rank, not only rank 0\n"
    "  --skip-gpu-check      train on CUDA without first checking the GPU (see check-gpu)\n"
    "  --version             version, commit, and the libraries built with and loaded (CUDA, MPI, BLAS)\n"
    "  -h, --help            this text\n"
    "\n"
    "       moe_train prepare --output=DIR [--val-fraction=0.01] TEXT_FILE...\n"
    "\n"
    "Turns text files into a byte-level token dataset (DIR/train, DIR/val; vocab 257:\n"
    "256 bytes + end of document) to train on with data.dataset_path = \"DIR/train\".\n"
    "\n"
    "       moe_train eval CONFIG.toml [--checkpoint=PATH] [--section.key=value ...]\n"
    "\n"
    "Loss and perplexity of a checkpoint (--checkpoint: a step folder or a checkpoint\n"
    "folder; default checkpoint.load_path, else the latest in checkpoint.dir) on\n"
    "eval.steps batches of eval.dataset_path (default: the built-in corpus's validation\n"
    "split), under any layout (mpirun -np N moe_train eval ...).\n"
    "\n"
    "       moe_train generate CONFIG.toml --prompt=TEXT [--max-new-tokens=200] [--temperature=1.0]\n"
    "                          [--top-k=0] [--top-p=1.0] [--seed=0] [--checkpoint=PATH]\n"
    "\n"
    "Samples text from a checkpoint (as eval picks it) with a KV cache, on the CPU or\n"
    "a GPU (train.device): the prompt's bytes start a new document, and sampling stops\n"
    "at the end of the document or after --max-new-tokens (temperature 0: greedy).\n"
    "\n"
    "       moe_train plot RUN_DIR_OR_METRICS_JSONL [--output=PNG]\n"
    "\n"
    "Draws a run's metrics.jsonl as one PNG (beside it unless --output): train and eval\n"
    "loss, learning rate, gradient norm, tokens/s, and each MoE layer's expert load over\n"
    "the steps. Needs Python 3 with matplotlib (python3-matplotlib; MOE_TRAIN_PYTHON).\n"
    "\n"
    "       moe_train check-gpu [CONFIG.toml] [--section.key=value ...] [--device=N]\n"
    "                           [--world-size=N] [--for-training]\n"
    "\n"
    "Checks every visible GPU (or GPU N): every op against the CPU reference at small\n"
    "shapes and at the config's layer shapes, in fp32 and bf16; a CUDA graph replay\n"
    "against eager launches, bit for bit; 5 training steps of the config's model,\n"
    "shrunk, against the CPU. Prints a table and one line per GPU; exits 0 when all\n"
    "pass, 2 naming the first failure. A CUDA run makes the same check before its\n"
    "first step, once per binary, GPU model, driver and CUDA runtime (cached).\n"
    "The config is refused as training refuses it (--world-size=N: the job's rank\n"
    "count). --for-training: check only if training would use a GPU here.\n";

}  // namespace

namespace {
// The error line of the last run_cli on this rank that it did not print (a
// rank other than 0 leaves the printing to rank 0).
thread_local std::string unshown_error;
}  // namespace

int run_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  const int code = run_cli(args, out, err);
  // Peers that did not fail would keep this rank in MPI_Finalize: after 10 s,
  // this rank says why and ends the job (a shared error ends it sooner).
  if (code == kUserErrorExitCode && read_launch_env().world_size > 1) {
    abort_job_unless_exited(10, kUserErrorExitCode, unshown_error);
  }
  return code;
}

int run_cli(const std::vector<std::string>& given, std::ostream& out, std::ostream& err) {
  unshown_error.clear();
  const LaunchEnv env = read_launch_env();
  try {
    const std::vector<std::string> args = join_option_values(given);
    const std::string command = args.empty() ? "" : args[0];
    const std::vector<std::string> rest(args.begin() + (args.empty() ? 0 : 1), args.end());
    if (command == "check-gpu" || command == "prepare" || command == "plot" || command == "eval" ||
        command == "generate") {
      init_logging(static_cast<int>(env.rank));
      enter_bazel_workspace();
      if (command == "check-gpu") return run_check_gpu(rest, out, err);
      if (command == "eval") return run_eval(rest, out);
      if (command == "generate") return run_generate(rest, out);
      return command == "prepare" ? run_prepare(rest) : run_plot(rest, out);
    }
    const CommandLine cl = parse_command_line(args);
    init_logging(static_cast<int>(env.rank), cl.log_all_ranks);
    if (cl.help) {
      out << kUsage;
      return 0;
    }
    if (cl.version) {
      out << version_text() << linked_library_lines();
      return 0;
    }
    enter_bazel_workspace();
    return run_train_command(cl, out);
  } catch (const UserError& e) {
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    unshown_error = env.rank == 0 ? "" : fmt::format("moe_train: error: rank {}: {}", env.rank, e.what());
    return kUserErrorExitCode;
  } catch (const NumericalFault& e) {
    // Every rank sees the same global loss and norm, so all stop here together.
    if (env.rank == 0) err << "moe_train: error: " << e.what() << "\n";
    return kNumericalFaultExitCode;
  } catch (const std::bad_alloc&) {
    // Sizes this machine cannot hold (a huge model, batch or vocabulary): a
    // message and the user-error code, not an abort. Any rank may be the one.
    err << "moe_train: error: out of host memory while allocating the run's buffers: the config asks for more than "
           "this machine has; check the sizes with --dry-run, then lower train.batch_size or the model's sizes, or "
           "spread it over more ranks\n";
    return kUserErrorExitCode;
  }
}

}  // namespace moe
