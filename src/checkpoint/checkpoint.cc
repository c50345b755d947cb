#include "src/checkpoint/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <optional>
#include <spdlog/spdlog.h>

#include "src/config/to_json.h"
#include "src/core/tensor_pool.h"
#include "src/core/user_error.h"
#include "src/core/build_info.h"
#include "src/checkpoint/checkpoint_metadata.h"
#include "src/checkpoint/safetensors.h"

namespace moe {
namespace fs = std::filesystem;
namespace {

std::string rank_file(int rank) { return fmt::format("rank_{:05d}.safetensors", rank); }
std::string step_dir_name(int64_t step) { return fmt::format("step_{}", step); }

// Every rank learns whether any rank failed, so that all throw together
// instead of some waiting in the next collective.
void agree_or_throw(Communicator& world, const std::string& my_error, const std::string& what) {
  if (any_rank(world, !my_error.empty()))
    throw UserError(my_error.empty() ? what + " failed on another rank (its log says why)" : my_error);
}

nlohmann::json piece_json(const StateTensor& s, int file) {
  return {{"file", file},
          {"local_offset", s.place.local_offset},
          {"local_shape", s.place.local_shape},
          {"begin", s.place.shard_begin},
          {"count", s.place.shard_valid}};
}

// AdamW moments and the sigmoid router's balance biases: what a weights-only
// load (export) leaves out.
bool is_training_state(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".exp_avg") || ends_with(".exp_avg_sq") || ends_with(".e_score_correction_bias");
}

// "step_<digits>" exactly (no sign, no suffix, fits int64): the only names
// rotation and resume treat as checkpoints.
bool step_of(const std::string& name, int64_t* step) {
  if (name.size() <= 5 || name.size() > 5 + 18 || name.rfind("step_", 0) != 0) return false;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  *step = std::stoll(name.substr(5));
  return true;
}

// Removes a folder so that no moment shows half of it under its own name.
void remove_folder(const fs::path& folder) {
  const fs::path doomed = folder.string() + ".deleting";
  fs::remove_all(doomed);
  fs::rename(folder, doomed);
  fs::remove_all(doomed);
}

CheckpointHealth health_of(const std::string& name) {
  if (name == "provisional") return CheckpointHealth::kProvisional;
  if (name == "unhealthy") return CheckpointHealth::kUnhealthy;
  return CheckpointHealth::kHealthy;  // "healthy", or not recorded (written before health was)
}

// Rotation within `lineage` (see checkpoint.h): of the checkpoints that are
// not unhealthy, the newest keep_last; the newest healthy one whatever its
// age; unhealthy ones newer than it (what the divergence left, for a look);
// and the one just written. Leftovers of an interrupted rotation
// (step_<N>.deleting) go first.
void remove_old_checkpoints(const std::string& dir, int64_t keep_last, const std::string& lineage,
                            int64_t just_written) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    int64_t step = 0;
    const size_t dot = name.find(".deleting");
    if (e.is_directory() && dot != std::string::npos && dot + 9 == name.size() && step_of(name.substr(0, dot), &step)) {
      fs::remove_all(e.path());
    }
  }
  if (keep_last <= 0 || lineage.empty()) return;
  std::vector<CheckpointEntry> mine;
  for (const CheckpointEntry& c : list_checkpoints(dir))
    if (c.lineage == lineage) mine.push_back(c);
  int64_t newest_healthy = -1, kept = 0;
  for (const CheckpointEntry& c : mine)
    if (c.health == CheckpointHealth::kHealthy) newest_healthy = c.step;
  for (auto c = mine.rbegin(); c != mine.rend(); ++c) {
    bool keep = c->step == just_written || c->step == newest_healthy;
    if (c->health == CheckpointHealth::kUnhealthy) {
      keep = keep || c->step > newest_healthy;
    } else if (kept < keep_last) {
      keep = true;
      kept += 1;
    }
    if (!keep) remove_folder(c->path);
  }
}

}  // namespace

std::string save_checkpoint(const JobConfig& cfg, const TrainPosition& at, const std::vector<StateTensor>& state,
                            Communicator& world) {
  const std::string dir = cfg.checkpoint.dir;
  const std::string final_dir = dir + "/" + step_dir_name(at.step), tmp_dir = final_dir + ".tmp";
  const bool rank0 = world.rank() == 0;

  std::string error;
  if (rank0) {
    try {
      fs::create_directories(dir);
      fs::remove_all(tmp_dir);  // a save that died half-way
      fs::create_directories(tmp_dir);
    } catch (const fs::filesystem_error& e) {
      error = fmt::format("checkpoint.dir = \"{}\": cannot create {} ({}); point it at a writable folder", dir, tmp_dir,
                          e.what());
    }
  }
  agree_or_throw(world, error, "creating the checkpoint folder");

  // Every rank writes its pieces.
  WrittenFile written;
  try {
    std::vector<SafetensorsView> views;
    std::vector<std::vector<float>> staged;  // device pieces, read back to the host (a host sync each)
    staged.reserve(state.size());
    for (const StateTensor& s : state) {
      if (!s.written_here) continue;
      const float* data = s.piece.f32();
      if (s.piece.device != Device::kCpu) {
        staged.emplace_back(static_cast<size_t>(s.piece.numel()));
        download(staged.back().data(), s.piece);
        data = staged.back().data();
      }
      views.push_back({s.name, {s.place.shard_valid}, data});
    }
    written = write_safetensors(tmp_dir + "/" + rank_file(world.rank()), views, {{"format", kCheckpointFormat}});
  } catch (const UserError& e) {
    error = e.what();
  }
  agree_or_throw(world, error, "writing the checkpoint");

  // Rank 0 learns every file's size and CRC, and where each piece went: each
  // rank's part as JSON text, gathered.
  const int W = world.size();
  nlohmann::json mine = {{"bytes", written.bytes}, {"crc32", written.crc32}, {"pieces", nlohmann::json::object()}};
  for (const StateTensor& s : state) {
    if (s.written_here) mine["pieces"][s.name] = piece_json(s, world.rank());
  }
  const std::vector<std::string> parts = all_gather_bytes(world, mine.dump());

  if (rank0) {
    try {
      nlohmann::ordered_json meta;
      meta["format"] = kCheckpointFormat;
      meta["step"] = at.step;
      meta["tokens_seen"] = at.tokens_seen;
      // The data order and the LR schedule are pure functions of (seed, step)
      // and the config; there is no other RNG state during training.
      meta["data_position"] = {{"next_step", at.step + 1}, {"seed", cfg.train.seed}};
      meta["world_size"] = W;
      meta["lineage"] = at.lineage;
      // Judged by the step after it (divergence.h); the losses so far let a
      // resumed run judge spikes as this one would.
      meta["health"] = health_name(CheckpointHealth::kProvisional);
      meta["loss_history"] = {{"mean", at.losses.mean}, {"count", at.losses.count}};
      // The build that wrote it: version, commit, CUDA libraries.
      nlohmann::ordered_json build = nlohmann::ordered_json::object();
      for (const auto& [key, value] : build_facts()) build[key] = value;
      meta["build"] = build;
      meta["config"] = config_to_json(cfg);
      nlohmann::ordered_json files = nlohmann::ordered_json::array();
      std::vector<nlohmann::json> rank_parts;
      for (int r = 0; r < W; ++r) {
        rank_parts.push_back(nlohmann::json::parse(parts[static_cast<size_t>(r)]));
        files.push_back({{"name", rank_file(r)},
                         {"bytes", rank_parts.back()["bytes"].get<uint64_t>()},
                         {"crc32", rank_parts.back()["crc32"].get<uint32_t>()}});
      }
      meta["files"] = files;
      nlohmann::ordered_json tensors = nlohmann::ordered_json::object();
      for (const StateTensor& s : state) {
        tensors[s.name] = {
            {"shape", s.place.global_shape}, {"dtype", "F32"}, {"pieces", nlohmann::ordered_json::array()}};
      }
      for (const nlohmann::json& part : rank_parts) {
        for (auto it = part["pieces"].begin(); it != part["pieces"].end(); ++it) {
          tensors[it.key()]["pieces"].push_back(nlohmann::ordered_json(it.value()));
        }
      }
      meta["tensors"] = tensors;
      write_file_durably(tmp_dir + "/metadata.json", meta.dump(1));
      fs::remove_all(final_dir);  // an older save of this same step (from before a resume)
      fs::rename(tmp_dir, final_dir);
      sync_directory(dir);
      write_file_durably(dir + "/latest", step_dir_name(at.step) + "\n");
      remove_old_checkpoints(dir, cfg.checkpoint.keep_last_n, at.lineage, at.step);
    } catch (const std::exception& e) {
      error = fmt::format("checkpoint {}: finishing the save failed ({}); the previous checkpoint is intact", final_dir,
                          e.what());
    }
  }
  agree_or_throw(world, error, "finishing the checkpoint");
  return final_dir;
}

namespace {

// The checkpoint in folder `name` of `dir` when it is complete (step_<digits>
// with a readable metadata.json), else nothing.
std::optional<CheckpointEntry> complete_checkpoint(const fs::path& dir, const std::string& name) {
  int64_t step = 0;
  std::error_code ec;
  if (!step_of(name, &step) || !fs::is_directory(dir / name, ec)) return std::nullopt;
  std::ifstream in(dir / name / "metadata.json", std::ios::binary);
  if (!in) return std::nullopt;
  try {
    const nlohmann::json meta = nlohmann::json::parse(in);
    return CheckpointEntry{step, (dir / name).string(), meta.value("lineage", std::string()),
                           health_of(meta.value("health", std::string())), meta.value("health_note", std::string())};
  } catch (const std::exception&) {
    return std::nullopt;  // not readable: not a complete checkpoint, and never touched
  }
}

}  // namespace

std::vector<CheckpointEntry> list_checkpoints(const std::string& dir) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (auto c = complete_checkpoint(dir, e.path().filename().string())) out.push_back(std::move(*c));
  }
  std::sort(out.begin(), out.end(), [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step < b.step; });
  return out;
}

const char* health_name(CheckpointHealth h) {
  switch (h) {
    case CheckpointHealth::kProvisional: return "provisional";
    case CheckpointHealth::kUnhealthy: return "unhealthy";
    case CheckpointHealth::kHealthy: break;
  }
  return "healthy";
}

std::string latest_checkpoint(const std::string& dir) {
  std::ifstream in(dir + "/latest");
  std::string name, why;
  int64_t step = 0;
  if (!in) {
    why = "there is no " + dir + "/latest";
  } else if (!std::getline(in, name) || name.empty()) {
    why = dir + "/latest is empty";
  } else if (!step_of(name, &step)) {
    why = dir + "/latest names \"" + name + "\", not a step_<N> folder";
  } else if (auto named = complete_checkpoint(dir, name)) {
    if (named->health != CheckpointHealth::kUnhealthy) return named->path;
    why = fmt::format("{}/latest names {}, which is unhealthy ({})", dir, name, named->health_note);
  } else {
    why = dir + "/latest names " + name + ", which is not a complete checkpoint";
  }
  const std::vector<CheckpointEntry> complete = list_checkpoints(dir);
  if (complete.empty()) {
    if (in) spdlog::warn("{}, and the folder holds no complete checkpoint: nothing to resume", why);
    return "";
  }
  for (auto c = complete.rbegin(); c != complete.rend(); ++c) {
    if (c->health == CheckpointHealth::kUnhealthy) continue;
    spdlog::warn("{}: resuming from the newest {} checkpoint, {}", why,
                 c->health == CheckpointHealth::kHealthy ? "healthy" : "complete", c->path);
    return c->path;
  }
  spdlog::warn(
      "{}: every checkpoint in the folder is unhealthy; resuming from the newest, {} (if the loss blows up "
      "again, start afresh in another checkpoint.dir with a lower optimizer.lr)",
      why, complete.back().path);
  return complete.back().path;
}

std::string archive_checkpoints(const std::string& dir) {
  const std::vector<CheckpointEntry> complete = list_checkpoints(dir);
  const bool has_latest = fs::exists(fs::path(dir) / "latest");
  if (complete.empty() && !has_latest) return "";
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  fs::path to = fs::path(dir) / "archive" / stamp;
  for (int n = 2; fs::exists(to); ++n) to = fs::path(dir) / "archive" / fmt::format("{}_{}", stamp, n);
  fs::create_directories(to);
  // `latest` first: a kill part-way leaves no `latest` naming a moved folder.
  if (has_latest) fs::rename(fs::path(dir) / "latest", to / "latest");
  for (const CheckpointEntry& c : complete) fs::rename(c.path, to / fs::path(c.path).filename());
  // The run's own metrics (the default metrics.jsonl) go with its checkpoints.
  if (fs::exists(fs::path(dir) / "metrics.jsonl")) fs::rename(fs::path(dir) / "metrics.jsonl", to / "metrics.jsonl");
  sync_directory(dir);
  return to.string();
}

std::string newest_healthy_checkpoint(const std::string& dir) {
  const std::vector<CheckpointEntry> complete = list_checkpoints(dir);
  for (auto c = complete.rbegin(); c != complete.rend(); ++c)
    if (c->health == CheckpointHealth::kHealthy) return c->path;
  return "";
}

void record_checkpoint_health(const CheckpointConfig& c, const std::string& step_dir, const std::string& unhealthy_why,
                              const std::string& lineage) {
  const std::string path = step_dir + "/metadata.json";
  try {
    std::ifstream in(path, std::ios::binary);
    nlohmann::ordered_json meta = nlohmann::ordered_json::parse(in);
    meta["health"] = health_name(unhealthy_why.empty() ? CheckpointHealth::kHealthy : CheckpointHealth::kUnhealthy);
    meta["health_note"] = unhealthy_why;
    write_file_durably(path, meta.dump(1));
    if (!unhealthy_why.empty()) spdlog::warn("{} is unhealthy: {}", step_dir, unhealthy_why);
    int64_t step = 0;
    step_of(fs::path(step_dir).filename().string(), &step);
    remove_old_checkpoints(c.dir, c.keep_last_n, lineage, step);
  } catch (const std::exception& e) {
    spdlog::warn("{}: could not record the checkpoint's health ({}); it stays provisional", path, e.what());
  }
}

namespace {

CheckpointMetadata read_metadata(const std::string& step_dir) {
  const std::string path = step_dir + "/metadata.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UserError(path + ": missing; " + step_dir +
                    " is not a finished checkpoint (a save that did not complete has no metadata)");
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_checkpoint_metadata(text, path);
}

// Rebuilds one global tensor from its pieces (bounds already checked).
std::vector<float> assemble(const std::string& name, const CheckpointTensorMeta& meta,
                            const std::vector<std::unique_ptr<SafetensorsFile>>& files) {
  std::vector<float> global(static_cast<size_t>(numel_of(meta.shape)), 0.0f);
  // Pieces of one local block (its FSDP shards) are joined first, then the
  // block is placed in the global tensor.
  std::map<std::pair<std::vector<int64_t>, std::vector<int64_t>>, std::vector<float>> blocks;
  for (const CheckpointPiece& p : meta.pieces) {
    const SafetensorsFile& f = *files[static_cast<size_t>(p.file)];
    const SafetensorsFile::Entry& e = f.entry(name);
    if (e.dtype != "F32" || e.numel != p.count) {
      throw UserError(fmt::format("{}: tensor {} holds {} {} values, the metadata says {}", f.path(), name, e.numel,
                                  e.dtype, p.count));
    }
    std::vector<float>& block = blocks[{p.local_offset, p.local_shape}];
    block.resize(static_cast<size_t>(numel_of(p.local_shape)), 0.0f);
    if (p.count > 0) f.read(name, block.data() + p.begin);
  }
  for (auto& [key, block] : blocks)
    copy_block_to_global(global.data(), meta.shape, key.first, view_of(block.data(), key.second));
  return global;
}

}  // namespace

std::string resolve_step_folder(const std::string& path) {
  if (!fs::exists(path + "/metadata.json") && fs::exists(path + "/latest")) return latest_checkpoint(path);
  return path;
}

std::string checkpoint_to_read(const CheckpointConfig& c, const std::string& given, const std::string& command,
                               const std::string& purpose) {
  if (!given.empty()) return resolve_step_folder(given);
  if (!c.load_path.empty()) return resolve_step_folder(c.load_path);
  const std::string latest = latest_checkpoint(c.dir);
  if (latest.empty()) {
    throw UserError(
        fmt::format("{}: checkpoint.dir = \"{}\" holds no checkpoint to {}: train first, or give one "
                    "with --checkpoint=STEP_FOLDER",
                    command, c.dir, purpose));
  }
  return latest;
}

std::string checkpoint_router(const std::string& path) {
  std::ifstream in(resolve_step_folder(path) + "/metadata.json", std::ios::binary);
  try {
    const nlohmann::json meta = nlohmann::json::parse(in);
    return meta.at("config").at("model").at("moe_router").get<std::string>();
  } catch (const std::exception&) {
    return "";  // read_metadata will say what is wrong with the file
  }
}

TrainPosition load_checkpoint(const std::string& path, const std::vector<StateTensor>& state, LoadScope scope) {
  const std::string step_dir = resolve_step_folder(path);
  const CheckpointMetadata meta = read_metadata(step_dir);
  const std::string meta_path = step_dir + "/metadata.json";

  // Every file first: present, the recorded size, the recorded CRC.
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  for (const CheckpointFileMeta& f : meta.files) {
    const std::string file = step_dir + "/" + f.name;
    if (!fs::exists(file)) throw UserError(file + ": missing; the checkpoint is incomplete");
    auto sf = std::make_unique<SafetensorsFile>(file);
    if (sf->size() != f.bytes) {
      throw UserError(fmt::format("{}: {} bytes, the metadata says {}; the file is truncated or replaced", file,
                                  sf->size(), f.bytes));
    }
    if (sf->crc32() != f.crc32) throw UserError(file + ": checksum mismatch (CRC-32); the file is damaged");
    files.push_back(std::move(sf));
  }
  // Then the tensors: the checkpoint's and this run's must be the same set,
  // with the same shapes (a weights-only load ignores the training state; an
  // initial load takes the weights both have).
  const bool initial = scope == LoadScope::kInitialWeights;
  auto loads = [&](const StateTensor& s) {
    return !(initial && (is_training_state(s.name) || !meta.tensors.count(s.name)));
  };
  std::set<std::string> wanted;
  std::vector<std::string> problems, extra, kept_initial;
  for (const StateTensor& s : state) {
    if (initial && is_training_state(s.name)) continue;  // AdamW and router biases start afresh
    wanted.insert(s.name);
    const auto it = meta.tensors.find(s.name);
    if (it == meta.tensors.end()) {
      if (initial) {
        kept_initial.push_back(s.name);
      } else {
        problems.push_back("has no tensor " + s.name);
      }
    } else if (it->second.shape != s.place.global_shape) {
      problems.push_back("tensor " + s.name + " has shape " + shape_text(it->second.shape) + ", this model's is " +
                         shape_text(s.place.global_shape));
    }
  }
  for (const auto& [name, tensor] : meta.tensors) {
    if (wanted.count(name) || (scope != LoadScope::kEverything && is_training_state(name))) continue;
    extra.push_back(name);
  }
  auto some = [](const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size() && i < 3; ++i) out += (i ? ", " : "") + names[i];
    return out + (names.size() > 3 ? ", ..." : "");
  };
  if (!extra.empty() && !initial) {
    problems.push_back(fmt::format("has {} tensor(s) this model does not ({})", extra.size(), some(extra)));
  }
  if (!problems.empty()) {
    const std::string more =
        problems.size() > 1 ? fmt::format(" (and {} more differences)", problems.size() - 1) : std::string();
    if (initial) {
      throw UserError(
          fmt::format("{}: checkpoint.initial_load_path: {}{}; a tensor the checkpoint and the model share "
                      "by name must have the same shape: change the model, or start from another "
                      "checkpoint",
                      meta_path, problems[0], more));
    }
    throw UserError(
        fmt::format("{}: the checkpoint is of another model: {}{}; load it with the config it was saved "
                    "with (its \"config\" in metadata.json), or train this model in another "
                    "checkpoint.dir (checkpoint.initial_load_path takes the weights it shares with "
                    "another model)",
                    meta_path, problems[0], more));
  }
  if (initial && !kept_initial.empty()) {
    spdlog::warn(
        "checkpoint.initial_load_path: {} tensor(s) of this model are not in {} and keep their initial "
        "values ({})",
        kept_initial.size(), step_dir, some(kept_initial));
  }
  if (initial && !extra.empty()) {
    spdlog::warn("checkpoint.initial_load_path: {} tensor(s) of {} are not in this model and are not used ({})",
                 extra.size(), step_dir, some(extra));
  }
  for (const StateTensor& s : state) {
    if (!loads(s) || !s.piece.data) continue;  // no piece: another pipeline stage's
    const std::vector<float> global = assemble(s.name, meta.tensors.at(s.name), files);
    copy_own_piece(s.piece, global.data(), s.place);
  }
  return {meta.step, meta.tokens_seen, meta.lineage, {meta.loss_mean, meta.losses_seen}, health_of(meta.health)};
}

}  // namespace moe
