#include "src/checkpoint/safetensors.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "src/core/bf16.h"
#include "src/core/crc32.h"
#include "src/core/f16.h"
#include "src/core/user_error.h"

namespace moe {
namespace {

// Bytes per element of every safetensors dtype; 0 for names the format does not have.
uint64_t dtype_size(const std::string& dtype) {
  static const std::map<std::string, uint64_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I64", 8}, {"I32", 4},
      {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2},     {"U8", 1},      {"BOOL", 1}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace

WrittenFile write_safetensors(const std::string& path, const std::vector<SafetensorsView>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(numel_of(t.shape)) * sizeof(float);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  const uint64_t header_len = text.size();

  DurableFile f(path);
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header_len >> (8 * i));
  f.write(len, 8);
  f.write(text.data(), text.size());
  for (const auto& t : tensors) f.write(t.data, static_cast<size_t>(numel_of(t.shape)) * sizeof(float));
  WrittenFile written;
  written.bytes = f.commit();
  written.crc32 = f.crc32();
  return written;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsView> views;
  for (const auto& t : tensors) views.push_back({t.name, t.shape, t.data.data()});
  write_safetensors(path, views, metadata);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw UserError(path + ": cannot be opened; check the path");
  size_ = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len[8];
  if (size_ < 8 || !in.read(reinterpret_cast<char*>(len), 8)) {
    throw UserError(path + ": truncated safetensors file (no header length); the file is damaged");
  }
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (header_len > size_ - 8) {
    throw UserError(path + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                    std::to_string(size_) + "; the file is truncated or not safetensors");
  }
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(path + ": the header is not valid JSON (" + std::string(e.what()) + "); the file is damaged");
  }
  if (!header.is_object()) throw UserError(path + ": the header is not a JSON object; the file is damaged");
  const uint64_t data_begin = 8 + header_len, data_size = size_ - data_begin;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& h = it.value();
    const std::string where = path + ": tensor " + it.key();
    if (!h.is_object() || !h.contains("dtype") || !h["dtype"].is_string() || !h.contains("shape") ||
        !h["shape"].is_array() || !h.contains("data_offsets")) {
      throw UserError(where + ": needs a dtype, a shape and data_offsets; the file is damaged or not safetensors");
    }
    Entry e;
    e.dtype = h["dtype"].get<std::string>();
    const uint64_t element_bytes = dtype_size(e.dtype);
    if (element_bytes == 0) {
      throw UserError(where + ": dtype \"" + e.dtype + "\" is not a safetensors dtype; the file is damaged");
    }
    uint64_t numel = 1;
    for (const auto& s : h["shape"]) {
      if (!s.is_number_unsigned() || s.get<uint64_t>() > (uint64_t{1} << 40)) {
        throw UserError(where + ": shape entries must be non-negative integers below 2^40");
      }
      e.shape.push_back(s.get<int64_t>());
      // Checked before multiplying, so that a product past 2^64 cannot wrap into a small one.
      if (s.get<uint64_t>() > 0 && numel > (uint64_t{1} << 40) / s.get<uint64_t>()) {
        throw UserError(where + ": the shape has more than 2^40 elements");
      }
      numel *= s.get<uint64_t>();
    }
    const auto& off = h["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      throw UserError(where + ": data_offsets must be two non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size || end - begin != numel * element_bytes) {
      throw UserError(where + ": byte range [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") does not fit the shape or the file (data size " + std::to_string(data_size) +
                      "); the file is truncated or damaged");
    }
    e.numel = static_cast<int64_t>(numel);
    e.begin = data_begin + begin;
    e.end = data_begin + end;
    entries_[it.key()] = std::move(e);
  }
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end())
    throw UserError(path_ + ": has no tensor " + name + "; the file does not match its metadata");
  return it->second;
}

void SafetensorsFile::read(const std::string& name, float* dst) const {
  const Entry& e = entry(name);
  if (e.dtype != "F32" && e.dtype != "BF16" && e.dtype != "F16") {
    throw UserError(path_ + ": tensor " + name + " is " + e.dtype +
                    "; only F32, BF16 and F16 tensors are read as weights; save the checkpoint in one of those");
  }
  std::ifstream in(path_, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(e.begin));
  const auto bytes = static_cast<std::streamsize>(e.end - e.begin);
  if (e.dtype == "F32") {
    in.read(reinterpret_cast<char*>(dst), bytes);
  } else {
    // 16-bit values, little-endian as the format stores them (and as x86 and Arm hosts are).
    std::vector<uint16_t> half(static_cast<size_t>(e.numel));
    in.read(reinterpret_cast<char*>(half.data()), bytes);
    const bool bf16 = e.dtype == "BF16";
    for (size_t i = 0; i < half.size(); ++i) dst[i] = bf16 ? bf16_to_f32(half[i]) : f16_to_f32(half[i]);
  }
  if (!in) throw UserError(path_ + ": tensor " + name + ": could not read its bytes; the file is truncated");
}

uint32_t SafetensorsFile::crc32() const {
  std::ifstream in(path_, std::ios::binary);
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    crc = crc32_update(crc, buf.data(), static_cast<size_t>(in.gcount()));
  }
  return crc;
}

std::vector<SafetensorsEntry> read_safetensors(const std::string& path) {
  const SafetensorsFile file(path);
  std::vector<SafetensorsEntry> out;
  for (const auto& [name, e] : file.entries()) {
    SafetensorsEntry t;
    t.name = name;
    t.shape = e.shape;
    t.data.resize(static_cast<size_t>(e.numel));
    file.read(name, t.data.data());
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace moe
