// TensorBoard event files, written natively: the TFRecord framing (length,
// masked CRC-32C of the length, a serialised Event protobuf, its masked
// CRC-32C) and the few protobuf messages TensorBoard reads for scalars and
// histograms (Event, Summary, Summary.Value, HistogramProto), encoded by hand
// so that no protobuf library is needed.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace moe {

struct TensorBoardScalar {
  std::string tag;
  double value = 0;
};

// A histogram of counts over categories 0..n-1 (for example the tokens each
// expert received): bucket i spans [i - 0.5, i + 0.5], so TensorBoard's
// histogram and distribution views show one bar per category.
struct TensorBoardCounts {
  std::string tag;
  std::vector<int64_t> counts;
};

class TensorBoardWriter {
 public:
  // Creates `dir` and a new event file in it, named as TensorBoard expects
  // (events.out.tfevents.<unix time>.<host>.<pid>), starting with the
  // file-version event. A folder that cannot be written is a UserError.
  explicit TensorBoardWriter(const std::string& dir);

  // One event at `step` with every value given (one Summary). A failed write
  // is warned about once, and the file is not written to again: the run goes on.
  void write(int64_t step, const std::vector<TensorBoardScalar>& scalars,
             const std::vector<TensorBoardCounts>& histograms = {});

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);
  std::string path_;
  std::ofstream out_;
  bool failed_ = false;
};

// The TFRecord framing of one record (exposed for the reader's tests).
std::string tfrecord_frame(const std::string& data);
uint32_t tfrecord_masked_crc(const void* data, size_t bytes);

}  // namespace moe
