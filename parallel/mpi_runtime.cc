#include "parallel/mpi_runtime.h"

#include <mpi.h>

#include <cstdlib>
#include <string>

#include "core/check.h"

namespace moetron {

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

MpiRuntime::MpiRuntime() {
  if (!launched_by_mpi()) {
    // srun without an MPI plugin starts independent copies that would all train alone.
    const char* tasks = std::getenv("SLURM_NTASKS");
    if (tasks != nullptr && std::atoi(tasks) > 1 && std::getenv("SLURM_STEP_ID") != nullptr)
      throw CollectiveError(detail::concat(
          "started by srun as one of ", tasks,
          " tasks without MPI wiring (no PMIx/PMI in the "
          "environment): launch with `srun --mpi=pmix ...` (launch/slurm.sbatch) or mpirun"));
    return;
  }
  int provided = 0;
  // Only the main thread calls MPI; compute threads (OpenMP) never do.
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  active_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
}

MpiRuntime::~MpiRuntime() {
  if (active_) MPI_Finalize();
}

void MpiRuntime::abort(int status) const {
  if (active_) MPI_Abort(MPI_COMM_WORLD, status);
  std::exit(status);
}

}  // namespace moetron
