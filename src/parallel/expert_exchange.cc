#include "src/parallel/expert_exchange.h"

#include <stdexcept>
#include <string>

namespace moe {

ExpertExchange::ExpertExchange(Communicator& ep, int64_t experts_per_rank, int64_t max_local_rows, int64_t dim,
                               TensorPool& pool, DType row_dtype)
    : ep_(ep), P_(ep.size()), El_(experts_per_rank), max_rows_(max_local_rows) {
  offsets_host_.assign(static_cast<size_t>(P_ * El_ + 1), 0);
  local_host_.assign(static_cast<size_t>(El_ + 1), 0);
  send_rows_.assign(static_cast<size_t>(P_), 0);
  recv_rows_.assign(static_cast<size_t>(P_), 0);
  el_per_peer_.assign(static_cast<size_t>(P_), El_);
  send_counts_ = host_pool_.alloc({P_ * El_}, DType::kI32);
  recv_counts_ = host_pool_.alloc({P_ * El_}, DType::kI32);
  peer_major_ = pool.alloc({max_local_rows, dim}, row_dtype);
  local_offsets_ = pool.alloc({El_ + 1}, DType::kI32);
  expert_from_peer_ = pool.alloc({max_local_rows}, DType::kI32);
  peer_from_expert_ = pool.alloc({max_local_rows}, DType::kI32);
  expert_from_peer_host_.assign(static_cast<size_t>(max_local_rows), 0);
  peer_from_expert_host_.assign(static_cast<size_t>(max_local_rows), 0);
}

void ExpertExchange::plan(const Tensor& offsets_E1) {
  if (offsets_E1.numel() != P_ * El_ + 1) {
    throw std::logic_error("ExpertExchange::plan: offsets " + offsets_E1.shape_string() + " for " +
                           std::to_string(P_ * El_) + " experts");
  }
  offsets_E1.i32();  // checks the dtype
  download(offsets_host_.data(), offsets_E1);
  const int32_t* off = offsets_host_.data();
  int32_t* send = send_counts_.i32();
  for (int64_t p = 0; p < P_; ++p) {
    send_rows_[static_cast<size_t>(p)] = off[(p + 1) * El_] - off[p * El_];
    for (int64_t e = 0; e < El_; ++e) send[p * El_ + e] = off[p * El_ + e + 1] - off[p * El_ + e];
  }
  ep_.all_to_all_v(recv_counts_, el_per_peer_, send_counts_, el_per_peer_);
  // recv_counts[p*El + e]: rows peer p sends for local expert e.
  const int32_t* recv = recv_counts_.i32();
  int32_t* loc = local_host_.data();
  local_rows_ = 0;
  for (int64_t p = 0; p < P_; ++p) {
    int64_t rows = 0;
    for (int64_t e = 0; e < El_; ++e) rows += recv[p * El_ + e];
    recv_rows_[static_cast<size_t>(p)] = rows;
    local_rows_ += rows;
  }
  loc[0] = 0;
  for (int64_t e = 0; e < El_; ++e) {
    int64_t rows = 0;
    for (int64_t p = 0; p < P_; ++p) rows += recv[p * El_ + e];
    loc[e + 1] = static_cast<int32_t>(loc[e] + rows);
  }
  if (local_rows_ > max_rows_) {
    throw std::logic_error("ExpertExchange: " + std::to_string(local_rows_) + " rows received, planned for at most " +
                           std::to_string(max_rows_));
  }
  upload(local_offsets_, local_host_.data());

  // The row maps: walk the peer-major blocks in order; block (p, e) lands
  // after the blocks of expert e from peers before p in the expert-major order.
  std::vector<int64_t> expert_fill(static_cast<size_t>(El_), 0);
  int64_t peer_row = 0;
  for (int64_t p = 0; p < P_; ++p) {
    for (int64_t e = 0; e < El_; ++e) {
      const int64_t n = recv[p * El_ + e];
      const int64_t expert_row = loc[e] + expert_fill[static_cast<size_t>(e)];
      for (int64_t r = 0; r < n; ++r) {
        expert_from_peer_host_[static_cast<size_t>(expert_row + r)] = static_cast<int32_t>(peer_row + r);
        peer_from_expert_host_[static_cast<size_t>(peer_row + r)] = static_cast<int32_t>(expert_row + r);
      }
      expert_fill[static_cast<size_t>(e)] += n;
      peer_row += n;
    }
  }
  upload(expert_from_peer(), expert_from_peer_host_.data());
  upload(peer_from_expert(), peer_from_expert_host_.data());
}

void ExpertExchange::dispatch(const Tensor& routed_MD) { dispatch(peer_major_, routed_MD); }

void ExpertExchange::dispatch(const Tensor& out_peer_major, const Tensor& routed_M) const {
  ep_.all_to_all_v(out_peer_major.rows(0, local_rows_), recv_rows_, routed_M, send_rows_);
}

void ExpertExchange::combine(const Tensor& routed_MD) {
  ep_.all_to_all_v(routed_MD, send_rows_, peer_major_.rows(0, local_rows_), recv_rows_);
}

}  // namespace moe
