#include "src/checkpoint/checkpoint_metadata.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "src/core/user_error.h"

namespace moe {
namespace {

constexpr int64_t kMaxElements = int64_t{1} << 40;  // per tensor; far above any model, far below overflow

using Json = nlohmann::json;

int64_t bounded_int(const Json& j, const std::string& where, int64_t max = kMaxElements) {
  if (!j.is_number_integer() || j.get<int64_t>() < 0 || j.get<int64_t>() > max) {
    throw UserError(where + ": expected an integer in [0, " + std::to_string(max) + "]");
  }
  return j.get<int64_t>();
}

const Json& field(const Json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) throw UserError(where + ": missing \"" + key + "\"");
  return obj[key];
}

// A shape: at most 4 dims, each bounded, with a bounded product.
std::vector<int64_t> shape_of(const Json& j, const std::string& where) {
  if (!j.is_array() || j.size() > 4) throw UserError(where + ": expected a list of at most 4 dimensions");
  std::vector<int64_t> s;
  int64_t n = 1;
  for (const Json& x : j) {
    s.push_back(bounded_int(x, where));
    n = s.back() == 0 ? 0 : (n > kMaxElements / s.back() ? kMaxElements + 1 : n * s.back());
    if (n > kMaxElements) throw UserError(where + ": more than 2^40 elements");
  }
  return s;
}

}  // namespace

CheckpointMetadata parse_checkpoint_metadata(const std::string& text, const std::string& path) {
  Json meta;
  try {
    meta = Json::parse(text);
  } catch (const Json::exception& e) {
    throw UserError(path + ": not valid JSON (" + std::string(e.what()) + "); the checkpoint is damaged");
  }
  if (!meta.is_object() || !meta.contains("format") || !meta["format"].is_string() ||
      meta["format"].get<std::string>() != kCheckpointFormat) {
    throw UserError(path + ": not a \"" + std::string(kCheckpointFormat) + "\" metadata file");
  }
  CheckpointMetadata out;
  out.step = bounded_int(field(meta, "step", path), path + ": step");
  out.tokens_seen =
      meta.contains("tokens_seen") ? bounded_int(meta["tokens_seen"], path + ": tokens_seen", INT64_MAX) : 0;
  if (meta.contains("lineage")) {
    if (!meta["lineage"].is_string() || meta["lineage"].get<std::string>().size() > 64) {
      throw UserError(path + ": lineage must be a string of at most 64 characters");
    }
    out.lineage = meta["lineage"].get<std::string>();
  }
  if (meta.contains("health")) {
    const Json& h = meta["health"];
    if (!h.is_string() || (h != "provisional" && h != "healthy" && h != "unhealthy")) {
      throw UserError(path + ": health must be \"provisional\", \"healthy\" or \"unhealthy\"");
    }
    out.health = h.get<std::string>();
  }
  if (meta.contains("loss_history")) {
    const Json& h = meta["loss_history"];
    const std::string where = path + ": loss_history";
    const Json& mean = field(h, "mean", where);
    if (!mean.is_number() || !(mean.get<double>() >= 0) || !std::isfinite(mean.get<double>())) {
      throw UserError(where + ": mean must be a finite number >= 0");
    }
    out.loss_mean = mean.get<double>();
    out.losses_seen = bounded_int(field(h, "count", where), where + ": count", INT64_MAX);
  }

  const Json& files = field(meta, "files", path);
  if (!files.is_array() || files.size() > (1u << 24)) throw UserError(path + ": \"files\" must be a list");
  for (const Json& f : files) {
    const std::string where = path + ": a file entry";
    CheckpointFileMeta m;
    const Json& name = field(f, "name", where);
    if (!name.is_string() || name.get<std::string>().empty() ||
        name.get<std::string>().find('/') != std::string::npos || name.get<std::string>()[0] == '.') {
      throw UserError(where + ": the name must be a plain file name inside the step folder");
    }
    m.name = name.get<std::string>();
    m.bytes = static_cast<uint64_t>(bounded_int(field(f, "bytes", where), where + " bytes", INT64_MAX));
    m.crc32 = static_cast<uint32_t>(bounded_int(field(f, "crc32", where), where + " crc32", UINT32_MAX));
    out.files.push_back(std::move(m));
  }

  const Json& tensors = field(meta, "tensors", path);
  if (!tensors.is_object()) throw UserError(path + ": \"tensors\" must be an object");
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    const std::string where = path + ": tensor " + it.key();
    CheckpointTensorMeta t;
    t.shape = shape_of(field(it.value(), "shape", where), where + " shape");
    const Json& pieces = field(it.value(), "pieces", where);
    if (!pieces.is_array()) throw UserError(where + ": \"pieces\" must be a list");
    int64_t covered = 0;
    for (const Json& pj : pieces) {
      CheckpointPiece p;
      p.file = bounded_int(field(pj, "file", where), where + " piece file");
      p.local_offset = shape_of(field(pj, "local_offset", where), where + " local_offset");
      p.local_shape = shape_of(field(pj, "local_shape", where), where + " local_shape");
      p.begin = bounded_int(field(pj, "begin", where), where + " piece begin");
      p.count = bounded_int(field(pj, "count", where), where + " piece count");
      bool inside = p.file < static_cast<int64_t>(out.files.size()) && p.local_offset.size() == t.shape.size() &&
                    p.local_shape.size() == t.shape.size() && p.begin + p.count <= numel_of(p.local_shape);
      for (size_t d = 0; inside && d < t.shape.size(); ++d) inside = p.local_offset[d] + p.local_shape[d] <= t.shape[d];
      if (!inside) {
        throw UserError(where + ": a piece lies outside the tensor " + shape_text(t.shape) +
                        " or names no listed file");
      }
      covered += p.count;
      if (covered > numel_of(t.shape)) throw UserError(where + ": its pieces hold more values than the tensor");
      t.pieces.push_back(std::move(p));
    }
    if (covered != numel_of(t.shape)) {
      throw UserError(where + ": its pieces hold " + std::to_string(covered) + " of " +
                      std::to_string(numel_of(t.shape)) + " values; the checkpoint is incomplete");
    }
    out.tensors[it.key()] = std::move(t);
  }
  return out;
}

}  // namespace moe
