#include "core/threads.h"

#include <omp.h>

namespace moetron {

void set_compute_threads(int threads) {
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
}

int compute_threads() {
  return omp_get_max_threads();
}

}  // namespace moetron
