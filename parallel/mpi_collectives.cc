#include "parallel/mpi_collectives.h"

#include "core/check.h"
#include "parallel/mpi_calls.h"

namespace moetron {

MpiCollectives::MpiCollectives(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

void MpiCollectives::all_reduce(void* x, int64_t n, CommType type, bool max) {
  check_mpi(
      MPI_Allreduce(MPI_IN_PLACE, x, as_count(n), mpi_type(type), max ? MPI_MAX : MPI_SUM, comm_),
      "MPI_Allreduce");
}

void MpiCollectives::all_gather(const void* in, void* out, int64_t n, CommType type) {
  check_mpi(MPI_Allgather(in, as_count(n), mpi_type(type), out, as_count(n), mpi_type(type), comm_),
            "MPI_Allgather");
}

// A reduce per part to its rank, as NCCL's uneven path does.
void MpiCollectives::reduce_scatter(float* x, const CommParts& parts) {
  check_part_count(parts, size_, "reduce_scatter");
  for (int j = 0; j < size_; ++j) {
    float* part = x + parts.offsets[static_cast<size_t>(j)];
    const int n = as_count(parts.counts[static_cast<size_t>(j)]);
    check_mpi(MPI_Reduce(j == rank_ ? MPI_IN_PLACE : part, part, n, MPI_FLOAT, MPI_SUM, j, comm_),
              "MPI_Reduce");
  }
}

void MpiCollectives::all_gather(float* x, const CommParts& parts) {
  check_part_count(parts, size_, "all_gather");
  const MpiParts m = mpi_parts(parts);
  check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, m.counts.data(), m.displs.data(),
                           MPI_FLOAT, comm_),
            "MPI_Allgatherv");
}

void MpiCollectives::all_to_all_v(const void* send, const CommParts& sent, void* recv,
                                  const CommParts& received, CommType type) {
  check_part_count(sent, size_, "all_to_all_v send");
  check_part_count(received, size_, "all_to_all_v receive");
  const MpiParts s = mpi_parts(sent), r = mpi_parts(received);
  // A buffer of no rows may have no storage: MPI is given a valid dummy address.
  char dummy = 0;
  check_mpi(MPI_Alltoallv(sent.total > 0 ? send : &dummy, s.counts.data(), s.displs.data(),
                          mpi_type(type), received.total > 0 ? recv : &dummy, r.counts.data(),
                          r.displs.data(), mpi_type(type), comm_),
            "MPI_Alltoallv");
}

void MpiCollectives::broadcast(void* x, int64_t n, CommType type, int root) {
  check_mpi(MPI_Bcast(x, as_count(n), mpi_type(type), root, comm_), "MPI_Bcast");
}

}  // namespace moetron
