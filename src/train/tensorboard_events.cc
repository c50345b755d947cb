#include "src/train/tensorboard_events.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "src/core/crc32.h"
#include "src/core/user_error.h"

namespace moe {
namespace {

// Protobuf wire format: a field is a varint key (number << 3 | wire type)
// and its payload; little-endian fixed-width numbers.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <typename T>
void put_le(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // x86-64 and aarch64 are little-endian
  out.append(bytes, sizeof(T));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (field << 3) | type); }

void put_double(std::string& out, uint32_t field, double v) {
  put_key(out, field, kFixed64);
  put_le(out, v);
}

void put_float(std::string& out, uint32_t field, float v) {
  put_key(out, field, kFixed32);
  put_le(out, v);
}

void put_int64(std::string& out, uint32_t field, int64_t v) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(v));
}

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

void put_packed_doubles(std::string& out, uint32_t field, const std::vector<double>& values) {
  std::string packed;
  for (double v : values) put_le(packed, v);
  put_bytes(out, field, packed);
}

// tensorboard's HistogramProto: min 1, max 2, num 3, sum 4, sum_squares 5,
// bucket_limit 6, bucket 7. TensorBoard draws bucket i from the previous
// limit (min for the first) to its own (max for the last).
std::string histogram_proto(const std::vector<int64_t>& counts) {
  double num = 0, sum = 0, sum_squares = 0;
  std::vector<double> limits, buckets;
  for (size_t i = 0; i < counts.size(); ++i) {
    const auto c = static_cast<double>(counts[i]), x = static_cast<double>(i);
    num += c;
    sum += c * x;
    sum_squares += c * x * x;
    limits.push_back(x + 0.5);
    buckets.push_back(c);
  }
  std::string h;
  put_double(h, 1, -0.5);
  put_double(h, 2, static_cast<double>(counts.size()) - 0.5);
  put_double(h, 3, num);
  put_double(h, 4, sum);
  put_double(h, 5, sum_squares);
  put_packed_doubles(h, 6, limits);
  put_packed_doubles(h, 7, buckets);
  return h;
}

// Event: wall_time 1 (double), step 2 (int64), file_version 3, summary 5.
// Summary: value 1 (repeated). Summary.Value: tag 1, simple_value 2, histo 5.
std::string event_proto(int64_t step, const std::vector<TensorBoardScalar>& scalars,
                        const std::vector<TensorBoardCounts>& histograms, const std::string& file_version) {
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string event;
  put_double(event, 1, now);
  put_int64(event, 2, step);
  if (!file_version.empty()) put_bytes(event, 3, file_version);
  std::string summary;
  for (const TensorBoardScalar& s : scalars) {
    std::string value;
    put_bytes(value, 1, s.tag);
    put_float(value, 2, static_cast<float>(s.value));
    put_bytes(summary, 1, value);
  }
  for (const TensorBoardCounts& h : histograms) {
    std::string value;
    put_bytes(value, 1, h.tag);
    put_bytes(value, 5, histogram_proto(h.counts));
    put_bytes(summary, 1, value);
  }
  if (!summary.empty()) put_bytes(event, 5, summary);
  return event;
}

}  // namespace

uint32_t tfrecord_masked_crc(const void* data, size_t bytes) {
  const uint32_t crc = crc32c_update(0, data, bytes);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(const std::string& data) {
  std::string record;
  put_le(record, static_cast<uint64_t>(data.size()));
  put_le(record, tfrecord_masked_crc(record.data(), 8));
  record += data;
  put_le(record, tfrecord_masked_crc(data.data(), data.size()));
  return record;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  path_ = (std::filesystem::path(dir) /
           fmt::format("events.out.tfevents.{}.{}.{}", secs.count(), host, static_cast<int64_t>(getpid())))
              .string();
  out_.open(path_, std::ios::binary | std::ios::out | std::ios::app);
  if (!out_) {
    throw UserError(
        fmt::format("metrics.tensorboard_dir = \"{}\": cannot create an event file there ({}); point it "
                    "at a writable folder, or set metrics.enable_tensorboard = false",
                    dir, ec ? ec.message() : std::string(std::strerror(errno))));
  }
  write_record(event_proto(0, {}, {}, "brain.Event:2"));
}

void TensorBoardWriter::write(int64_t step, const std::vector<TensorBoardScalar>& scalars,
                              const std::vector<TensorBoardCounts>& histograms) {
  write_record(event_proto(step, scalars, histograms, ""));
}

void TensorBoardWriter::write_record(const std::string& event) {
  if (failed_) return;
  out_ << tfrecord_frame(event);
  out_.flush();
  if (!out_) {
    failed_ = true;
    spdlog::warn("{}: writing the TensorBoard event file failed (disk full?); no more events go to it", path_);
  }
}

}  // namespace moe
