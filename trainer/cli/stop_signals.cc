#include "trainer/cli/stop_signals.h"

#include <signal.h>
#include <unistd.h>

#include <ctime>

namespace moetron {
namespace {

// The process-wide state a signal handler can reach, and nothing else.
std::atomic<int> g_stop_signal{0};
std::atomic<int> g_save_request{0};
std::atomic<bool> g_prompt{false};  // StopSignals::Mode::prompt
static_assert(std::atomic<int>::is_always_lock_free);

void say(const char* text) {
  size_t n = 0;
  while (text[n] != '\0') ++n;
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, text, n);
}

// Async-signal-safe: called from the receiving thread and from the handler alike.
void record(int sig) {
  if (sig == SIGUSR1) {
    g_save_request.store(1);
    return;
  }
  int expected = 0;
  if (g_stop_signal.compare_exchange_strong(expected, sig)) {
    say(g_prompt ? "\nmoetron: stop signal received: stopping (send it again to stop at once)\n"
                 : "\nmoetron: stop signal received: stopping after the current step "
                   "(send it again to stop at once)\n");
    return;
  }
  say("\nmoetron: second stop signal: exiting now\n");
  _exit(128 + sig);
}

extern "C" void on_stop_signal(int sig) {
  record(sig);
}

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

}  // namespace

void block_stop_signals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Also replaces SIG_IGN, which a shell sets for SIGINT in background jobs: an ignored signal
  // is discarded before anyone can receive it.
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  action.sa_mask = set;
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

StopSignals::StopSignals(Mode mode) {
  g_prompt = mode == Mode::prompt;
  thread_ = std::thread([this] {
    const sigset_t set = stop_set();
    const timespec poll{0, 100'000'000};  // how soon the destructor's request is seen
    int waited = 0;                       // polls since the stop request (prompt mode)
    while (!quit_) {
      const int sig = sigtimedwait(&set, nullptr, &poll);
      if (sig > 0) record(sig);  // otherwise a timeout or EINTR
      if (!g_prompt || g_stop_signal == 0) continue;
      if (++waited > 10 * kGraceSeconds) {
        say("\nmoetron: still running 3 s after the stop signal (inside a call that cannot be "
            "interrupted): exiting now\n");
        _exit(128 + g_stop_signal.load());
      }
    }
  });
}

StopSignals::~StopSignals() {
  quit_ = true;
  thread_.join();
}

const std::atomic<int>& StopSignals::requested() const {
  return g_stop_signal;
}

std::atomic<int>& StopSignals::save_requested() const {
  return g_save_request;
}

}  // namespace moetron
