#include "core/cuda/nccl.h"

#include <nccl.h>

#include <cstring>
#include <string>

#include "core/check.h"

namespace moetron::cuda {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclId::bytes));

void ok(ncclResult_t r, const char* what, int rank) {
  if (r != ncclSuccess)
    throw Error(detail::concat("NCCL ", what, " (rank ", rank, "): ", ncclGetErrorString(r)));
}

ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::f32:
      return ncclFloat32;
    case CommType::f64:
      return ncclFloat64;
    case CommType::i32:
      return ncclInt32;
    case CommType::i64:
      return ncclInt64;
    case CommType::bf16:
      return ncclBfloat16;
  }
  MOETRON_CHECK(false, "NCCL type ", static_cast<int>(t));
  return ncclFloat32;
}

ncclComm_t raw(void* comm) {
  return static_cast<ncclComm_t>(comm);
}

// The calls of one collective as one NCCL group, so NCCL runs them together (and never
// deadlocks on their order); a failed call still closes the group.
template <typename Calls>
void grouped(int rank, Calls&& calls) {
  ok(ncclGroupStart(), "ncclGroupStart", rank);
  try {
    calls();
  } catch (...) {
    ncclGroupEnd();
    throw;
  }
  ok(ncclGroupEnd(), "ncclGroupEnd", rank);
}

}  // namespace

NcclId nccl_unique_id() {
  ncclUniqueId id;
  ok(ncclGetUniqueId(&id), "ncclGetUniqueId", 0);
  NcclId out;
  std::memcpy(out.bytes.data(), &id, sizeof(id));
  return out;
}

int nccl_version() {
  int v = 0;
  ok(ncclGetVersion(&v), "ncclGetVersion", 0);
  return v;
}

NcclComm::NcclComm(const NcclId& id, int ranks, int rank) : rank_(rank), size_(ranks) {
  ncclUniqueId uid;
  std::memcpy(&uid, id.bytes.data(), sizeof(uid));
  ncclComm_t c = nullptr;
  ok(ncclCommInitRank(&c, ranks, uid, rank), "ncclCommInitRank", rank);
  comm_ = c;
}

NcclComm::~NcclComm() {
  ncclCommDestroy(raw(comm_));
}

void NcclComm::all_reduce(void* x, int64_t n, CommType type, bool max) {
  ok(ncclAllReduce(x, x, static_cast<size_t>(n), nccl_type(type), max ? ncclMax : ncclSum,
                   raw(comm_), nullptr),
     "ncclAllReduce", rank_);
}

void NcclComm::reduce_scatter(float* x, const CommParts& parts) {
  check_part_count(parts, size_, "reduce_scatter");
  if (parts.equal()) {  // in place: this rank's part is where NCCL's receive buffer must be
    const auto n = static_cast<size_t>(parts.counts.front());
    ok(ncclReduceScatter(x, x + parts.offsets[rank_], n, ncclFloat32, ncclSum, raw(comm_), nullptr),
       "ncclReduceScatter", rank_);
    return;
  }
  grouped(rank_, [&] {
    for (int j = 0; j < size_; ++j) {
      float* part = x + parts.offsets[j];
      ok(ncclReduce(part, part, static_cast<size_t>(parts.counts[j]), ncclFloat32, ncclSum, j,
                    raw(comm_), nullptr),
         "ncclReduce", rank_);
    }
  });
}

void NcclComm::all_gather(float* x, const CommParts& parts) {
  check_part_count(parts, size_, "all_gather");
  if (parts.equal()) {
    const auto n = static_cast<size_t>(parts.counts.front());
    ok(ncclAllGather(x + parts.offsets[rank_], x, n, ncclFloat32, raw(comm_), nullptr),
       "ncclAllGather", rank_);
    return;
  }
  grouped(rank_, [&] {
    for (int j = 0; j < size_; ++j) {
      float* part = x + parts.offsets[j];
      ok(ncclBroadcast(part, part, static_cast<size_t>(parts.counts[j]), ncclFloat32, j, raw(comm_),
                       nullptr),
         "ncclBroadcast", rank_);
    }
  });
}

void NcclComm::all_to_all_v(const void* send, const CommParts& sent, void* recv,
                            const CommParts& received, CommType type) {
  check_part_count(sent, size_, "all_to_all_v send");
  check_part_count(received, size_, "all_to_all_v receive");
  const size_t bytes = comm_type_bytes(type);
  grouped(rank_, [&] {
    for (int j = 0; j < size_; ++j) {
      if (sent.counts[j] > 0)
        ok(ncclSend(static_cast<const char*>(send) + sent.offsets[j] * bytes,
                    static_cast<size_t>(sent.counts[j]), nccl_type(type), j, raw(comm_), nullptr),
           "ncclSend", rank_);
      if (received.counts[j] > 0)
        ok(ncclRecv(static_cast<char*>(recv) + received.offsets[j] * bytes,
                    static_cast<size_t>(received.counts[j]), nccl_type(type), j, raw(comm_),
                    nullptr),
           "ncclRecv", rank_);
    }
  });
}

void NcclComm::all_gather(const void* in, void* out, int64_t n, CommType type) {
  ok(ncclAllGather(in, out, static_cast<size_t>(n), nccl_type(type), raw(comm_), nullptr),
     "ncclAllGather", rank_);
}

void NcclComm::broadcast(void* x, int64_t n, CommType type, int root) {
  ok(ncclBroadcast(x, x, static_cast<size_t>(n), nccl_type(type), root, raw(comm_), nullptr),
     "ncclBroadcast", rank_);
}

}  // namespace moetron::cuda
