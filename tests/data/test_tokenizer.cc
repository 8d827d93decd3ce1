#include <gtest/gtest.h>

#include "core/check.h"
#include "data/tokenizer.h"
#include "tests/data/test_util.h"

namespace moetron::data {
namespace {

using testing::TempDir;

TextSource lines_of(const std::string& text) {
  auto pos = std::make_shared<size_t>(0);
  return [text, pos](std::string& out) {
    if (*pos >= text.size()) return false;
    size_t end = text.find('\n', *pos);
    end = end == std::string::npos ? text.size() : end + 1;
    out = text.substr(*pos, end - *pos);
    *pos = end;
    return true;
  };
}

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  ByteTokenizer t;
  const std::string text("h\xc3\xa9llo\n\0\xff tab\t", 13);
  const auto ids = t.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[1], 0xc3);
  EXPECT_EQ(ids[7], 0);
  EXPECT_EQ(ids[8], 255);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.vocab_size(), 256);
  EXPECT_EQ(t.identity(), "byte");
  EXPECT_EQ(t.kind(), "byte");
}

TEST(ByteTokenizer, DecodeRejectsIdsOutsideTheVocab) {
  ByteTokenizer t;
  const std::vector<int32_t> ids = {104, 256};
  EXPECT_THROW(t.decode(ids), Error);
}

TEST(SentencePieceTokenizer, TrainsDeterministicallyAndRoundTrips) {
  TempDir dir;
  const std::string corpus = testing::generated_corpus(3000);
  auto a = SentencePieceTokenizer::train(lines_of(corpus), 400, dir / "a.model");
  auto b = SentencePieceTokenizer::train(lines_of(corpus), 400, dir / "b.model");
  EXPECT_EQ(a.vocab_size(), 400);
  EXPECT_EQ(a.kind(), "sentencepiece");
  EXPECT_TRUE(a.identity().starts_with("sentencepiece:"));
  EXPECT_EQ(a.identity(), b.identity());
  EXPECT_EQ(testing::read_text(dir / "a.model"), testing::read_text(dir / "b.model"));

  // Exact round trip, including whitespace runs, tabs, newlines and characters never seen in
  // training (byte fallback).
  const std::string text = "the lazy  expert\trouter\n\nnaïve ☃ 12345 gate.  \n";
  const auto ids = a.encode(text);
  EXPECT_EQ(a.decode(ids), text);
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < a.vocab_size());
  // Learned merges compress in-domain text well below one token per byte.
  const std::string line = "the quick brown fox jumps over the lazy dog.\n";
  EXPECT_LT(a.encode(line).size(), line.size() / 2);

  SentencePieceTokenizer loaded(dir / "a.model");
  EXPECT_EQ(loaded.identity(), a.identity());
  EXPECT_EQ(loaded.encode(text), ids);

  auto other = SentencePieceTokenizer::train(lines_of(testing::generated_corpus(3000, 7)), 400,
                                             dir / "c.model");
  EXPECT_NE(other.identity(), a.identity());
}

TEST(SentencePieceTokenizer, DecodeRejectsIdsOutsideTheVocab) {
  TempDir dir;
  auto t =
      SentencePieceTokenizer::train(lines_of(testing::generated_corpus(500)), 300, dir / "m.model");
  const std::vector<int32_t> ids = {5, 300};
  try {
    t.decode(ids);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside [0, 300)"), std::string::npos) << e.what();
  }
}

TEST(SentencePieceTokenizer, BadModelFileNamesTheFile) {
  TempDir dir;
  testing::write_text(dir / "junk.model", "this is not a model");
  try {
    SentencePieceTokenizer t(dir / "junk.model");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SentencePieceTokenizer(dir / "missing.model"), Error);
}

TEST(SentencePieceTokenizer, VocabTooLargeForTheCorpusIsAnError) {
  TempDir dir;
  try {
    SentencePieceTokenizer::train(lines_of("tiny corpus\n"), 5000, dir / "m.model");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab size 5000"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "m.model"));
}

}  // namespace
}  // namespace moetron::data
