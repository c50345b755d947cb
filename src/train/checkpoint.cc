#include "src/train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "src/config/to_json.h"
#include "src/core/tensor_pool.h"
#include "src/core/user_error.h"
#include "src/train/safetensors.h"

namespace moe {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "moe_train checkpoint 1";

std::string rank_file(int rank) { return fmt::format("rank_{:05d}.safetensors", rank); }
std::string step_dir_name(int64_t step) { return fmt::format("step_{}", step); }

// A small file written atomically and durably (temporary, fsync, rename).
void write_small_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(tmp.c_str(), "wb"), &std::fclose);
    if (!f || std::fwrite(text.data(), 1, text.size(), f.get()) != text.size() || std::fflush(f.get()) != 0 ||
        ::fsync(fileno(f.get())) != 0) {
      throw UserError(path + ": cannot be written; check the checkpoint folder's space and permissions");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw UserError(path + ": cannot be renamed into place; check the checkpoint folder's permissions");
  }
  sync_directory(fs::path(path).parent_path().string());
}

// Every rank learns whether any rank failed, so that all throw together
// instead of some waiting in the next collective.
void agree_or_throw(Communicator& world, const std::string& my_error, const std::string& what) {
  int32_t failed = my_error.empty() ? 0 : 1;
  Tensor t;
  t.data = &failed;
  t.ndim = 1;
  t.shape[0] = 1;
  t.dtype = DType::kI32;
  world.all_reduce(t, ReduceOp::kMax);
  if (failed) throw UserError(my_error.empty() ? what + " failed on another rank (its log says why)" : my_error);
}

nlohmann::json piece_json(const StateTensor& s, int file) {
  return {{"file", file},
          {"local_offset", s.place.local_offset},
          {"local_shape", s.place.local_shape},
          {"begin", s.place.shard_begin},
          {"count", s.place.shard_valid}};
}

void remove_old_checkpoints(const std::string& dir, int64_t keep_last) {
  if (keep_last <= 0) return;
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step_", 0) != 0 || name.find('.') != std::string::npos) continue;
    try {
      steps.emplace_back(std::stoll(name.substr(5)), e.path());
    } catch (const std::exception&) {
    }
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < steps.size(); ++i) fs::remove_all(steps[i].second);
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
      error = fmt::format("checkpoint.dir = \"{}\": cannot create {} ({}); point it at a writable folder", dir,
                          tmp_dir, e.what());
    }
  }
  agree_or_throw(world, error, "creating the checkpoint folder");

  // Every rank writes its pieces.
  WrittenFile written;
  try {
    std::vector<SafetensorsView> views;
    for (const StateTensor& s : state) {
      if (s.written_here) views.push_back({s.name, {s.place.shard_valid}, s.piece.f32()});
    }
    written = write_safetensors(tmp_dir + "/" + rank_file(world.rank()), views, {{"format", kFormat}});
  } catch (const UserError& e) {
    error = e.what();
  }
  agree_or_throw(world, error, "writing the checkpoint");

  // Rank 0 learns every file's size and CRC, and where each piece went.
  const int W = world.size();
  std::vector<int32_t> mine = {static_cast<int32_t>(written.crc32), static_cast<int32_t>(written.bytes >> 32),
                               static_cast<int32_t>(written.bytes & 0xFFFFFFFFu)};
  std::vector<int32_t> all(3 * static_cast<size_t>(W));
  Tensor in, out;
  in.data = mine.data();
  in.ndim = out.ndim = 1;
  in.shape[0] = 3;
  out.data = all.data();
  out.shape[0] = 3 * W;
  in.dtype = out.dtype = DType::kI32;
  world.all_gather(out, in);
  // Where each rank's pieces sit, as JSON text gathered on every rank.
  nlohmann::json mine_pieces = nlohmann::json::object();
  for (const StateTensor& s : state) {
    if (s.written_here) mine_pieces[s.name] = piece_json(s, world.rank());
  }
  const std::string pieces = mine_pieces.dump();
  // Variable-length gather: lengths first, then the bytes (as i32 words).
  std::vector<int32_t> len_in = {static_cast<int32_t>(pieces.size())}, lens(static_cast<size_t>(W));
  in.data = len_in.data();
  in.shape[0] = 1;
  out.data = lens.data();
  out.shape[0] = W;
  world.all_gather(out, in);
  const int32_t longest = *std::max_element(lens.begin(), lens.end());
  const int64_t words = (longest + 3) / 4;
  std::vector<int32_t> text_in(static_cast<size_t>(words), 0), text_all(static_cast<size_t>(words * W));
  std::memcpy(text_in.data(), pieces.data(), pieces.size());
  in.data = text_in.data();
  in.shape[0] = words;
  out.data = text_all.data();
  out.shape[0] = words * W;
  world.all_gather(out, in);

  if (rank0) {
    try {
      nlohmann::ordered_json meta;
      meta["format"] = kFormat;
      meta["step"] = at.step;
      meta["tokens_seen"] = at.tokens_seen;
      // The data order and the LR schedule are pure functions of (seed, step)
      // and the config; there is no other RNG state during training.
      meta["data_position"] = {{"next_step", at.step + 1}, {"seed", cfg.train.seed}};
      meta["world_size"] = W;
      meta["config"] = config_to_json(cfg);
      nlohmann::ordered_json files = nlohmann::ordered_json::array();
      for (int r = 0; r < W; ++r) {
        const auto bytes = (static_cast<uint64_t>(static_cast<uint32_t>(all[3 * r + 1])) << 32) |
                           static_cast<uint32_t>(all[3 * r + 2]);
        files.push_back({{"name", rank_file(r)}, {"bytes", bytes}, {"crc32", static_cast<uint32_t>(all[3 * r])}});
      }
      meta["files"] = files;
      nlohmann::ordered_json tensors = nlohmann::ordered_json::object();
      for (const StateTensor& s : state) {
        tensors[s.name] = {{"shape", s.place.global_shape}, {"dtype", "F32"}, {"pieces", nlohmann::ordered_json::array()}};
      }
      for (int r = 0; r < W; ++r) {
        const char* text = reinterpret_cast<const char*>(text_all.data() + static_cast<size_t>(r) * words);
        const nlohmann::json rank_pieces = nlohmann::json::parse(std::string(text, static_cast<size_t>(lens[r])));
        for (auto it = rank_pieces.begin(); it != rank_pieces.end(); ++it) {
          tensors[it.key()]["pieces"].push_back(nlohmann::ordered_json(it.value()));
        }
      }
      meta["tensors"] = tensors;
      write_small_file(tmp_dir + "/metadata.json", meta.dump(1));
      fs::remove_all(final_dir);  // an older save of this same step (from before a resume)
      fs::rename(tmp_dir, final_dir);
      sync_directory(dir);
      write_small_file(dir + "/latest", step_dir_name(at.step) + "\n");
      remove_old_checkpoints(dir, cfg.checkpoint.keep_last_n);
    } catch (const std::exception& e) {
      error = fmt::format("checkpoint {}: finishing the save failed ({}); the previous checkpoint is intact",
                          final_dir, e.what());
    }
  }
  agree_or_throw(world, error, "finishing the checkpoint");
  return final_dir;
}

std::string latest_checkpoint(const std::string& dir) {
  std::ifstream in(dir + "/latest");
  std::string name;
  if (!in || !std::getline(in, name) || name.empty()) return "";
  if (name.find('/') != std::string::npos || name.rfind("step_", 0) != 0) {
    throw UserError(dir + "/latest: names \"" + name + "\", not a step_<N> folder; delete the file or fix it");
  }
  return dir + "/" + name;
}

namespace {

nlohmann::json read_metadata(const std::string& step_dir) {
  const std::string path = step_dir + "/metadata.json";
  std::ifstream in(path);
  if (!in) {
    throw UserError(path + ": missing; " + step_dir +
                    " is not a finished checkpoint (a save that did not complete has no metadata)");
  }
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON (" + std::string(e.what()) + "); the checkpoint is damaged");
  }
  if (!meta.is_object() || meta.value("format", "") != kFormat || !meta.contains("files") ||
      !meta["files"].is_array() || !meta.contains("tensors") || !meta["tensors"].is_object() ||
      !meta.contains("step") || !meta["step"].is_number_integer()) {
    throw UserError(path + ": not a " + std::string(kFormat) + " metadata file (format, step, files, tensors)");
  }
  return meta;
}

std::vector<int64_t> int_list(const nlohmann::json& j, const std::string& where) {
  std::vector<int64_t> v;
  if (!j.is_array()) throw UserError(where + ": expected a list of integers");
  for (const auto& x : j) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0) throw UserError(where + ": expected non-negative integers");
    v.push_back(x.get<int64_t>());
  }
  return v;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t x : s) n *= x;
  return n;
}

// Rebuilds one global tensor from its pieces.
std::vector<float> assemble(const std::string& name, const nlohmann::json& entry, const std::vector<int64_t>& shape,
                            const std::vector<std::unique_ptr<SafetensorsFile>>& files, const std::string& meta_path) {
  const std::string where = meta_path + ": tensor " + name;
  std::vector<float> global(static_cast<size_t>(product(shape)), 0.0f);
  // Pieces of one local block (the FSDP shards of it) are joined first, then
  // the block is placed in the global tensor.
  std::map<std::pair<std::vector<int64_t>, std::vector<int64_t>>, std::vector<float>> blocks;
  int64_t covered = 0;
  if (!entry.contains("pieces") || !entry["pieces"].is_array()) throw UserError(where + ": has no list of pieces");
  for (const auto& p : entry["pieces"]) {
    if (!p.is_object() || !p.contains("file") || !p["file"].is_number_integer() || !p.contains("begin") ||
        !p.contains("count")) {
      throw UserError(where + ": a piece lacks file, begin or count");
    }
    const int64_t file = p["file"].get<int64_t>();
    const std::vector<int64_t> offset = int_list(p["local_offset"], where + " local_offset");
    const std::vector<int64_t> local = int_list(p["local_shape"], where + " local_shape");
    const int64_t begin = p["begin"].get<int64_t>(), count = p["count"].get<int64_t>();
    bool inside = offset.size() == shape.size() && local.size() == shape.size() && begin >= 0 && count >= 0 &&
                  begin + count <= product(local) && file >= 0 && file < static_cast<int64_t>(files.size());
    for (size_t d = 0; inside && d < shape.size(); ++d) inside = offset[d] + local[d] <= shape[d];
    if (!inside) throw UserError(where + ": a piece lies outside the tensor " + shape_text(shape) + " or its files");
    const SafetensorsFile& f = *files[static_cast<size_t>(file)];
    const SafetensorsFile::Entry& e = f.entry(name);
    if (e.dtype != "F32" || e.numel != count) {
      throw UserError(f.path() + ": tensor " + name + " holds " + std::to_string(e.numel) + " " + e.dtype +
                      " values, the metadata says " + std::to_string(count));
    }
    std::vector<float>& block = blocks[{offset, local}];
    block.resize(static_cast<size_t>(product(local)), 0.0f);
    if (count > 0) f.read(name, block.data() + begin);
    covered += count;
  }
  if (covered != product(shape)) {
    throw UserError(where + ": its pieces hold " + std::to_string(covered) + " of " + std::to_string(product(shape)) +
                    " values; the checkpoint is incomplete");
  }
  for (auto& [key, block] : blocks) {
    Tensor src;
    src.data = block.data();
    src.ndim = static_cast<int>(key.second.size());
    for (size_t d = 0; d < key.second.size(); ++d) src.shape[d] = key.second[d];
    copy_block_to_global(global.data(), shape, key.first, src);
  }
  return global;
}

}  // namespace

TrainPosition load_checkpoint(const std::string& path, const std::vector<StateTensor>& state) {
  std::string step_dir = path;
  if (!fs::exists(path + "/metadata.json") && fs::exists(path + "/latest")) step_dir = latest_checkpoint(path);
  const nlohmann::json meta = read_metadata(step_dir);
  const std::string meta_path = step_dir + "/metadata.json";

  // Every file first: present, the recorded size, the recorded CRC.
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  for (const auto& f : meta["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("bytes") ||
        !f.contains("crc32")) {
      throw UserError(meta_path + ": a file entry lacks name, bytes or crc32");
    }
    const std::string name = f["name"].get<std::string>();
    if (name.find('/') != std::string::npos) throw UserError(meta_path + ": file name " + name + " leaves the folder");
    const std::string file = step_dir + "/" + name;
    if (!fs::exists(file)) throw UserError(file + ": missing; the checkpoint is incomplete");
    auto sf = std::make_unique<SafetensorsFile>(file);
    if (sf->size() != f["bytes"].get<uint64_t>()) {
      throw UserError(fmt::format("{}: {} bytes, the metadata says {}; the file is truncated or replaced", file,
                                  sf->size(), f["bytes"].get<uint64_t>()));
    }
    if (sf->crc32() != f["crc32"].get<uint32_t>()) {
      throw UserError(file + ": checksum mismatch (CRC-32); the file is damaged");
    }
    files.push_back(std::move(sf));
  }
  // Then every tensor this run needs: present, with the shape of this model.
  const nlohmann::json& tensors = meta["tensors"];
  for (const StateTensor& s : state) {
    if (!tensors.contains(s.name)) {
      throw UserError(meta_path + ": has no tensor " + s.name + "; the checkpoint is of a different model");
    }
    const std::vector<int64_t> shape = int_list(tensors[s.name].value("shape", nlohmann::json()), meta_path + ": " + s.name);
    if (shape != s.place.global_shape) {
      throw UserError(meta_path + ": tensor " + s.name + " has shape " + shape_text(shape) + ", this model's is " +
                      shape_text(s.place.global_shape) + "; load it with the config it was saved with");
    }
  }
  for (const StateTensor& s : state) {
    const std::vector<float> global = assemble(s.name, tensors[s.name], s.place.global_shape, files, meta_path);
    copy_own_piece(s.piece, global.data(), s.place);
  }
  TrainPosition at;
  at.step = meta["step"].get<int64_t>();
  at.tokens_seen = meta.value("tokens_seen", int64_t{0});
  return at;
}

}  // namespace moe
