// `moetron train CONFIG [--set a.b=value ...]`
#include <atomic>
#include <csignal>
#include <iostream>

#include "core/check.h"
#include "trainer/commands.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

std::atomic<bool> g_stop{false};  // the only state a signal handler may touch
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}

}  // namespace

int run_train(std::span<const std::string> args) {
  const ConfigArgs parsed = parse_config_args(args);
  if (!parsed.rest.empty())
    throw Error("train: unexpected argument '" + parsed.rest.front() +
                "'\nusage: moetron train CONFIG [--set a.b=value ...]");
  const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  const TrainResult result = train(cfg, std::cout, &g_stop);
  return result.interrupted ? 128 + SIGTERM : 0;
}

}  // namespace moetron
