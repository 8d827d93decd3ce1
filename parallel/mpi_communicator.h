// Communicator over an MPI communicator, for host tensors. Owns its MPI_Comm (freed on
// destruction). Only the thread that initialised MPI may use it (MPI_THREAD_FUNNELED).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "core/communicator.h"

namespace moetron {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (unless it is MPI_COMM_WORLD).
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  // The ranks with the same `color` form one new communicator, ordered by `key`.
  std::unique_ptr<MpiCommunicator> split(int color, int key, std::string name) const;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }

  void all_reduce(Tensor& x, ReduceOp op) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void all_to_all(const Tensor& send, Tensor& recv) override;
  void all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows, Tensor& recv,
                    std::span<const int64_t> recv_rows) override;
  void broadcast(Tensor& x, int root) override;
  void barrier() override;

  std::unique_ptr<CommRequest> all_reduce_async(Tensor& x) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& x,
                                                    std::span<const int64_t> counts) override;
  std::unique_ptr<CommRequest> all_gather_async(Tensor& x,
                                                std::span<const int64_t> counts) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace moetron
