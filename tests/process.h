// Starting the real programs from tests: a child process in its own process group (so a test can
// signal or clean up everything it started), its stdout and stderr going to one file (or two).
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace moetron::test {

// Runs argv[0] (looked up on PATH) with `argv`; returns the child's pid (also its group id).
// `in_child` runs in the child before the program starts (to set resource limits, say).
// `errors`, when given, receives stderr apart from stdout.
inline pid_t spawn(std::vector<std::string> argv, const std::filesystem::path& output,
                   const std::function<void()>& in_child = {},
                   const std::filesystem::path& errors = {}) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    std::freopen(output.c_str(), "w", stdout);
    std::freopen(errors.empty() ? output.c_str() : errors.c_str(), errors.empty() ? "a" : "w",
                 stderr);
    if (in_child) in_child();
    std::vector<char*> raw;
    raw.reserve(argv.size() + 1);
    for (std::string& a : argv) raw.push_back(a.data());
    raw.push_back(nullptr);
    execvp(raw[0], raw.data());
    _exit(127);
  }
  return pid;
}

// The moetron program of this build.
inline std::string moetron_binary() {
  return std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";
}

// How a child ended.
struct Exit {
  bool exited = false;  // normally, with `status`; else killed by `signal`
  int status = 0, signal = 0;
  bool timed_out = false;  // still running after the wait; it was killed
};

// Waits up to `limit` for `pid`; kills its group with SIGKILL when it is still running then.
inline Exit wait_for(pid_t pid, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  Exit e;
  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (std::chrono::steady_clock::now() > deadline) {
      e.timed_out = true;
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  e.exited = WIFEXITED(status);
  e.status = e.exited ? WEXITSTATUS(status) : -1;
  e.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return e;
}

// Runs moetron with `args` to its end (at most `limit`), stdout and stderr into `output`.
inline Exit run_moetron(const std::vector<std::string>& args, const std::filesystem::path& output,
                        const std::function<void()>& in_child = {},
                        std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  std::vector<std::string> argv{moetron_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return wait_for(spawn(argv, output, in_child), limit);
}

// For `in_child`: a resource limit (RLIMIT_AS, RLIMIT_FSIZE, ...).
inline std::function<void()> limit(int resource, rlim_t value) {
  return [resource, value] {
    const rlimit r{value, value};
    setrlimit(resource, &r);
  };
}

}  // namespace moetron::test
