#include "core/threads.h"

#include <omp.h>

#include "core/check.h"

namespace moetron {

void set_compute_threads(int threads) {
  MOETRON_CHECK(threads >= 0 && threads <= kMaxThreads, "compute threads ", threads,
                " outside [0, ", kMaxThreads, "]");
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
}

int compute_threads() {
  return omp_get_max_threads();
}

}  // namespace moetron
