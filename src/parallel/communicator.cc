// Helpers built on any Communicator backend.
#include "src/parallel/communicator.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace moe {

double all_reduce_value(Communicator& group, double value, ReduceOp op) {
  if (group.size() == 1) return value;
  float wire = static_cast<float>(value);
  group.all_reduce(view_of(&wire, {1}), op);
  return wire;
}

bool any_rank(Communicator& group, bool flag) {
  int32_t wire = flag ? 1 : 0;
  if (group.size() > 1) group.all_reduce(view_of(&wire, {1}, DType::kI32), ReduceOp::kMax);
  return wire != 0;
}

std::vector<std::string> all_gather_bytes(Communicator& group, const std::string& mine) {
  const int64_t W = group.size();
  if (mine.size() > static_cast<size_t>(INT32_MAX)) throw std::length_error("all_gather_bytes: more than 2^31 bytes");
  std::vector<int32_t> lengths(static_cast<size_t>(W)), my_length = {static_cast<int32_t>(mine.size())};
  group.all_gather(view_of(lengths.data(), {W}, DType::kI32), view_of(my_length.data(), {1}, DType::kI32));
  // The bytes travel as i32 words (every backend gathers i32), padded to the longest.
  const int64_t words = (*std::max_element(lengths.begin(), lengths.end()) + 3) / 4;
  std::vector<int32_t> in(static_cast<size_t>(std::max<int64_t>(words, 1)), 0),
      all(static_cast<size_t>(std::max<int64_t>(words, 1) * W));
  std::memcpy(in.data(), mine.data(), mine.size());
  const int64_t n = static_cast<int64_t>(in.size());
  group.all_gather(view_of(all.data(), {n * W}, DType::kI32), view_of(in.data(), {n}, DType::kI32));
  std::vector<std::string> out;
  for (int64_t r = 0; r < W; ++r) {
    const char* bytes = reinterpret_cast<const char*>(all.data() + r * n);
    out.emplace_back(bytes, static_cast<size_t>(lengths[static_cast<size_t>(r)]));
  }
  return out;
}

}  // namespace moe
