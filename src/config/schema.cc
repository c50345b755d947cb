#include "src/config/schema.h"

#include "src/config/router_names.h"

namespace moe {

std::vector<Section> describe(JobConfig& c) {
  auto& m = c.model;
  auto& t = c.train;
  auto& o = c.optimizer;
  auto& s = c.scheduler;
  auto& d = c.distributed;
  return {
      {"model",
       {
           {"dim", &m.dim},
           {"n_layers", &m.n_layers},
           {"n_heads", &m.n_heads},
           {"n_kv_heads", &m.n_kv_heads},
           {"vocab_size", &m.vocab_size},
           {"ffn_dim_multiplier", &m.ffn_dim_multiplier},
           {"ffn_hidden_dim", &m.ffn_hidden_dim},
           {"norm_type", &m.norm_type},
           {"activation", &m.activation},
           {"qk_norm", &m.qk_norm},
           {"norm_eps", &m.norm_eps},
           {"rope_theta", &m.rope_theta},
           {"max_seq_len", &m.max_seq_len},
           {"tie_embeddings", &m.tie_embeddings},
           {"init_std", &m.init_std},
           {"model_type", &m.model_type},
           {"num_experts", &m.num_experts},
           {"moe_top_k", &m.moe_top_k},
           {"moe_router", ChoiceRef(&m.moe_router, router_names())},
           {"moe_frequency", &m.moe_frequency},
           {"moe_aux_loss_weight", &m.moe_aux_loss_weight},
           {"moe_router_z_loss_weight", &m.moe_router_z_loss_weight},
           {"moe_sequence_aux_loss_weight", &m.moe_sequence_aux_loss_weight},
           {"moe_capacity_factor", &m.moe_capacity_factor},
           {"moe_eval_capacity_factor", &m.moe_eval_capacity_factor},
           {"moe_drop_tokens", &m.moe_drop_tokens},
           {"moe_router_jitter", &m.moe_router_jitter},
           {"moe_expert_dropout", &m.moe_expert_dropout},
           {"moe_shared_experts", &m.moe_shared_experts},
           {"moe_packed_experts", &m.moe_packed_experts},
           {"moe_gradient_scale", &m.moe_gradient_scale},
           {"moe_expert_ffn_multiplier", &m.moe_expert_ffn_multiplier},
           {"moe_bias_update_rate", &m.moe_bias_update_rate},
           {"moe_bias_schedule", &m.moe_bias_schedule},
       },
       {"sdpa_backend"}},
      {"train",
       {
           {"batch_size", &t.batch_size},
           {"seq_len", &t.seq_len},
           {"max_steps", &t.max_steps},
           {"grad_accum_steps", &t.grad_accum_steps},
           {"grad_clip_norm", &t.grad_clip_norm},
           {"seed", &t.seed},
           {"mixed_precision", &t.mixed_precision},
           {"activation_checkpointing", &t.activation_checkpointing},
           {"ce_chunk_size", &t.ce_chunk_size},
           {"device", &t.device},
           {"nan_policy", &t.nan_policy},
           {"max_skipped", &t.max_skipped},
           {"spike_factor", &t.spike_factor},
           {"kernels", &t.kernels},
           {"deterministic", &t.deterministic},
       },
       {"compile_model", "shutdown_timeout_sec", "nccl_health_check_interval"}},
      {"optimizer",
       {
           {"name", &o.name},
           {"lr", &o.lr},
           {"weight_decay", &o.weight_decay},
           {"betas", &o.betas},
           {"eps", &o.eps},
       },
       {"fused"}},
      {"scheduler",
       {
           {"name", &s.name},
           {"warmup_steps", &s.warmup_steps},
           {"decay_steps", &s.decay_steps},
           {"min_lr_ratio", &s.min_lr_ratio},
           {"stable_steps", &s.stable_steps},
       },
       {}},
      {"distributed",
       {
           {"dp_replicate", &d.dp_replicate},
           {"dp_shard", &d.dp_shard},
           {"tp", &d.tp},
           {"ep", &d.ep},
           {"pp", &d.pp},
           {"cp", &d.cp},
           {"nccl_timeout_sec", &d.nccl_timeout_sec},
           {"gpus_per_node", &d.gpus_per_node},
           {"intra_node_gb_s", &d.intra_node_gb_s},
           {"inter_node_gb_s", &d.inter_node_gb_s},
           {"intra_node_latency_us", &d.intra_node_latency_us},
           {"inter_node_latency_us", &d.inter_node_latency_us},
       },
       {"backend", "pp_schedule"}},
      {"data",
       {
           {"dataset_path", &c.data.dataset_path},
           {"file_pattern", &c.data.file_pattern},
       },
       {"num_workers", "pin_memory", "prefetch_factor"}},
      {"eval",
       {
           {"enabled", &c.eval.enabled},
           {"interval", &c.eval.interval},
           {"steps", &c.eval.steps},
           {"dataset_path", &c.eval.dataset_path},
           {"file_pattern", &c.eval.file_pattern},
       },
       {}},
      {"checkpoint",
       {
           {"dir", &c.checkpoint.dir},
           {"interval", &c.checkpoint.interval},
           {"keep_last_n", &c.checkpoint.keep_last_n},
           {"load_path", &c.checkpoint.load_path},
           {"initial_load_path", &c.checkpoint.initial_load_path},
           {"resume", &c.checkpoint.resume},
       },
       {"async_mode"}},
      {"metrics",
       {
           {"log_interval", &c.metrics.log_interval},
           {"enable_jsonl", &c.metrics.enable_jsonl},
           {"jsonl_path", &c.metrics.jsonl_path},
           {"enable_tensorboard", &c.metrics.enable_tensorboard},
           {"tensorboard_dir", &c.metrics.tensorboard_dir},
           {"enable_wandb", &c.metrics.enable_wandb},
           {"peak_tflops", &c.metrics.peak_tflops},
           {"planned_mfu", &c.metrics.planned_mfu},
       },
       {"wandb_project", "wandb_run_name"}},
  };
}

const std::vector<std::string>& ignored_sections() {
  static const std::vector<std::string> kSections = {"profiling"};
  return kSections;
}

std::string type_name(const FieldRef& ref) {
  struct {
    std::string operator()(int64_t*) const { return "an integer"; }
    std::string operator()(double*) const { return "a number"; }
    std::string operator()(bool*) const { return "true or false"; }
    std::string operator()(std::string*) const { return "a string"; }
    std::string operator()(std::optional<int64_t>*) const { return "an integer"; }
    std::string operator()(std::array<double, 2>*) const { return "an array of two numbers"; }
    std::string operator()(const ChoiceRef&) const { return "a string"; }
  } visitor;
  return std::visit(visitor, ref);
}

}  // namespace moe
