#include "parallel/collective.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/check.h"

namespace moetron {

void run_collectively(Communicator* world, const std::function<void()>& step) {
  if (world == nullptr || world->size() == 1) {
    step();
    return;
  }
  std::string message;
  bool failed = false;
  try {
    step();
  } catch (const std::exception& e) {
    failed = true;
    message = error_text(e);
  }
  // The lowest failing rank has the largest size - rank.
  Tensor flag = Tensor::empty({1}, DType::i32);
  flag.data<int32_t>()[0] = failed ? world->size() - world->rank() : 0;
  world->all_reduce(flag, ReduceOp::max);
  if (flag.data<int32_t>()[0] == 0) return;
  const int source = world->size() - flag.data<int32_t>()[0];
  Tensor length = Tensor::empty({1}, DType::i64);
  length.data<int64_t>()[0] = static_cast<int64_t>(message.size());
  world->broadcast(length, source);
  Tensor text = Tensor::zeros({std::max<int64_t>(length.data<int64_t>()[0], 1)}, DType::u8);
  if (world->rank() == source) std::memcpy(text.raw_data(), message.data(), message.size());
  world->broadcast(text, source);
  message.assign(static_cast<const char*>(text.raw_data()),
                 static_cast<size_t>(length.data<int64_t>()[0]));
  throw CollectiveError(source == 0 ? message : detail::concat("rank ", source, ": ", message));
}

int max_over_ranks(Communicator* world, int value) {
  if (world == nullptr || world->size() == 1) return value;
  Tensor t = Tensor::empty({1}, DType::i32);
  t.data<int32_t>()[0] = value;
  world->all_reduce(t, ReduceOp::max);
  return t.data<int32_t>()[0];
}

bool any_rank(Communicator* world, bool flag) {
  return max_over_ranks(world, flag ? 1 : 0) != 0;
}

}  // namespace moetron
