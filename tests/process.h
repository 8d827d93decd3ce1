// Starting the real programs from tests: a child process in its own process group (so a test can
// signal or clean up everything it started), its stdout and stderr going to one file.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace moetron::test {

// Runs argv[0] (looked up on PATH) with `argv`; returns the child's pid (also its group id).
inline pid_t spawn(std::vector<std::string> argv, const std::filesystem::path& output) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    std::freopen(output.c_str(), "w", stdout);
    std::freopen(output.c_str(), "a", stderr);
    std::vector<char*> raw;
    raw.reserve(argv.size() + 1);
    for (std::string& a : argv) raw.push_back(a.data());
    raw.push_back(nullptr);
    execvp(raw[0], raw.data());
    _exit(127);
  }
  return pid;
}

}  // namespace moetron::test
