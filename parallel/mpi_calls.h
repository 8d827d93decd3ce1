// What the MPI communicator (parallel/mpi_communicator.h) and MPI's collectives over raw memory
// (parallel/mpi_collectives.h) share: MPI's types, errors and int counts.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "core/comm_parts.h"
#include "core/device_collectives.h"
#include "core/tensor.h"

namespace moetron {

MPI_Datatype mpi_type(DType dtype);
MPI_Datatype mpi_type(CommType type);  // bf16 has none: an MPI path never moves bf16
// Throws Error naming `call` and MPI's reason unless `code` is MPI_SUCCESS.
void check_mpi(int code, const char* call);
// MPI counts are int: every message must fit.
int as_count(int64_t n);

// MPI's int counts and displacements of `parts`; the last displacement plus its count must fit.
struct MpiParts {
  std::vector<int> counts, displs;
};
MpiParts mpi_parts(const CommParts& parts);

}  // namespace moetron
