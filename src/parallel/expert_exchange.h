// Expert parallelism's token exchange for one MoE layer. Each EP rank holds
// El = E / ep consecutive experts (rank p: experts [p*El, (p+1)*El)). A rank
// routes its own tokens and sorts the kept (token, slot) rows by global
// expert, so the rows bound for each peer are contiguous. Then:
//   plan:     all-to-all of the per-expert row counts (El ints per peer);
//   dispatch: all-to-all-v of the rows to the experts' ranks, into
//             peer-major order (as received); the caller then gathers them
//             into expert-major order (what one grouped matmul over the local
//             experts wants) through expert_from_peer();
//   combine:  the inverse: the caller gathers expert-major rows into
//             peer_major() through peer_from_expert(), all-to-all-v back.
// The reorder is one row gather (ops::gather_rows in the model), not a copy
// per (peer, expert) block: one launch on a GPU whatever ep and the experts.
// Backward uses the same plan: dispatch the output gradients, combine the
// input gradients. Every rank calls every collective, with zero counts where
// it has nothing to send. Legend: M rows routed here, R rows computed here, D dim.
// The rows may live on a GPU (pool's device, rows of row_dtype); the counts
// are exchanged on the host, so plan() reads the routing offsets back (a
// HOST SYNC for device offsets) and writes the local offsets to the pool's device.
#pragma once

#include <cstdint>
#include <vector>

#include "src/core/tensor_pool.h"
#include "src/parallel/communicator.h"

namespace moe {

class ExpertExchange {
 public:
  // max_local_rows bounds R (planned from the capacity, or the dropless worst case).
  ExpertExchange(Communicator& ep, int64_t experts_per_rank, int64_t max_local_rows, int64_t dim, TensorPool& pool,
                 DType row_dtype = DType::kF32);

  // offsets_E1: E+1 row offsets (i32, global experts) of the rows this rank routed.
  void plan(const Tensor& offsets_E1);
  int64_t local_rows() const { return local_rows_; }
  // M: the rows this rank routed (all peers), from the offsets plan() read.
  int64_t routed_rows() const { return offsets_host_.back(); }
  // El+1 offsets of the local experts' rows in expert-major order.
  const Tensor& local_offsets() const { return local_offsets_; }

  // The received rows, peer-major: [max_local_rows, D], the first R meaningful.
  const Tensor& peer_major() const { return peer_major_; }
  // I32 [R] on the rows' device: expert-major row i is peer-major row
  // expert_from_peer()[i]; peer-major row j is expert-major row peer_from_expert()[j].
  Tensor expert_from_peer() const { return expert_from_peer_.rows(0, local_rows_); }
  Tensor peer_from_expert() const { return peer_from_expert_.rows(0, local_rows_); }

  // peer_major() (first R rows) = the rows routed to this rank's experts (routed_MD: all M rows).
  void dispatch(const Tensor& routed_MD);
  // The same exchange for another tensor of M rows (any dtype and width, on
  // the rows' device): out's first R rows, peer-major (expert dropout's row ids).
  void dispatch(const Tensor& out_peer_major, const Tensor& routed_M) const;
  // routed_MD (all M rows) = the first R rows of peer_major(), sent back to the ranks that routed them.
  void combine(const Tensor& routed_MD);

 private:
  Communicator& ep_;
  TensorPool host_pool_;  // the counts: host memory whatever the rows' device
  int64_t P_, El_, max_rows_;
  std::vector<int32_t> offsets_host_;                                   // the routing offsets, read back
  std::vector<int32_t> local_host_;                                     // local_offsets_ on the host
  std::vector<int32_t> expert_from_peer_host_, peer_from_expert_host_;  // the row maps on the host
  std::vector<int64_t> send_rows_, recv_rows_;                          // rows per peer
  std::vector<int64_t> el_per_peer_;                                    // El for every peer (the counts exchange)
  Tensor send_counts_, recv_counts_;                                    // i32 [P*El]: rows per (peer, expert)
  Tensor peer_major_;                                                   // [max_local_rows, D]
  Tensor local_offsets_;                                                // i32 [El+1], on the rows' device
  Tensor expert_from_peer_, peer_from_expert_;                          // i32 [max_local_rows], on the rows' device
  int64_t local_rows_ = 0;
};

}  // namespace moe
