#include "src/train/gpu_check.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <set>
#include <stdexcept>

#include "src/config/derived.h"
#include "src/core/cuda_device.h"
#include "src/data/batch_sampler.h"
#include "src/data/prepare.h"
#include "src/data/token_dataset.h"
#include "src/kernels/gpu_kernels.h"
#include "src/kernels/kernel_choice.h"
#include "src/model/params.h"
#include "src/model/transformer.h"
#include "src/parallel/mesh.h"
#include "src/train/optimizer.h"
#include "src/train/placement.h"
#include "src/train/step_runner.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// The config's layer shapes for the op table: its dims, 2 sequences of up to
// 256 tokens (the CPU reference has to run them too).
op_check::Shapes config_shapes(const JobConfig& cfg) {
  const ModelConfig& m = cfg.model;
  op_check::Shapes s;
  s.B = 2;
  s.T = std::min<int64_t>(cfg.train.seq_len, 256);
  s.dim = m.dim;
  s.heads = m.n_heads;
  s.kv_heads = kv_heads(m);
  s.head_dim = head_dim(m);
  s.hidden = ffn_hidden(m);
  s.vocab = m.vocab_size;
  if (m.num_experts > 0) {
    s.experts = m.num_experts;
    s.top_k = m.moe_top_k;
    s.expert_hidden = expert_hidden(m);
    if (m.moe_capacity_factor > 0) s.capacity_factor = m.moe_capacity_factor;
  }
  return s;
}

// Text that trains: "words" from a skewed choice of 200, so the loss falls.
std::vector<std::string> check_documents() {
  std::vector<std::string> docs;
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int d = 0; d < 64; ++d) {
    std::string doc;
    while (doc.size() < 1024) {
      const uint32_t word = (next() % 200) * (next() % 200) / 200;
      for (uint32_t i = 0; i < 2 + word % 5; ++i) doc += static_cast<char>('a' + (word * 7 + i * 13) % 26);
      doc += ' ';
    }
    docs.push_back(doc);
  }
  return docs;
}

// A scratch folder for the check's token file, removed with it.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    path = (fs::temp_directory_path() / fmt::format("moe_train_gpu_check_{}", getpid())).string();
    fs::remove_all(path);
    prepare_documents_dataset(check_documents(), path, 0.0, "moe_train check-gpu: generated words");
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

GpuCheckRow row(const std::string& check, const std::string& shape, const std::string& dtype) {
  GpuCheckRow r;
  r.op = check;
  r.shape = shape;
  r.dtype = dtype;
  return r;
}

// Runs `body` into `r`, turning an exception into a failure that names it.
void guarded(GpuCheckRow& r, const std::function<void()>& body) {
  const auto start = Clock::now();
  try {
    body();
  } catch (const std::exception& e) {
    r.passed = false;
    r.detail = e.what();
  }
  r.ms = ms_since(start);
}

std::string model_text(const JobConfig& c) {
  return fmt::format("{} layers, D={}, E={} top-{}, {}x{} tokens", c.model.n_layers, c.model.dim, c.model.num_experts,
                     c.model.moe_top_k, c.train.batch_size, c.train.seq_len);
}

// Losses of `steps` training steps of `cfg` placed as told.
std::vector<double> train_losses(const JobConfig& cfg, const BatchSampler& sampler, const Placement& where,
                                 int64_t steps) {
  Mesh mesh(Layout{}, single_process_world());
  StepRunner runner(cfg, mesh, where);
  std::vector<double> losses;
  for (int64_t s = 1; s <= steps; ++s) losses.push_back(runner.step(s, sampler).loss);
  return losses;
}

// 5 steps on the GPU against the CPU, relative error of the loss per step:
// fp32 within 1e-4 (the same math in another order), bf16 within 2e-3 (bf16
// activations and weight copies), as the GPU training test holds them.
GpuCheckRow training_vs_cpu(const JobConfig& small, const BatchSampler& sampler, const std::vector<double>& cpu,
                            DType compute, int device) {
  GpuCheckRow r = row("training, 5 steps vs CPU", model_text(small), dtype_name(compute));
  const double rtol = compute == DType::kBF16 ? 2e-3 : 1e-4;
  r.tolerance = fmt::format("loss rtol {:g}", rtol);
  guarded(r, [&] {
    const std::vector<double> gpu = train_losses(small, sampler, Placement{Device::kCuda, compute, device}, 5);
    r.passed = true;
    for (size_t i = 0; i < gpu.size(); ++i) {
      const double err = std::fabs(gpu[i] - cpu[i]), rel = err / std::max(std::fabs(cpu[i]), 1e-12);
      r.max_error = std::max(r.max_error, err);
      r.worst = std::max(r.worst, rel / rtol);
      if (!(rel <= rtol) && r.passed) {
        r.passed = false;
        r.detail = fmt::format("step {}: loss {:.7g}, the CPU gives {:.7g}", i + 1, gpu[i], cpu[i]);
      }
    }
  });
  return r;
}

// What a failed row says, as a replacement's reason: "attention_backward q
// [2, 32, 4, 16] bf16: dq[3] = 0.5, the CPU gives 0.25".
std::string failure_of(const GpuCheckRow& r) { return fmt::format("{} {} {}: {}", r.op, r.shape, r.dtype, r.detail); }

// A micro-batch replayed as a CUDA graph computes what the eager pass does:
// 6 steps (eager, capture, replays), losses and gradient norms bit for bit.
// With train.deterministic = false a vendor kernel may sum in another order
// at each run, so the two agree within 1e-3 instead.
GpuCheckRow graph_vs_eager(const JobConfig& small, const BatchSampler& sampler) {
  GpuCheckRow r = row("CUDA graph replay vs eager", model_text(small), "bf16");
  const double rtol = small.train.deterministic ? 0 : 1e-3;
  r.tolerance = small.train.deterministic ? "bitwise" : "rtol 1e-3 (not deterministic)";
  guarded(r, [&] {
    const std::vector<double> eager = micro_batch_losses(small, sampler, false);
    const std::vector<double> replayed = micro_batch_losses(small, sampler, true);
    r.passed = true;
    for (size_t i = 0; i < eager.size(); ++i) {
      const double err = std::fabs(replayed[i] - eager[i]);
      r.max_error = std::max(r.max_error, err);
      if (!(err <= rtol * std::fabs(eager[i])) && r.passed) {
        r.passed = false;
        r.worst = std::numeric_limits<double>::infinity();
        r.detail = fmt::format("step {}: {} {:.17g} replayed, {:.17g} eager", i / 2 + 1,
                               i % 2 ? "gradient norm" : "loss", replayed[i], eager[i]);
      }
    }
  });
  return r;
}

}  // namespace

std::vector<double> micro_batch_losses(const JobConfig& cfg, const BatchSampler& sampler, bool graph) {
  const TrainConfig& t = cfg.train;
  TensorPool pool(Device::kCuda);
  ParamStore params(cfg.model, pool, Layout{}, MeshCoord{}, DType::kBF16);
  params.init(cfg.model, 7);
  Transformer model(cfg.model, t.batch_size, t.seq_len, t.ce_chunk_size, pool, params);
  if (graph) model.replay_micro_batches_as_graph();
  Optimizer opt(cfg.optimizer, params, pool);
  const auto world = single_process_world();
  std::vector<int32_t> in(static_cast<size_t>(model.tokens_per_micro_batch())), tg(in.size());
  std::vector<double> out;
  for (int64_t step = 1; step <= 6; ++step) {  // eager, capture, then replays
    params.zero_grads();
    sampler.fill(step - 1, 0, 1, 0, 1, in.data(), tg.data());
    upload(model.inputs(), in.data());
    upload(model.targets(), tg.data());
    out.push_back(model.forward_backward(1.0f));
    out.push_back(opt.grad_norm(*world));
    opt.step(1e-3, 1.0, step);
  }
  return out;
}

bool GpuCheckReport::passed() const { return first_failure() == nullptr; }

const GpuCheckRow* GpuCheckReport::first_failure() const {
  for (const GpuCheckRow& r : rows)
    if (!r.passed && !r.replaced) return &r;
  return nullptr;
}

std::map<std::string, std::string> vendor_failures(const std::vector<GpuCheckRow>& rows) {
  std::map<std::string, std::string> failed;
  for (const GpuCheckRow& r : rows) {
    const std::string family = kernels::vendor_family(r.op);
    if (r.passed || !r.vendor || family.empty() || failed.count(family)) continue;
    failed[family] = failure_of(r);
  }
  return failed;
}

std::vector<GpuCheckRow> rerun_without_vendors(const std::vector<std::string>& families_on,
                                               const std::function<GpuCheckRow(const std::vector<std::string>&)>& rerun,
                                               std::vector<std::string>& replaced) {
  replaced.clear();
  std::vector<GpuCheckRow> reruns;
  std::vector<std::string> off;
  for (const std::string& family : families_on) {
    off.push_back(family);
    reruns.push_back(rerun(off));
    if (reruns.back().passed) {
      replaced = off;
      break;
    }
  }
  return reruns;
}

JobConfig shrink_for_check(const JobConfig& cfg) {
  JobConfig c = cfg;
  ModelConfig& m = c.model;
  const int64_t heads = std::min<int64_t>(m.n_heads, 4);
  const int64_t kv = std::max<int64_t>(1, heads * kv_heads(cfg.model) / cfg.model.n_heads);
  m.n_heads = heads;
  m.n_kv_heads = heads % kv == 0 ? kv : 1;
  m.dim = heads * 32;
  m.ffn_hidden_dim = 4 * m.dim;
  m.ffn_dim_multiplier = 1.0;
  m.moe_expert_ffn_multiplier = 1.0;
  // Enough blocks for both kinds: block i is MoE when (i + 1) % moe_frequency == 0.
  m.n_layers = std::min<int64_t>(m.n_layers, m.num_experts > 0 ? std::max<int64_t>(2, 2 * m.moe_frequency) : 2);
  m.vocab_size = 512;  // the check's text is byte-level (257 ids)
  m.max_seq_len = 64;
  c.train.seq_len = 64;
  c.train.batch_size = 2;
  c.train.grad_accum_steps = 1;
  c.train.ce_chunk_size = 0;
  c.train.nan_policy = NanPolicy::kSkip;
  c.distributed = DistributedConfig{};
  c.distributed.dp_shard = 1;
  return c;
}

GpuCheckReport check_gpu(const JobConfig& cfg, int device) {
  const auto start = Clock::now();
  GpuCheckReport report;
  report.device = select_cuda_device(device);
  report.gpu = cuda_device_description(report.device);
  kernels::configure(kernel_settings_of(cfg.train));
  const auto check_ops_where = [&](const std::function<bool(const GpuCheckRow&)>& keep) {
    for (const op_check::Shapes& shapes : {op_check::Shapes{}, config_shapes(cfg)}) {
      for (DType act : {DType::kF32, DType::kBF16}) {
        for (GpuCheckRow& r : op_check::check_ops(shapes, act)) {
          if (keep(r)) report.rows.push_back(std::move(r));
        }
      }
    }
  };
  check_ops_where([](const GpuCheckRow&) { return true; });
  // A vendor kernel that computes wrongly here is replaced by the builtin
  // one, whose rows for the same cases then decide.
  report.fallbacks = vendor_failures(report.rows);
  if (!report.fallbacks.empty()) {
    std::set<std::string> cases;  // "op shape dtype" of each row the vendor kernels ran
    for (GpuCheckRow& r : report.rows) {
      if (!r.vendor || !report.fallbacks.count(kernels::vendor_family(r.op))) continue;
      r.replaced = !r.passed;
      cases.insert(r.op + " " + r.shape + " " + r.dtype);
    }
    for (const auto& [family, why] : report.fallbacks) kernels::disable_vendor(family, why);
    check_ops_where([&](const GpuCheckRow& r) { return cases.count(r.op + " " + r.shape + " " + r.dtype) > 0; });
  }

  // A whole-model row that fails while vendor kernels run: again without
  // them, family by family (rerun_without_vendors); the families that had to
  // go are replaced, and the builtin run's row decides.
  const auto add_model_row = [&](const std::function<GpuCheckRow()>& run) {
    GpuCheckRow r = run();
    std::vector<std::string> on;  // vendor families that ran in the op rows and are still on
    for (const char* family : kernels::kVendorFamilies) {
      const bool ran = std::any_of(report.rows.begin(), report.rows.end(), [&](const GpuCheckRow& op_row) {
        return op_row.vendor && kernels::vendor_family(op_row.op) == family;
      });
      if (ran && !report.fallbacks.count(family)) on.push_back(family);
    }
    if (r.passed || on.empty()) return report.rows.push_back(r);
    std::vector<std::string> replaced;
    const std::string why = failure_of(r);
    std::vector<GpuCheckRow> reruns = rerun_without_vendors(
        on,
        [&](const std::vector<std::string>& off) {
          for (const std::string& family : off) kernels::disable_vendor(family, why);
          GpuCheckRow again = run();
          again.op += " (builtin)";
          return again;
        },
        replaced);
    r.replaced = !replaced.empty();
    report.rows.push_back(r);
    if (r.replaced) {
      for (const std::string& family : replaced) report.fallbacks[family] = why;
      report.rows.push_back(reruns.back());
    }
  };
  const JobConfig small = shrink_for_check(cfg);
  const ScratchDir data;
  const TokenDataset tokens = TokenDataset::open(data.path + "/train", "*.npy", small.model.vocab_size);
  const BatchSampler sampler(tokens, small.train.seq_len, small.train.batch_size, small.train.seed);
  add_model_row([&] { return graph_vs_eager(small, sampler); });
  std::vector<double> cpu;
  GpuCheckRow cpu_row = row("training, 5 steps on the CPU", model_text(small), "f32");
  guarded(cpu_row, [&] { cpu = train_losses(small, sampler, Placement{}, 5); });
  if (!cpu_row.detail.empty()) {
    report.rows.push_back(cpu_row);  // the reference itself failed: nothing to compare with
  } else {
    for (DType compute : {DType::kF32, DType::kBF16}) {
      add_model_row([&] { return training_vs_cpu(small, sampler, cpu, compute, report.device); });
    }
  }
  report.seconds = ms_since(start) / 1000;
  return report;
}

std::string format_gpu_check(const GpuCheckReport& report) {
  std::string out = fmt::format("GPU {}: {}\n", report.device, report.gpu);
  out += fmt::format("  {:<32} {:<44} {:<5} {:>10} {:<26} {:>9}  {}\n", "check", "shape", "dtype", "max error",
                     "tolerance", "time", "result");
  for (const GpuCheckRow& r : report.rows) {
    out += fmt::format("  {:<32} {:<44} {:<5} {:>10.3g} {:<26} {:>7.1f}ms  {}\n", r.op, r.shape, r.dtype, r.max_error,
                       r.tolerance, r.ms,
                       r.passed     ? "PASS"
                       : r.replaced ? "FAIL (replaced)"
                                    : "FAIL");
    if (!r.implementation.empty()) out += fmt::format("      ran: {}\n", r.implementation);
    if (!r.detail.empty()) out += fmt::format("      {}\n", r.detail);
  }
  for (const auto& [family, why] : report.fallbacks) {
    out += fmt::format("  {}: the vendor kernel failed ({}); the builtin kernel runs instead\n", family, why);
  }
  out += "  kernels:\n";
  for (const std::string& line : kernels::gpu_kernel_lines()) out += "    " + line + "\n";
  return out;
}

std::string gpu_check_summary(const GpuCheckReport& report) {
  const GpuCheckRow* f = report.first_failure();
  if (f == nullptr) {
    std::string replaced;
    for (const auto& [family, why] : report.fallbacks) replaced += (replaced.empty() ? "" : ", ") + family;
    return fmt::format("GPU {} ({}): {} checks passed in {:.1f} s{}", report.device, report.gpu, report.rows.size(),
                       report.seconds,
                       replaced.empty() ? "" : "; the builtin kernel replaces the vendor's for " + replaced);
  }
  return fmt::format("GPU {} ({}): FAILED {} {} {}: {}", report.device, report.gpu, f->op, f->shape, f->dtype,
                     f->detail);
}

}  // namespace moe
