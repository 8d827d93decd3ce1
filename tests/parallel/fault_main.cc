// A real fault for tests/parallel/test_failures.cc: rank 1 throws while rank 0 waits for it in
// a collective, through the same error path `moetron train` uses (parallel/every_rank.h).
#include <thread>

#include "core/check.h"
#include "parallel/every_rank.h"
#include "parallel/mpi_communicator.h"

int main() {
  const moetron::MpiRuntime mpi;
  return moetron::run_on_every_rank(mpi, "fault", [&]() -> int {
    moetron::MpiCommunicator world(MPI_COMM_WORLD, "world");
    world.barrier();
    if (world.rank() == 1) throw moetron::Error("injected fault on rank 1");
    world.barrier();  // rank 0 waits here for a rank that will never come
    return 0;
  });
}
