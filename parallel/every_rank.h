// How a command ends when it runs on every rank of an MPI job: an error every rank raised
// alike (CollectiveError) is printed once, by rank 0, and every rank exits with status 1; any
// other error is printed by the rank that saw it, with its rank, and ends the whole job at once
// (MPI_Abort), because the other ranks may be waiting for it in a collective. Without MPI (or
// with one rank) errors propagate to the caller unchanged.
#pragma once

#include <functional>
#include <string>

#include "parallel/mpi_runtime.h"

namespace moetron {

int run_on_every_rank(const MpiRuntime& mpi, const std::string& command,
                      const std::function<int()>& body);

}  // namespace moetron
