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

// The only state a signal handler touches: the number of the signal that asked to stop.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
}

// The first SIGINT/SIGTERM asks the run to stop after its current step; SA_RESETHAND restores
// the default action, so a second one ends the process at once.
void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

}  // namespace

int run_train(std::span<const std::string> args) {
  const ConfigArgs parsed = parse_config_args(args);
  if (!parsed.rest.empty())
    throw Error("train: unexpected argument '" + parsed.rest.front() +
                "'\nusage: moetron train CONFIG [--set a.b=value ...]");
  const config::RunConfig cfg = load_config(parsed.path, parsed.overrides);
  install_stop_handlers();
  const TrainResult result = train(cfg, std::cout, &g_stop_signal);
  return result.stop_signal != 0 ? 128 + result.stop_signal : 0;
}

}  // namespace moetron
