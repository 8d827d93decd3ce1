// Where this rank sits in a parallel job, as the model's layers need it: the tensor-parallel
// group (attention heads, FFN columns, vocabulary) and the expert-parallel group (routed
// experts). The default is one rank alone: every size 1, no communicator, and every layer takes
// its single-process path. parallel/process_groups.h builds the real one; models/ never sees
// MPI or NCCL, only core/communicator.h.
#pragma once

#include "core/communicator.h"

namespace moetron {

struct ParallelContext {
  int tp = 1, tp_rank = 0;
  int ep = 1, ep_rank = 0;
  Communicator* tp_comm = nullptr;
  Communicator* ep_comm = nullptr;
};

}  // namespace moetron
