// `moetron generate` end to end on the checkpoint of a short MoE + MTP training run: greedy
// text is the same with and without speculation, a seed repeats a sample, and every problem
// with the arguments, the checkpoint or the tokenizer is named.
#include <gtest/gtest.h>

#include <sstream>

#include "core/check.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/cli/commands.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

namespace fs = std::filesystem;
using data::testing::TempDir;

// A run directory holding one checkpoint of the fixture's small model with MoE layers.
const fs::path& trained_run() {
  static TempDir dir;
  static const bool trained = [] {
    config::RunConfig cfg = testing::small_moe_run(dir.path(), 12);
    std::ostringstream log;
    train(cfg, log);
    return true;
  }();
  (void)trained;
  return dir.path();
}

std::string generate_text(std::vector<std::string> args) {
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  try {
    EXPECT_EQ(run_generate(args), 0);
  } catch (...) {
    ::testing::internal::GetCapturedStderr();
    ::testing::internal::GetCapturedStdout();
    throw;
  }
  ::testing::internal::GetCapturedStderr();
  return ::testing::internal::GetCapturedStdout();
}

std::string error_of(std::vector<std::string> args) {
  try {
    generate_text(std::move(args));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(GenerateCommand, GreedyTextIsTheSameWithSpeculation) {
  const std::string run = trained_run().string();
  const std::string plain = generate_text({run, "--prompt", "The ", "--max-tokens", "40"});
  const std::string spec = generate_text(
      {run, "--prompt", "The ", "--max-tokens", "40", "--speculative", "mtp", "--echo"});
  EXPECT_GE(plain.size(), 40u);  // byte tokens, and a final newline when missing
  EXPECT_EQ("The " + plain, spec);
  // The checkpoint file itself, and its directory, name the same model.
  EXPECT_EQ(generate_text({(trained_run() / "checkpoints").string(), "--prompt", "The ",
                           "--max-tokens", "40"}),
            plain);
}

TEST(GenerateCommand, ASeedRepeatsItsSample) {
  const std::string run = trained_run().string();
  auto sample = [&](const char* seed) {
    return generate_text({run, "--prompt", "A", "--max-tokens", "30", "--temperature", "1.0",
                          "--top-p", "0.9", "--seed", seed, "--speculative", "mtp"});
  };
  EXPECT_EQ(sample("4"), sample("4"));
  EXPECT_NE(sample("4"), sample("5"));
}

TEST(GenerateCommand, ProblemsAreNamed) {
  const std::string run = trained_run().string();
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  EXPECT_PRED2(has, error_of({run}), "no --prompt");
  EXPECT_PRED2(has, error_of({"--prompt", "x"}), "no checkpoint given");
  EXPECT_PRED2(has, error_of({run, "--prompt", "x", "--speculative", "ngram"}), "\"mtp\"");
  EXPECT_PRED2(has, error_of({run, "--prompt", "x", "--top-p", "0"}), "top-p");
  EXPECT_PRED2(has, error_of({run, "--prompt", "x", "--temperature", "-1"}), "temperature");
  EXPECT_PRED2(has, error_of({run, "--prompt", "x", "--max-tokens", "0"}), "--max-tokens");
  EXPECT_PRED2(has, error_of({run, "--prompt", "x", "--max-tokens", "ten"}),
               "expects a whole number");
  EXPECT_PRED2(has, error_of({run, "--prompt", ""}), "no tokens");
  EXPECT_PRED2(has, error_of({run, "--prompt", "x", "--tokenizer", "/nonexistent"}),
               "not a prepared dataset directory");
  const TempDir empty;
  EXPECT_PRED2(has, error_of({empty.path().string(), "--prompt", "x"}), "without a checkpoint");
}

}  // namespace
}  // namespace moetron
