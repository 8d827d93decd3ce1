// Errors during a parallel job's set-up, agreed on by every rank: each rank runs the same
// set-up step; if it fails anywhere, every rank throws the same CollectiveError (the message of
// the lowest failing rank, named when it is not rank 0), so the job stops cleanly with the
// error printed once instead of some ranks waiting forever in the next collective.
#pragma once

#include <functional>

#include "core/communicator.h"

namespace moetron {

// world: null for a single process (then `step` just runs).
void run_collectively(Communicator* world, const std::function<void()>& step);

// The largest `value` of any rank of `world`: every rank gets the same answer (a stop signal
// seen by one rank stops them all, and all of them name it).
int max_over_ranks(Communicator* world, int value);

// Whether any rank of `world` has `flag` set.
bool any_rank(Communicator* world, bool flag);

}  // namespace moetron
