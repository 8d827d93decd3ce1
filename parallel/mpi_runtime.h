// MPI's lifetime in the process (RAII): initialised when an MPI launcher started the process,
// finalised on destruction. A process started without one (no mpirun/srun) runs alone and never
// touches MPI, so single-process runs pay nothing for it.
#pragma once

namespace moetron {

class MpiRuntime {
 public:
  MpiRuntime();   // throws Error for a launcher that started several tasks without MPI wiring
  ~MpiRuntime();  // MPI_Finalize, unless abort() ran
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  bool active() const { return active_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // Ends every rank of the job now (MPI_Abort) with `status`: the way out of an error that
  // only this rank saw, while the others may wait in a collective.
  [[noreturn]] void abort(int status) const;

 private:
  bool active_ = false;
  int rank_ = 0, world_size_ = 1;
};

// Whether the environment shows an MPI launcher (mpirun/mpiexec, srun --mpi=pmix|pmi2).
bool launched_by_mpi();

}  // namespace moetron
