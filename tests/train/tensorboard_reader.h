// A reader of TensorBoard event files for the tests: it checks both CRCs of
// every record and decodes the Event fields the writer uses, from the
// protobuf wire format, independently of the writer's encoder.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/train/tensorboard_events.h"

namespace moe::test {

struct ReadHistogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> limits, buckets;
};

struct ReadEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::map<std::string, float> scalars;
  std::map<std::string, ReadHistogram> histograms;
};

class ProtoReader {
 public:
  explicit ProtoReader(const std::string& bytes) : s_(bytes) {}
  bool done() const { return at_ >= s_.size(); }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const auto b = static_cast<uint8_t>(byte());
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    throw std::runtime_error("varint too long");
  }
  template <typename T>
  T fixed() {
    if (at_ + sizeof(T) > s_.size()) throw std::runtime_error("truncated fixed-width field");
    T v;
    std::memcpy(&v, s_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  std::string bytes() {
    const uint64_t n = varint();
    if (at_ + n > s_.size()) throw std::runtime_error("truncated length-delimited field");
    std::string out = s_.substr(at_, n);
    at_ += n;
    return out;
  }

 private:
  char byte() {
    if (at_ >= s_.size()) throw std::runtime_error("truncated varint");
    return s_[at_++];
  }
  const std::string& s_;
  size_t at_ = 0;
};

inline std::vector<double> packed_doubles(const std::string& bytes) {
  std::vector<double> out(bytes.size() / 8);
  std::memcpy(out.data(), bytes.data(), out.size() * 8);
  return out;
}

inline ReadHistogram decode_histogram(const std::string& bytes) {
  ReadHistogram h;
  ProtoReader r(bytes);
  while (!r.done()) {
    const uint64_t key = r.varint();
    switch (key >> 3) {
      case 1: h.min = r.fixed<double>(); break;
      case 2: h.max = r.fixed<double>(); break;
      case 3: h.num = r.fixed<double>(); break;
      case 4: h.sum = r.fixed<double>(); break;
      case 5: h.sum_squares = r.fixed<double>(); break;
      case 6: h.limits = packed_doubles(r.bytes()); break;
      case 7: h.buckets = packed_doubles(r.bytes()); break;
      default: throw std::runtime_error("unexpected HistogramProto field");
    }
  }
  return h;
}

inline void decode_summary(const std::string& bytes, ReadEvent& e) {
  ProtoReader summary(bytes);
  while (!summary.done()) {
    if (summary.varint() != ((1 << 3) | 2)) throw std::runtime_error("Summary: expected field 1 (value)");
    const std::string value_bytes = summary.bytes();
    ProtoReader value(value_bytes);
    std::string tag;
    while (!value.done()) {
      const uint64_t key = value.varint();
      if (key == ((1 << 3) | 2)) {
        tag = value.bytes();
      } else if (key == ((2 << 3) | 5)) {
        e.scalars[tag] = value.fixed<float>();
      } else if (key == ((5 << 3) | 2)) {
        e.histograms[tag] = decode_histogram(value.bytes());
      } else {
        throw std::runtime_error("Summary.Value: unexpected field");
      }
    }
  }
}

// Every event of the file, in order; throws on a bad CRC or framing.
inline std::vector<ReadEvent> read_event_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<ReadEvent> events;
  for (size_t at = 0; at < all.size();) {
    if (at + 12 > all.size()) throw std::runtime_error("truncated record header");
    uint64_t length;
    uint32_t length_crc, data_crc;
    std::memcpy(&length, all.data() + at, 8);
    std::memcpy(&length_crc, all.data() + at + 8, 4);
    if (length_crc != tfrecord_masked_crc(all.data() + at, 8)) throw std::runtime_error("bad length CRC");
    if (at + 12 + length + 4 > all.size()) throw std::runtime_error("truncated record");
    const std::string data = all.substr(at + 12, length);
    std::memcpy(&data_crc, all.data() + at + 12 + length, 4);
    if (data_crc != tfrecord_masked_crc(data.data(), data.size())) throw std::runtime_error("bad data CRC");
    at += 12 + length + 4;

    ReadEvent e;
    ProtoReader r(data);
    while (!r.done()) {
      const uint64_t key = r.varint();
      switch (key >> 3) {
        case 1: e.wall_time = r.fixed<double>(); break;
        case 2: e.step = static_cast<int64_t>(r.varint()); break;
        case 3: e.file_version = r.bytes(); break;
        case 5: decode_summary(r.bytes(), e); break;
        default: throw std::runtime_error("Event: unexpected field");
      }
    }
    events.push_back(e);
  }
  return events;
}

// The one event file in `dir` (events.out.tfevents.*); throws unless exactly one.
inline std::string only_event_file(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) found.push_back(entry.path().string());
  }
  if (found.size() != 1) throw std::runtime_error(dir + ": " + std::to_string(found.size()) + " event files");
  return found.front();
}

}  // namespace moe::test
