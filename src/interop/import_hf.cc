#include "src/interop/import_hf.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "src/core/user_error.h"
#include "src/interop/hf_config_check.h"
#include "src/interop/hf_format.h"
#include "src/checkpoint/safetensors.h"

namespace moe {
namespace fs = std::filesystem;
namespace {

// The checkpoint's files, opened (headers checked), and which file holds each tensor.
struct HfFiles {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> holder;
};

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw UserError(path +
                    ": missing; --init-from-hf needs a Hugging Face model folder (config.json and "
                    "model.safetensors or model.safetensors.index.json)");
  }
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": not valid JSON (" + std::string(e.what()) + "); the file is damaged");
  }
}

HfFiles open_files(const std::string& dir) {
  HfFiles c;
  const std::string index_path = dir + "/model.safetensors.index.json", single = dir + "/model.safetensors";
  if (!fs::exists(index_path)) {
    if (!fs::exists(single)) {
      throw UserError("--init-from-hf=" + dir +
                      ": has neither model.safetensors nor model.safetensors.index.json; "
                      "point it at a Hugging Face model folder");
    }
    c.files.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& entry : c.files.back()->entries()) c.holder[entry.first] = c.files.back().get();
    return c;
  }
  // Sharded: the index's weight_map names each tensor's file.
  const nlohmann::json index = read_json(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw UserError(index_path + ": has no weight_map object; the index is damaged");
  }
  std::map<std::string, const SafetensorsFile*> by_name;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    const std::string file = it.value().is_string() ? it.value().get<std::string>() : "";
    if (file.empty() || file.find('/') != std::string::npos) {
      throw UserError(index_path + ": weight_map gives tensor " + it.key() + " the file " + it.value().dump() +
                      ", not a file name in the folder; the index is damaged");
    }
    const SafetensorsFile*& f = by_name[file];
    if (f == nullptr) {
      if (!fs::exists(dir + "/" + file)) {
        throw UserError(dir + "/" + file + ": missing (model.safetensors.index.json lists it); download every shard");
      }
      c.files.push_back(std::make_unique<SafetensorsFile>(dir + "/" + file));
      f = c.files.back().get();
    }
    if (f->entries().count(it.key()) == 0) {
      throw UserError(f->path() + ": has no tensor " + it.key() +
                      " (model.safetensors.index.json says it does); the download is incomplete or damaged");
    }
    c.holder[it.key()] = f;
  }
  return c;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& x) {
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

// Every tensor the model needs: present, its shape, a dtype we read.
void check_tensors(const ModelConfig& m, const std::string& arch, const std::vector<HfTensor>& expected,
                   const HfFiles& c, const std::string& dir) {
  for (const HfTensor& t : expected) {
    const auto it = c.holder.find(t.name);
    if (it == c.holder.end()) {
      throw UserError("--init-from-hf=" + dir + ": has no tensor " + t.name + " (a " + arch +
                      " of this config needs it); the checkpoint is incomplete or of another model");
    }
    const SafetensorsFile::Entry& e = it->second->entry(t.name);
    if (e.shape != t.shape) {
      throw UserError(it->second->path() + ": tensor " + t.name + " has shape " + shape_text(e.shape) +
                      ", this model needs " + shape_text(t.shape) +
                      "; the weights do not match config.json or this model's config");
    }
    if (e.dtype != "F32" && e.dtype != "BF16" && e.dtype != "F16") {
      throw UserError(it->second->path() + ": tensor " + t.name + " is " + e.dtype +
                      "; weights are read from F32, BF16 or F16; save the checkpoint in one of those");
    }
  }
  // Tensors we do not expect.
  std::set<std::string> known;
  for (const HfTensor& t : expected) known.insert(t.name);
  std::vector<std::string> skipped;
  for (const auto& [name, file] : c.holder) {
    if (known.count(name) != 0 || ends_with(name, "rotary_emb.inv_freq")) continue;  // RoPE is recomputed
    if (m.tie_embeddings && name == "lm_head.weight") continue;                      // tied: HF too uses the embedding
    if (starts_with(name, "model.") || starts_with(name, "lm_head.")) {
      throw UserError(file->path() + ": tensor " + name + " is not part of a " + arch + " of this config (" +
                      std::to_string(m.n_layers) + " layers, " + std::to_string(m.num_experts) +
                      " experts); the checkpoint is of a larger model or another architecture");
    }
    skipped.push_back(name);
  }
  if (!skipped.empty()) {
    spdlog::warn("--init-from-hf: {} tensor(s) that are not part of the model were skipped, e.g. {}", skipped.size(),
                 skipped.front());
  }
}

// The tensors with no counterpart here must add exactly 0.
void check_zeros(const std::vector<HfTensor>& expected, const HfFiles& c) {
  std::vector<float> buf;
  for (const HfTensor& t : expected) {
    if (t.source != HfTensor::Source::kZero) continue;
    const SafetensorsFile& f = *c.holder.at(t.name);
    buf.resize(static_cast<size_t>(f.entry(t.name).numel));
    f.read(t.name, buf.data());
    for (float x : buf) {
      if (x != 0.0f) {
        throw UserError(f.path() + ": tensor " + t.name + " holds " + std::to_string(x) +
                        ", and this model has no such weight (only zeros are exact); the checkpoint cannot be "
                        "imported exactly");
      }
    }
  }
}

}  // namespace

void import_hf(const ModelConfig& m, const std::string& dir, ParamStore& params) {
  using S = HfTensor::Source;
  const std::string arch = hf_architecture(m, "--init-from-hf");
  if (!fs::is_directory(dir)) {
    throw UserError("--init-from-hf=" + dir + ": no such folder; point it at a Hugging Face model folder");
  }
  check_hf_config(m, read_json(dir + "/config.json"), dir + "/config.json");
  const HfFiles files = open_files(dir);
  const std::vector<HfTensor> expected = hf_tensors(m);
  check_tensors(m, arch, expected, files, dir);
  check_zeros(expected, files);

  // Each of our parameters from its HF tensors: whole, or one per expert.
  std::map<std::string, std::vector<const HfTensor*>> sources;
  for (const HfTensor& t : expected) {
    if (t.source == S::kParam || t.source == S::kExpert) sources[t.param].push_back(&t);
  }
  std::vector<float> global, hf;
  for (Param& p : params.all()) {
    const auto from = sources.find(p.spec.name);
    if (from == sources.end()) {
      // Only a router's training-only weights (noisy_topk's noise gates) have no HF tensor.
      if (p.spec.kind != ParamKind::kRouter) throw std::logic_error("import_hf: no HF tensor for " + p.spec.name);
      continue;
    }
    global.assign(static_cast<size_t>(p.spec.numel()), 0.0f);
    for (const HfTensor* t : from->second) {
      const SafetensorsFile& f = *files.holder.at(t->name);
      if (t->source == S::kParam) {
        f.read(t->name, global.data());
        continue;
      }
      // Expert e: HF [b, a] into our [E, a, b]. Experts outside this rank's block are not kept: skip them.
      const int64_t e = t->expert, first = p.place.local_offset[0], count = p.place.local_shape[0];
      if (e < first || e >= first + count) continue;
      const int64_t a = p.spec.shape[1], b = p.spec.shape[2];
      hf.resize(static_cast<size_t>(a * b));
      f.read(t->name, hf.data());
      float* dst = global.data() + e * a * b;
      for (int64_t i = 0; i < a; ++i) {
        for (int64_t j = 0; j < b; ++j) dst[i * b + j] = hf[static_cast<size_t>(j * a + i)];
      }
    }
    copy_own_piece(p.shard, global.data(), p.place);
  }
  params.refresh_compute_copies();
}

}  // namespace moe
