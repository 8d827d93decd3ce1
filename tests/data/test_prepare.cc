#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "core/check.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "tests/data/test_util.h"
#include "trainer/cli/commands.h"

namespace moetron::data {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

int prepare(std::vector<std::string> args) {
  return run_prepare(args);
}

void expect_prepare_error(std::vector<std::string> args, std::initializer_list<std::string> parts) {
  try {
    prepare(std::move(args));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "missing \"" << p << "\" in: " << e.what();
  }
}

// A fortune-style corpus: numbered entries, a .dat index, a symlink and a subdirectory.
std::vector<std::string> write_fortunes(const fs::path& dir, int entries) {
  std::vector<std::string> docs;
  std::string a, b;
  for (int i = 0; i < entries; ++i) {
    std::string doc = "Fortune number " + std::to_string(i) + ":\n\tsays " +
                      testing::generated_corpus(1 + i % 3, i);
    doc.pop_back();  // documents are stored without their trailing newline
    docs.push_back(doc);
    (i % 2 ? a : b) += doc + "\n%\n";
  }
  testing::write_text(dir / "alpha", a);
  testing::write_text(dir / "beta", b);
  testing::write_text(dir / "alpha.dat", std::string("\0\0\0\x02"
                                                     "binary",
                                                     10));
  fs::create_symlink(dir / "alpha", dir / "alpha.u8");
  testing::write_text(dir / "off" / "rot13", "Gur dhvpx oebja sbk\n%\nshould not be read\n%\n");
  return docs;
}

// All documents of a split, recovered by decoding its token stream.
std::vector<std::string> documents_of(const fs::path& dir, Split split) {
  Dataset ds(dir, split);
  std::vector<int32_t> tokens(ds.num_tokens());
  ds.copy(0, tokens);
  const auto tok = load_tokenizer(dir, ds.manifest());
  const std::string text = tok->decode(tokens);
  std::vector<std::string> docs;
  // Fortune documents here are at most a few lines and never hold an empty line, so "\n" + a
  // "Fortune number" start marks document boundaries.
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = text.find("\nFortune number ", pos);
    next = next == std::string::npos ? text.size() : next + 1;
    docs.push_back(text.substr(pos, next - pos - 1));
    pos = next;
  }
  return docs;
}

TEST(Prepare, ByteEndToEndSplitsByDocument) {
  TempDir dir;
  const auto docs = write_fortunes(dir / "in", 300);
  ASSERT_EQ(prepare({"--input", (dir / "in").string(), "--output", (dir / "out").string(),
                     "--fortunes", "--val-fraction", "0.2", "--shard-tokens", "5000"}),
            0);
  const Manifest m = read_manifest(dir / "out");
  EXPECT_EQ(m.tokenizer_kind, "byte");
  EXPECT_EQ(m.vocab_size, 256);
  EXPECT_EQ(m.tokenizer_identity, "byte");
  EXPECT_EQ(m.train.documents + m.val.documents, 300u);
  EXPECT_GT(m.val.documents, 30u);
  EXPECT_LT(m.val.documents, 90u);
  EXPECT_GT(m.train.shards.size(), 2u);  // --shard-tokens cut the train split
  for (const auto& s : m.train.shards) EXPECT_LE(s.tokens, 5000u);

  // Every document lands in exactly one split, whole; the subdirectory and index files are out.
  const auto train = documents_of(dir / "out", Split::train);
  const auto val = documents_of(dir / "out", Split::val);
  EXPECT_EQ(train.size(), m.train.documents);
  EXPECT_EQ(val.size(), m.val.documents);
  std::multiset<std::string> got(train.begin(), train.end());
  got.insert(val.begin(), val.end());
  EXPECT_EQ(got, std::multiset<std::string>(docs.begin(), docs.end()));
  for (const auto& d : val) EXPECT_TRUE(is_val_document(d, 0.2));
  for (const auto& d : train) EXPECT_FALSE(is_val_document(d, 0.2));

  // Files alpha then beta (sorted), each in file order.
  EXPECT_EQ(train.front(), is_val_document(docs[1], 0.2) ? docs[3] : docs[1]);
}

TEST(Prepare, IsDeterministicAndLeavesNoTempFiles) {
  TempDir dir;
  write_fortunes(dir / "in", 50);
  for (const char* out : {"o1", "o2"})
    ASSERT_EQ(
        prepare({"--input", (dir / "in").string(), "--output", (dir / out).string(), "--fortunes"}),
        0);
  auto m1 = read_manifest(dir / "o1"), m2 = read_manifest(dir / "o2");
  m1.inputs.clear(), m2.inputs.clear();
  EXPECT_EQ(manifest_to_json(m1), manifest_to_json(m2));
  for (const auto& e : fs::directory_iterator(dir / "o1"))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(Prepare, WithoutFortunesFilesAreDocumentsAndDirectoriesRecurse) {
  TempDir dir;
  testing::write_text(dir / "in" / "a.txt", "first file\n\n");
  testing::write_text(dir / "in" / "sub" / "b.txt", "second file");
  testing::write_text(dir / "in" / ".hidden", "hidden");
  testing::write_text(dir / "in" / "blob.bin", std::string("x\0y", 3));
  ASSERT_EQ(prepare({"--input", (dir / "in").string(), "--output", (dir / "out").string(),
                     "--val-fraction", "0"}),
            0);
  Dataset ds(dir / "out", Split::train);
  std::vector<int32_t> tokens(ds.num_tokens());
  ds.copy(0, tokens);
  EXPECT_EQ(ByteTokenizer().decode(tokens), "first file\nsecond file\n");
  EXPECT_EQ(Dataset(dir / "out", Split::val).num_tokens(), 0u);
}

TEST(Prepare, SentencePieceEndToEnd) {
  TempDir dir;
  const auto docs = write_fortunes(dir / "in", 400);
  ASSERT_EQ(prepare({"--input", (dir / "in").string(), "--output", (dir / "out").string(),
                     "--fortunes", "--tokenizer", "sentencepiece", "--vocab-size", "320"}),
            0);
  const Manifest m = read_manifest(dir / "out");
  EXPECT_EQ(m.tokenizer_kind, "sentencepiece");
  EXPECT_EQ(m.vocab_size, 320);
  EXPECT_EQ(m.tokenizer_model, "tokenizer.model");
  EXPECT_EQ(m.tokenizer_identity,
            sentencepiece_identity(testing::read_text(dir / "out" / "tokenizer.model")));
  const auto train = documents_of(dir / "out", Split::train);
  const auto val = documents_of(dir / "out", Split::val);
  std::multiset<std::string> got(train.begin(), train.end());
  got.insert(val.begin(), val.end());
  EXPECT_EQ(got, std::multiset<std::string>(docs.begin(), docs.end()));

  // Reusing the model gives the same identity and tokens.
  ASSERT_EQ(prepare({"--input", (dir / "in").string(), "--output", (dir / "out2").string(),
                     "--fortunes", "--tokenizer", "sentencepiece", "--sp-model",
                     (dir / "out" / "tokenizer.model").string()}),
            0);
  const Manifest m2 = read_manifest(dir / "out2");
  EXPECT_EQ(m2.tokenizer_identity, m.tokenizer_identity);
  EXPECT_EQ(m2.train.shards[0].checksum, m.train.shards[0].checksum);

  // A dataset read with another tokenizer's model is refused.
  fs::copy_file(dir / "out" / "tokenizer.model", dir / "out2" / "tokenizer.model",
                fs::copy_options::overwrite_existing);
  write_fortunes(dir / "in2", 60);
  ASSERT_EQ(prepare({"--input", (dir / "in2").string(), "--output", (dir / "out3").string(),
                     "--fortunes", "--tokenizer", "sentencepiece", "--vocab-size", "300"}),
            0);
  fs::copy_file(dir / "out3" / "tokenizer.model", dir / "out" / "tokenizer.model",
                fs::copy_options::overwrite_existing);
  EXPECT_THROW(load_tokenizer(dir / "out", read_manifest(dir / "out")), Error);
}

TEST(Prepare, ClearErrors) {
  TempDir dir;
  const std::string out = (dir / "out").string();
  expect_prepare_error({"--input", (dir / "nope").string(), "--output", out},
                       {"nope", "does not exist"});
  expect_prepare_error({"--output", out}, {"no --input"});
  expect_prepare_error({"--input", "x", "--bogus"}, {"unknown flag \"--bogus\"", "--shard-tokens"});
  expect_prepare_error({"--input", "x", "--output"}, {"--output needs a value"});
  expect_prepare_error({"--input", "x", "--output", out, "--vocab-size", "512"},
                       {"--vocab-size", "sentencepiece only"});
  expect_prepare_error({"--input", "x", "--output", out, "--tokenizer", "wordpiece"},
                       {"wordpiece", "valid: byte, sentencepiece"});
  expect_prepare_error({"--input", "x", "--output", out, "--val-fraction", "abc"},
                       {"--val-fraction expects a number"});
  expect_prepare_error({"--input", "x", "--output", out, "--val-fraction", "1"}, {"[0, 1)"});

  testing::write_text(dir / "empty" / "a", "\n\n  \n");
  testing::write_text(dir / "empty" / "b", "");
  expect_prepare_error({"--input", (dir / "empty").string(), "--output", out, "--overwrite"},
                       {"hold no documents"});
  testing::write_text(dir / "bin" / "x.dat", "x");
  expect_prepare_error({"--input", (dir / "bin").string(), "--output", out},
                       {"no text files found"});
  EXPECT_FALSE(fs::exists(dir / "out" / "manifest.json"));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".partial-"), std::string::npos) << e.path();
}

// The manifest text of a dataset that loads completely (both splits verified), or "" if not.
std::string loadable_manifest(const fs::path& dir) {
  try {
    Dataset train(dir, Split::train);
    Dataset val(dir, Split::val);
    return testing::read_text(dir / "manifest.json");
  } catch (const Error&) {
    return "";
  }
}

TEST(Prepare, AFailedReplaceKeepsTheOldDatasetAndLeavesNoStaging) {
  TempDir dir;
  write_fortunes(dir / "in", 50);
  const std::string out = (dir / "out").string();
  ASSERT_EQ(prepare({"--input", (dir / "in").string(), "--output", out, "--fortunes"}), 0);
  const std::string before = loadable_manifest(out);
  ASSERT_FALSE(before.empty());
  testing::write_text(dir / "empty" / "a", "\n\n");
  expect_prepare_error({"--input", (dir / "empty").string(), "--output", out, "--overwrite"},
                       {"hold no documents"});
  EXPECT_EQ(loadable_manifest(out), before);
  // A replace that succeeds swaps the whole directory: no file of the old one survives.
  testing::write_text(dir / "other" / "a.txt", "other text");
  ASSERT_EQ(prepare({"--input", (dir / "other").string(), "--output", out, "--overwrite"}), 0);
  EXPECT_FALSE(fs::exists(dir / "out" / "train-00000.bin") && loadable_manifest(out) == before);
  EXPECT_NE(loadable_manifest(out), before);
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".partial-"), std::string::npos) << e.path();
}

TEST(Prepare, RefusesAnOutputThatWouldSwallowAnInputOrAForeignDirectory) {
  TempDir dir;
  write_fortunes(dir / "d", 20);
  const std::string d = (dir / "d").string();
  expect_prepare_error({"--input", d, "--output", d, "--fortunes"},
                       {"--output", "lies inside --input", d});
  expect_prepare_error({"--input", d, "--output", d + "/sub/"}, {"lies inside --input"});
  expect_prepare_error({"--input", d + "/alpha", "--output", d},
                       {"--input", "lies inside --output", "replaces as a whole"});
  testing::write_text(dir / "mine" / "notes.txt", "keep me");
  const std::string mine = (dir / "mine").string();
  expect_prepare_error({"--input", d, "--output", mine},
                       {"--output", mine, "exists and is not empty; pass --overwrite"});
  expect_prepare_error({"--input", d, "--output", mine, "--overwrite"},
                       {mine, "was not written by moetron (it has no .moetron-files)"});
  EXPECT_EQ(testing::read_text(dir / "mine" / "notes.txt"), "keep me");
  EXPECT_TRUE(fs::exists(dir / "d" / "alpha"));
}

TEST(Prepare, ReplacesOnlyADatasetAndOnlyWithOverwrite) {
  TempDir dir;
  write_fortunes(dir / "in", 20);
  const std::string in = (dir / "in").string(), out = (dir / "out").string();
  ASSERT_EQ(prepare({"--input", in, "--output", out, "--fortunes"}), 0);
  const std::string before = loadable_manifest(out);
  // An existing dataset is replaced only when asked to.
  expect_prepare_error({"--input", in, "--output", out, "--fortunes"},
                       {"exists and is not empty; pass --overwrite"});
  // What moetron did not write there, a file or a directory, makes it refuse, naming it.
  testing::write_text(dir / "out" / "README.md", "my notes");
  testing::write_text(dir / "out" / ".git" / "HEAD", "ref: refs/heads/main");
  expect_prepare_error({"--input", in, "--output", out, "--fortunes", "--overwrite"},
                       {".git/", "README.md", "which moetron did not write", "move them out"});
  EXPECT_EQ(testing::read_text(dir / "out" / "README.md"), "my notes");
  EXPECT_TRUE(fs::exists(dir / "out" / ".git" / "HEAD"));
  EXPECT_EQ(loadable_manifest(out), before);
  fs::remove(dir / "out" / "README.md");
  fs::remove_all(dir / "out" / ".git");
  ASSERT_EQ(prepare({"--input", in, "--output", out, "--fortunes", "--overwrite"}), 0);
  EXPECT_EQ(loadable_manifest(out), before);  // the same text gives the same dataset
  // A SentencePiece model inside the output would be deleted by the replace.
  ASSERT_EQ(prepare({"--input", in, "--output", (dir / "sp").string(), "--fortunes", "--tokenizer",
                     "sentencepiece", "--vocab-size", "300"}),
            0);
  const std::string model = (dir / "sp" / "tokenizer.model").string();
  expect_prepare_error({"--input", in, "--output", (dir / "sp").string(), "--fortunes",
                        "--tokenizer", "sentencepiece", "--sp-model", model, "--overwrite"},
                       {"--sp-model", "lies inside --output"});
  EXPECT_TRUE(fs::exists(model));
}

TEST(Prepare, SentencePieceStopsAtInvalidUtf8UnlessAllowed) {
  TempDir dir;
  write_fortunes(dir / "in", 200);
  testing::write_text(dir / "in" / "gamma", "caf\xc3\xa9 is fine\n%\nbut \xff is not\n%\n");
  const std::vector<std::string> args{
      "--input",    (dir / "in").string(), "--output",      (dir / "out").string(),
      "--fortunes", "--tokenizer",         "sentencepiece", "--vocab-size",
      "320"};
  expect_prepare_error(args, {(dir / "in" / "gamma").string(), "invalid UTF-8 at byte offset 20",
                              "0xff", "--allow-invalid-utf8"});
  EXPECT_FALSE(fs::exists(dir / "out"));
  std::vector<std::string> allowed = args;
  allowed.push_back("--allow-invalid-utf8");
  ASSERT_EQ(prepare(allowed), 0);
  EXPECT_FALSE(loadable_manifest(dir / "out").empty());
  // Bytes are bytes for the byte tokenizer.
  ASSERT_EQ(prepare({"--input", (dir / "in").string(), "--output", (dir / "bytes").string(),
                     "--fortunes"}),
            0);
  expect_prepare_error(
      {"--input", (dir / "in").string(), "--output", (dir / "x").string(), "--allow-invalid-utf8"},
      {"sentencepiece only"});
}

// Runs the real `moetron prepare` and kills it with SIGKILL after `delay`; returns when it is gone.
void prepare_killed_after(const std::vector<std::string>& args, std::chrono::microseconds delay) {
  const std::string binary = std::string(MOETRON_BINARY_DIR) + "/trainer/moetron";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    freopen("/dev/null", "w", stderr);
    std::vector<char*> argv{const_cast<char*>(binary.c_str()), const_cast<char*>("prepare")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  std::this_thread::sleep_for(delay);
  kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
}

TEST(Prepare, KillNineDuringAReplaceNeverLosesTheDataset) {
  TempDir dir;
  write_fortunes(dir / "small", 40);
  // Enough text, in small fsynced shards, for a replace to take a while.
  for (int f = 0; f < 8; ++f)
    testing::write_text(dir / "big" / ("part" + std::to_string(f) + ".txt"),
                        testing::generated_corpus(12000, f + 7));
  const std::string out = (dir / "out").string();
  const std::vector<std::string> small{
      "--input", (dir / "small").string(), "--output", out, "--fortunes", "--overwrite"};
  const std::vector<std::string> big{
      "--input", (dir / "big").string(), "--output", out, "--shard-tokens", "20000", "--overwrite"};
  ASSERT_EQ(prepare(small), 0);
  const std::string old_manifest = loadable_manifest(out);
  // How long an uninterrupted replace takes, then kills spread over that time.
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(prepare(big), 0);
  const auto full =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  const std::string new_manifest = loadable_manifest(out);
  ASSERT_FALSE(new_manifest.empty());
  std::mt19937 gen(7);
  int old_seen = 0, new_seen = 0;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(prepare(i % 2 ? big : small), 0);  // start from either dataset
    const std::string before = loadable_manifest(out);
    std::uniform_int_distribution<int64_t> at(0, full.count());
    prepare_killed_after(i % 2 ? small : big, std::chrono::microseconds(at(gen)));
    const std::string after = loadable_manifest(out);
    ASSERT_FALSE(after.empty()) << "kill " << i << " left no loadable dataset at " << out;
    EXPECT_TRUE(after == before || after == (i % 2 ? old_manifest : new_manifest)) << "kill " << i;
    (after == before ? old_seen : new_seen)++;
  }
  std::cout << "after 20 kills: " << old_seen << " kept the dataset being replaced, " << new_seen
            << " found the replacement complete" << std::endl;
  // The staging directories the kills left are removed by the next prepare.
  ASSERT_EQ(prepare(small), 0);
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".partial-"), std::string::npos) << e.path();
}

TEST(Utf8, FindsTheFirstInvalidByte) {
  EXPECT_EQ(find_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("ab\x80"), 2u);            // a stray continuation byte
  EXPECT_EQ(find_invalid_utf8("a\xc0\xaf"), 1u);         // overlong '/'
  EXPECT_EQ(find_invalid_utf8("a\xe0\x80\xaf"), 1u);     // overlong, 3 bytes
  EXPECT_EQ(find_invalid_utf8("\xed\xa0\x80"), 0u);      // a UTF-16 surrogate
  EXPECT_EQ(find_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("ok\xe2\x82"), 2u);        // truncated at the end
  EXPECT_EQ(find_invalid_utf8("\xe2\x28\xa1"), 0u);      // bad continuation
}

TEST(Prepare, RealFortunesTopLevelByte) {
  const fs::path fortunes = "/usr/share/games/fortunes";
  if (!fs::exists(fortunes / "fortunes")) GTEST_SKIP() << "fortunes package not installed";
  TempDir dir;
  ASSERT_EQ(
      prepare({"--input", fortunes.string(), "--output", (dir / "out").string(), "--fortunes"}), 0);
  const Manifest m = read_manifest(dir / "out");
  EXPECT_GT(m.train.documents, 10000u);
  EXPECT_GT(m.train.tokens, 2'000'000u);
  Dataset ds(dir / "out", Split::val);
  Loader l(ds, 257, 4, 1);
  std::vector<int32_t> batch(4 * 257);
  l.next(batch);
}

}  // namespace
}  // namespace moetron::data
