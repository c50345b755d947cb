#include "src/train/safetensors.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "src/core/user_error.h"

namespace moe {

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const uint64_t bytes = t.data.size() * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const uint64_t header_len = text.size();

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw UserError(path + ": cannot be written; check that its folder exists and is writable");
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header_len >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * sizeof(float)));
    }
    out.flush();
    if (!out) throw UserError(path + ": writing failed (disk full?); nothing was replaced");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw UserError(path + ": cannot rename the finished file into place; check the folder's permissions");
  }
}

std::vector<SafetensorsEntry> read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw UserError(path + ": cannot be opened; check the path");
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len[8];
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(len), 8)) {
    throw UserError(path + ": truncated safetensors file (no header length); the file is damaged");
  }
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (header_len > file_size - 8) {
    throw UserError(path + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                    std::to_string(file_size) + "; the file is truncated or not safetensors");
  }
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": the header is not valid JSON (" + std::string(e.what()) + "); the file is damaged");
  }
  const uint64_t data_begin = 8 + header_len, data_size = file_size - data_begin;
  std::vector<SafetensorsEntry> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& h = it.value();
    const std::string where = path + ": tensor " + it.key();
    if (!h.is_object() || h.value("dtype", "") != "F32" || !h.contains("shape") || !h.contains("data_offsets")) {
      throw UserError(where + ": needs dtype F32, a shape and data_offsets; only F32 files are read here");
    }
    SafetensorsEntry e;
    e.name = it.key();
    uint64_t numel = 1;
    for (const auto& s : h["shape"]) {
      if (!s.is_number_unsigned()) throw UserError(where + ": shape entries must be non-negative integers");
      e.shape.push_back(s.get<int64_t>());
      numel *= s.get<uint64_t>();
    }
    const auto& off = h["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      throw UserError(where + ": data_offsets must be two non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size || end - begin != numel * sizeof(float)) {
      throw UserError(where + ": byte range [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") does not fit the shape or the file (data size " + std::to_string(data_size) +
                      "); the file is truncated or damaged");
    }
    e.data.resize(numel);
    in.seekg(static_cast<std::streamoff>(data_begin + begin));
    in.read(reinterpret_cast<char*>(e.data.data()), static_cast<std::streamsize>(end - begin));
    if (!in) throw UserError(where + ": could not read its bytes; the file is truncated");
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace moe
