#include "parallel/device_communicator.h"

#include <type_traits>

#include "core/check.h"

namespace moetron {
namespace {

CommType comm_type(DType dtype, const std::string& group) {
  switch (dtype) {
    case DType::f32:
      return CommType::f32;
    case DType::f64:
      return CommType::f64;
    case DType::i32:
      return CommType::i32;
    case DType::i64:
      return CommType::i64;
    case DType::bf16:
      return CommType::bf16;
    default:
      break;
  }
  throw Error(detail::concat("a collective over ", group, " of ", dtype_name(dtype),
                             " device tensors: f32, f64, i32, i64 or bf16 only"));
}

void* data_of(const Tensor& t) {
  return t.defined() ? t.raw_data() : nullptr;
}

// The collectives were enqueued in order with the device's work: nothing is left to wait for.
class Enqueued final : public CommRequest {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

DeviceCommunicator::DeviceCommunicator(Communicator& host, Device device,
                                       std::unique_ptr<DeviceCollectives> collectives)
    : Communicator(host.name()),
      host_(host),
      device_(device),
      collectives_(std::move(collectives)) {
  MOETRON_CHECK(
      collectives_ && collectives_->size() == host_.size() && collectives_->rank() == host_.rank(),
      "the device collectives of ", name(), " do not span its ranks in its order");
}

bool DeviceCommunicator::on_device(const char* what,
                                   std::initializer_list<const Tensor*> tensors) const {
  bool host = false, device = false;
  for (const Tensor* t : tensors) {
    if (!t->defined()) continue;
    if (t->device() == Device{})
      host = true;
    else if (t->device() == device_)
      device = true;
    else
      throw Error(detail::concat(what, " over ", name(), ": a tensor on ", device_name(t->device()),
                                 " in a run on ", device_name(device_)));
  }
  if (host && device)
    throw Error(detail::concat(what, " over ", name(), ": tensors on cpu and on ",
                               device_name(device_),
                               " in one call (a collective's tensors share "
                               "one device)"));
  return device;
}

template <typename Call>
auto DeviceCommunicator::on_host(Call&& call) {
  const CommStats before = host_.stats();
  const auto add = [&] {
    const CommStats& after = host_.stats();
    stats_.calls += after.calls - before.calls;
    stats_.bytes += after.bytes - before.bytes;
    stats_.seconds += after.seconds - before.seconds;
  };
  if constexpr (std::is_void_v<decltype(call())>) {
    call();
    add();
  } else {
    auto result = call();
    add();
    return result;
  }
}

void DeviceCommunicator::all_reduce(Tensor& x, ReduceOp op) {
  if (!on_device("all_reduce", {&x})) return on_host([&] { host_.all_reduce(x, op); });
  if (op == ReduceOp::bit_xor)
    throw Error(detail::concat("all_reduce over ", name(), ": a bitwise xor of ",
                               device_name(device_),
                               " tensors (NCCL has none; host tensors only)"));
  const Timed t(stats_, static_cast<int64_t>(x.bytes()));
  collectives_->all_reduce(data_of(x), x.numel(), comm_type(x.dtype(), name()),
                           op == ReduceOp::max);
}

void DeviceCommunicator::all_gather(const Tensor& in, Tensor& out) {
  if (!on_device("all_gather", {&in, &out})) return on_host([&] { host_.all_gather(in, out); });
  check_all_gather(in, out);
  const Timed t(stats_, static_cast<int64_t>(in.bytes()));
  collectives_->all_gather(data_of(in), data_of(out), in.numel(), comm_type(in.dtype(), name()));
}

void DeviceCommunicator::all_to_all(const Tensor& send, Tensor& recv) {
  if (!on_device("all_to_all", {&send, &recv}))
    return on_host([&] { host_.all_to_all(send, recv); });
  const int64_t block = all_to_all_block(send, recv);
  const std::vector<int64_t> blocks(static_cast<size_t>(size()), block);
  const CommParts parts = comm_parts(blocks);
  const Timed t(stats_, (size() - 1) * block * static_cast<int64_t>(dtype_size(send.dtype())));
  collectives_->all_to_all_v(data_of(send), parts, data_of(recv), parts,
                             comm_type(send.dtype(), name()));
}

void DeviceCommunicator::all_to_all_v(const Tensor& send, std::span<const int64_t> send_rows,
                                      Tensor& recv, std::span<const int64_t> recv_rows) {
  if (!on_device("all_to_all_v", {&send, &recv}))
    return on_host([&] { host_.all_to_all_v(send, send_rows, recv, recv_rows); });
  const auto [sent, received] = all_to_all_v_parts(send, send_rows, recv, recv_rows);
  const int64_t sent_elsewhere = sent.total - sent.counts[static_cast<size_t>(rank())];
  const Timed t(stats_, sent_elsewhere * static_cast<int64_t>(dtype_size(send.dtype())));
  collectives_->all_to_all_v(data_of(send), sent, data_of(recv), received,
                             comm_type(send.dtype(), name()));
}

void DeviceCommunicator::broadcast(Tensor& x, int root) {
  if (!on_device("broadcast", {&x})) return on_host([&] { host_.broadcast(x, root); });
  const Timed t(stats_, static_cast<int64_t>(x.bytes()));
  collectives_->broadcast(data_of(x), x.numel(), comm_type(x.dtype(), name()), root);
}

void DeviceCommunicator::barrier() {
  on_host([&] { host_.barrier(); });
}

std::unique_ptr<CommRequest> DeviceCommunicator::all_reduce_async(Tensor& x) {
  if (!on_device("all_reduce", {&x})) return on_host([&] { return host_.all_reduce_async(x); });
  all_reduce(x, ReduceOp::sum);
  return std::make_unique<Enqueued>();
}

std::unique_ptr<CommRequest> DeviceCommunicator::reduce_scatter_async(
    Tensor& x, std::span<const int64_t> counts) {
  if (!on_device("reduce_scatter", {&x}))
    return on_host([&] { return host_.reduce_scatter_async(x, counts); });
  const CommParts parts = flat_parts(x, counts, "reduce_scatter");
  const Timed t(stats_, counts[static_cast<size_t>(rank())] * 4);
  collectives_->reduce_scatter(x.data<float>(), parts);
  return std::make_unique<Enqueued>();
}

std::unique_ptr<CommRequest> DeviceCommunicator::all_gather_async(Tensor& x,
                                                                  std::span<const int64_t> counts) {
  if (!on_device("all_gather", {&x}))
    return on_host([&] { return host_.all_gather_async(x, counts); });
  const CommParts parts = flat_parts(x, counts, "all_gather");
  const Timed t(stats_, counts[static_cast<size_t>(rank())] * 4);
  collectives_->all_gather(x.data<float>(), parts);
  return std::make_unique<Enqueued>();
}

}  // namespace moetron
