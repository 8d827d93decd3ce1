// The device communicator (parallel/device_communicator.h) on cpu:1, under mpirun: the MPI
// collectives over raw memory stand where NCCL stands for CUDA, so everything of a device run's
// communication but NCCL's calls themselves is checked here. Every collective over cpu:1 tensors
// moves exactly what the MPI communicator moves over CPU tensors (values that are integers, so
// any summation order is exact), with the same call and byte counts; host tensors still go over
// MPI; tensors of two devices in one call, and a bitwise xor of device tensors, are refused. And
// the trainer on cpu:1 under mpirun trains as on the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/ops.h"
#include "data/prepare.h"
#include "parallel/layout.h"
#include "parallel/process_groups.h"
#include "tests/data/test_util.h"
#include "tests/host_kernels.h"
#include "tests/parallel/mpi_test.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using test::world;

Layout data_parallel(int ranks) {
  Layout layout;
  layout.world = ranks;
  layout.dp = ranks;
  return layout;
}

// Integer values that differ by rank and element, exact in any sum of a few ranks.
template <typename T>
std::vector<T> values(int64_t n, int salt) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = static_cast<T>((world().rank() + 1) * 3 + (i * 7 + salt) % 11);
  return v;
}

// One collective run twice: `op` on the CPU tensor over the MPI communicator and on its cpu:1
// copy over the device communicator; afterwards both hold the same values.
template <typename T, typename Op>
void expect_same(const char* what, Communicator& cpu, Communicator& dev, const std::vector<T>& init,
                 const Shape& shape, Op&& op) {
  SCOPED_TRACE(what);
  const Device d = test::host_kernels_device();
  Tensor a = Tensor::empty(shape, dtype_of<T>());
  std::copy(init.begin(), init.end(), a.data<T>());
  Tensor b = ops::to_device(a, d);
  op(cpu, a);
  op(dev, b);
  EXPECT_EQ(b.device(), d);
  const Tensor back = ops::to_device(b, Device{});
  const std::span<const T> got = back.span<T>(), want = a.span<T>();
  EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin(), want.end()));
}

void expect_device_collectives_match(int ranks) {
  const Layout layout = data_parallel(ranks);
  const Device d = test::host_kernels_device();
  const ProcessGroups on_cpu(layout), on_dev(layout, MPI_COMM_WORLD, d);
  ASSERT_EQ(on_dev.device(), d);
  Communicator& cpu = *on_cpu.world();
  Communicator& dev = *on_dev.world();
  ASSERT_EQ(dev.size(), ranks);
  ASSERT_EQ(dev.rank(), world().rank());
  const int rank = world().rank();

  expect_same<float>("all_reduce sum f32", cpu, dev, values<float>(1001, 1), {1001},
                     [](Communicator& c, Tensor& t) { c.all_reduce(t); });
  expect_same<float>("all_reduce max f32", cpu, dev, values<float>(77, 2), {7, 11},
                     [](Communicator& c, Tensor& t) { c.all_reduce(t, ReduceOp::max); });
  expect_same<int64_t>("all_reduce sum i64", cpu, dev, values<int64_t>(13, 3), {13},
                       [](Communicator& c, Tensor& t) { c.all_reduce(t); });
  expect_same<double>("all_reduce sum f64", cpu, dev, values<double>(5, 4), {5},
                      [](Communicator& c, Tensor& t) { c.all_reduce(t); });
  expect_same<float>("broadcast from the last rank", cpu, dev, values<float>(64, 5), {8, 8},
                     [&](Communicator& c, Tensor& t) { c.broadcast(t, ranks - 1); });
  // all_gather and all_to_all write a second tensor on the first's device.
  expect_same<int32_t>("all_gather i32", cpu, dev, values<int32_t>(6, 6), {2, 3},
                       [&](Communicator& c, Tensor& t) {
                         Tensor out = Tensor::empty({ranks * 2, 3}, DType::i32, t.device());
                         c.all_gather(t, out);
                         t = out;
                       });
  expect_same<float>("all_to_all", cpu, dev, values<float>(ranks * 5, 7), {ranks, 5},
                     [&](Communicator& c, Tensor& t) {
                       Tensor out = Tensor::empty({ranks, 5}, DType::f32, t.device());
                       c.all_to_all(t, out);
                       t = out;
                     });
  // Rank i sends (i + j) % 3 rows of 4 to rank j: some pairs none at all.
  std::vector<int64_t> send_rows, recv_rows;
  for (int j = 0; j < ranks; ++j) {
    send_rows.push_back((rank + j) % 3);
    recv_rows.push_back((j + rank) % 3);
  }
  int64_t sent = 0, received = 0;
  for (int j = 0; j < ranks; ++j) sent += send_rows[j], received += recv_rows[j];
  expect_same<float>("all_to_all_v", cpu, dev, values<float>(sent * 4, 8), {sent, 4},
                     [&](Communicator& c, Tensor& t) {
                       Tensor out = Tensor::empty({received, 4}, DType::f32, t.device());
                       c.all_to_all_v(t, send_rows, out, recv_rows);
                       t = out;
                     });
  // ZeRO-1's uneven parts and DP's even ones: this rank's part reduced, then every part
  // gathered back.
  for (const bool even : {false, true}) {
    std::vector<int64_t> counts;
    int64_t total = 0;
    for (int j = 0; j < ranks; ++j) {
      counts.push_back(even ? 6 : 5 + 3 * j);
      total += counts.back();
    }
    expect_same<float>(even ? "reduce_scatter, all_gather (even)" : "reduce_scatter, all_gather",
                       cpu, dev, values<float>(total, 9), {total}, [&](Communicator& c, Tensor& t) {
                         c.reduce_scatter_async(t, counts)->wait();
                         c.all_gather_async(t, counts)->wait();
                       });
    expect_same<float>("all_reduce_async", cpu, dev, values<float>(total, 10), {total},
                       [&](Communicator& c, Tensor& t) { c.all_reduce_async(t)->wait(); });
  }
  EXPECT_EQ(dev.stats().calls, cpu.stats().calls);
  EXPECT_EQ(dev.stats().bytes, cpu.stats().bytes);

  // Host tensors through the device communicator go over MPI, and are counted.
  const int64_t calls = dev.stats().calls;
  Tensor flag = Tensor::empty({1}, DType::i32);
  flag.data<int32_t>()[0] = rank;
  dev.all_reduce(flag, ReduceOp::max);
  EXPECT_EQ(flag.data<int32_t>()[0], ranks - 1);
  EXPECT_EQ(dev.stats().calls, calls + 1);

  // Refused, on every rank alike (nothing is sent, so no rank waits).
  Tensor on_host = Tensor::zeros({2});
  Tensor on_device = Tensor::zeros({2 * ranks}, DType::f32, d);
  try {
    dev.all_gather(on_host, on_device);
    ADD_FAILURE() << "an all_gather from cpu into cpu:1 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_gather over world: tensors on cpu and on cpu:1"),
              std::string::npos)
        << e.what();
  }
  Tensor bits = Tensor::zeros({4}, DType::i32, d);
  try {
    dev.all_reduce(bits, ReduceOp::bit_xor);
    ADD_FAILURE() << "a bitwise xor of device tensors was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bitwise xor of cpu:1 tensors"), std::string::npos)
        << e.what();
  }
}

class World2DeviceComm : public test::MpiTest {};

// `train` on cpu:1 under mpirun (dp 2 with ZeRO-1 and ep 2: the gradient sync's reduce-scatter
// and all-gather, the dispatcher's all-to-alls and its counts over MPI, the step's scalars; then
// tp 2: the tensor-parallel all-reduces and gathers), against the same layout on the CPU; then
// the CPU run's step-2 checkpoint resumed on cpu:1 continues as the CPU's run did. The losses
// within 1e-6 relative and the norms within 1e-5, the bounds of the one-process device run
// (tests/trainer/test_device_run.cc).
void expect_device_run_matches_cpu(int dp, int tp, int ep, bool zero1) {
  SCOPED_TRACE(::testing::Message()
               << "dp " << dp << ", tp " << tp << ", ep " << ep << (zero1 ? ", ZeRO-1" : ""));
  data::testing::TempDir mine;
  const fs::path root = test::shared_path(mine.path().string());
  if (world().rank() == 0) {
    data::PrepareOptions o;
    o.inputs = {data::testing::write_generated_corpus(root / "corpus", 16, 300, 1)};
    o.output = root / "prepared";
    data::prepare_dataset(o);
  }
  world().barrier();
  const std::string dev = device_name(test::host_kernels_device());
  const auto run = [&](const std::string& device, const std::string& dir, bool resume) {
    config::RunConfig cfg = parse_config_text(R"(
      model { vocab_size: 256 hidden_size: 32 num_hidden_layers: 2 num_attention_heads: 4
              num_key_value_heads: 2 intermediate_size: 64 num_nextn_predict_layers: 1
              moe { n_routed_experts: 4 num_experts_per_tok: 2 moe_intermediate_size: 16
                    n_shared_experts: 1 } }
      data { seq_len: 16 micro_batch_size: 2 }
      schedule { total_steps: 4 warmup_steps: 2 }
      checkpoint { interval: 2 }
      logging { val_interval: 0 }
      threads: 1
    )",
                                              "device run");
    cfg.mutable_data()->set_dataset_dir((root / "prepared").string());
    cfg.mutable_logging()->set_run_dir((root / dir).string());
    cfg.mutable_parallel()->set_dp(dp);
    cfg.mutable_parallel()->set_tp(tp);
    cfg.mutable_parallel()->set_ep(ep);
    cfg.mutable_parallel()->set_zero1(zero1);
    cfg.set_device(device);
    validate_config(cfg);
    const ProcessGroups groups(resolve_layout(cfg, world().size()), MPI_COMM_WORLD,
                               parse_device(device));
    TrainOptions options;
    options.groups = &groups;
    options.resume = resume;
    if (resume) options.resume_from = "2";
    std::ostringstream log;
    return train(cfg, log, options);
  };
  const TrainResult cpu = run("cpu", "cpu", false);
  const TrainResult on_dev = run(dev, "dev", false);
  ASSERT_EQ(on_dev.losses.size(), 4u);
  double worst_loss = 0, worst_norm = 0;
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_NEAR(on_dev.losses[s], cpu.losses[s], 1e-6 * cpu.losses[s]) << "step " << s + 1;
    EXPECT_NEAR(on_dev.grad_norms[s], cpu.grad_norms[s], 1e-5 * cpu.grad_norms[s])
        << "step " << s + 1;
    worst_loss = std::max(worst_loss, std::abs(on_dev.losses[s] / cpu.losses[s] - 1));
    worst_norm = std::max(worst_norm, std::abs(on_dev.grad_norms[s] / cpu.grad_norms[s] - 1));
  }
  if (world().rank() == 0)
    std::cout << "cpu:1 against the CPU: losses within " << worst_loss << ", norms within "
              << worst_norm << " relative" << std::endl;
  const TrainResult resumed = run(dev, "cpu", true);
  ASSERT_EQ(resumed.losses.size(), 2u);
  for (size_t s = 0; s < 2; ++s)
    EXPECT_NEAR(resumed.losses[s], cpu.losses[s + 2], 1e-6 * cpu.losses[s + 2])
        << "resumed step " << s + 3;
}

TEST_F(World2DeviceComm, TrainOnTheDeviceMatchesTheCpuAndResumesItsCheckpoint) {
  MOETRON_REQUIRE_WORLD(2);
  expect_device_run_matches_cpu(2, 1, 2, true);
  expect_device_run_matches_cpu(1, 2, 1, false);
}
class World4DeviceComm : public test::MpiTest {};

TEST_F(World2DeviceComm, MovesWhatMpiMoves) {
  MOETRON_REQUIRE_WORLD(2);
  expect_device_collectives_match(2);
}

TEST_F(World4DeviceComm, MovesWhatMpiMoves) {
  MOETRON_REQUIRE_WORLD(4);
  expect_device_collectives_match(4);
}

}  // namespace
}  // namespace moetron
