#include "src/parallel/param_sharding.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "src/core/tensor_pool.h"

namespace moe {
namespace {

void cut(std::vector<int64_t>& shape, std::vector<int64_t>& offset, size_t dim, int64_t parts, int64_t index,
         const char* axis) {
  if (dim >= shape.size() || shape[dim] % parts != 0) {
    throw std::logic_error(std::string("place_parameter: ") + axis + " = " + std::to_string(parts) +
                           " does not divide dim " + std::to_string(dim) + " of the parameter");
  }
  shape[dim] /= parts;
  offset[dim] += index * shape[dim];
}

}  // namespace

int64_t ParamPlacement::local_numel() const { return numel_of(local_shape); }

std::vector<int64_t> ParamPlacement::shard_shape() const {
  if (shards == 1) return local_shape;
  return {shard_numel};
}

ParamPlacement place_parameter(const std::vector<int64_t>& global_shape, int tp_dim, bool expert_parallel,
                               const Layout& layout, const MeshCoord& coord) {
  ParamPlacement p;
  p.global_shape = global_shape;
  p.local_shape = global_shape;
  p.local_offset.assign(global_shape.size(), 0);
  if (tp_dim >= 0 && layout.tp > 1)
    cut(p.local_shape, p.local_offset, static_cast<size_t>(tp_dim), layout.tp, coord.tp, "tp");
  if (expert_parallel && layout.ep > 1) cut(p.local_shape, p.local_offset, 0, layout.ep, coord.ep, "ep");
  const int64_t n = p.local_numel();
  p.shards = layout.dp_shard;
  p.shard_numel = (n + p.shards - 1) / p.shards;
  p.shard_begin = std::min(n, coord.dp_shard * p.shard_numel);
  p.shard_valid = std::min(n, p.shard_begin + p.shard_numel) - p.shard_begin;
  return p;
}

namespace {

// Copies between a block (dense, block.shape) and its place in the global tensor.
void block_copy(const Tensor& block, float* global, const std::vector<int64_t>& global_shape,
                const std::vector<int64_t>& offset, bool to_global) {
  const int nd = static_cast<int>(global_shape.size());
  if (block.ndim != nd || static_cast<int>(offset.size()) != nd) {
    throw std::logic_error("block copy: rank mismatch, block " + block.shape_string());
  }
  for (int d = 0; d < nd; ++d) {
    if (offset[d] < 0 || offset[d] + block.shape[d] > global_shape[d]) {
      throw std::logic_error("block copy: block " + block.shape_string() + " leaves the global tensor");
    }
  }
  // Copy runs of the last dimension; walk the others as an odometer.
  std::vector<int64_t> stride(nd, 1);
  for (int d = nd - 2; d >= 0; --d) stride[d] = stride[d + 1] * global_shape[d + 1];
  const int64_t run = block.shape[nd - 1];
  const int64_t runs = block.numel() / std::max<int64_t>(run, 1);
  std::vector<int64_t> idx(nd, 0);
  float* local = block.f32();
  for (int64_t r = 0; r < runs && run > 0; ++r) {
    int64_t at = 0;
    for (int d = 0; d < nd; ++d) at += (offset[d] + idx[d]) * stride[d];
    if (to_global) {
      std::memcpy(global + at, local + r * run, static_cast<size_t>(run) * sizeof(float));
    } else {
      std::memcpy(local + r * run, global + at, static_cast<size_t>(run) * sizeof(float));
    }
    for (int d = nd - 2; d >= 0; --d) {
      if (++idx[d] < block.shape[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

void copy_global_block(const Tensor& dst, const float* global, const std::vector<int64_t>& global_shape,
                       const std::vector<int64_t>& offset) {
  block_copy(dst, const_cast<float*>(global), global_shape, offset, false);
}

void copy_block_to_global(float* global, const std::vector<int64_t>& global_shape, const std::vector<int64_t>& offset,
                          const Tensor& src) {
  block_copy(src, global, global_shape, offset, true);
}

void copy_own_piece(const Tensor& piece, const float* global, const ParamPlacement& place) {
  const int64_t local_numel = place.local_numel();
  if (piece.numel() != (place.shards == 1 ? local_numel : place.shard_numel)) {
    throw std::logic_error("copy_own_piece: piece " + piece.shape_string() + " is not this rank's shard");
  }
  piece.f32();  // checks the dtype
  // The local block is built in host memory (or is the host piece itself),
  // then the piece is cut from it and, for a device piece, uploaded once.
  const bool in_place = place.shards == 1 && piece.device == Device::kCpu;
  std::vector<float> buffer(in_place ? 0 : static_cast<size_t>(local_numel));
  Tensor block;
  block.data = in_place ? piece.data : buffer.data();
  block.ndim = static_cast<int>(place.local_shape.size());
  for (int d = 0; d < block.ndim; ++d) block.shape[d] = place.local_shape[d];
  copy_global_block(block, global, place.global_shape, place.local_offset);
  if (in_place) return;
  if (place.shards > 1) {
    std::vector<float> shard(static_cast<size_t>(piece.numel()), 0.0f);  // zero past shard_valid
    std::memcpy(shard.data(), buffer.data() + place.shard_begin,
                static_cast<size_t>(place.shard_valid) * sizeof(float));
    buffer.swap(shard);
  }
  upload(piece, buffer.data());  // host pieces: a copy; device pieces: a host sync
}

}  // namespace moe
