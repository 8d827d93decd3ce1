#include "parallel/every_rank.h"

#include <cstdio>
#include <exception>

#include "core/check.h"

namespace moetron {

int run_on_every_rank(const MpiRuntime& mpi, const std::string& command,
                      const std::function<int()>& body) {
  if (mpi.world_size() == 1) return body();
  try {
    return body();
  } catch (const CollectiveError& e) {
    if (mpi.rank() == 0)
      std::fprintf(stderr, "moetron %s: error: %s\n", command.c_str(), error_text(e).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moetron %s: rank %d: error: %s\n", command.c_str(), mpi.rank(),
                 error_text(e).c_str());
    std::fflush(stderr);
    mpi.abort(1);
  }
}

}  // namespace moetron
