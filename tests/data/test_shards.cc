#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/check.h"
#include "data/json.h"
#include "data/loader.h"
#include "data/shard_format.h"
#include "tests/data/test_util.h"

namespace moetron::data {
namespace {

using testing::TempDir;

// Runs `f`, expecting an Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "missing \"" << p << "\" in: " << e.what();
  }
}

void patch(const std::filesystem::path& file, size_t offset, std::string_view bytes) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<int32_t> read_all(const ShardReader& r) {
  std::vector<int32_t> out(r.num_tokens());
  r.copy(0, out);
  return out;
}

TEST(Shard, RoundTripsU16) {
  TempDir dir;
  const std::vector<int32_t> tokens = {0, 1, 255, 256, 4095, 65535, 7};
  const ShardHeader w = write_shard(dir / "s.bin", tokens, 65536, "byte");
  EXPECT_EQ(w.token_width, 2u);
  EXPECT_EQ(std::filesystem::file_size(dir / "s.bin"), kShardHeaderBytes + 2 * tokens.size());
  ShardReader r(dir / "s.bin");
  EXPECT_EQ(r.header().version, kShardVersion);
  EXPECT_EQ(r.header().vocab_size, 65536u);
  EXPECT_EQ(r.header().tokenizer_identity, "byte");
  EXPECT_EQ(r.header().payload_checksum, w.payload_checksum);
  EXPECT_EQ(read_all(r), tokens);
  std::vector<int32_t> middle(3);
  r.copy(2, middle);
  EXPECT_EQ(middle, (std::vector<int32_t>{255, 256, 4095}));
  // No temp file is left beside the shard.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(Shard, RoundTripsU32ForLargeVocabs) {
  TempDir dir;
  const std::vector<int32_t> tokens = {0, 65536, 69999, 3};
  EXPECT_EQ(write_shard(dir / "s.bin", tokens, 70000, "sentencepiece:0123").token_width, 4u);
  ShardReader r(dir / "s.bin");
  EXPECT_EQ(r.header().token_width, 4u);
  EXPECT_EQ(read_all(r), tokens);
}

TEST(Shard, WriteRejectsTokensOutsideTheVocab) {
  TempDir dir;
  const std::vector<int32_t> tokens = {1, 256};
  expect_error([&] { write_shard(dir / "s.bin", tokens, 256, "byte"); }, {"s.bin", "token 256"});
  EXPECT_FALSE(std::filesystem::exists(dir / "s.bin"));
}

TEST(Shard, TruncatedFileIsAnError) {
  TempDir dir;
  write_shard(dir / "s.bin", std::vector<int32_t>(100, 7), 256, "byte");
  std::filesystem::resize_file(dir / "s.bin", kShardHeaderBytes + 150);
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "truncated", "100 tokens"});
  std::filesystem::resize_file(dir / "s.bin", 100);
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "truncated"});
}

TEST(Shard, TrailingBytesAreAnError) {
  TempDir dir;
  write_shard(dir / "s.bin", std::vector<int32_t>(10, 7), 256, "byte");
  std::filesystem::resize_file(dir / "s.bin", kShardHeaderBytes + 24);
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "4 bytes after"});
}

TEST(Shard, FlippedPayloadByteFailsTheChecksum) {
  TempDir dir;
  write_shard(dir / "s.bin", std::vector<int32_t>(100, 7), 256, "byte");
  patch(dir / "s.bin", kShardHeaderBytes + 51, "\x01");
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "payload checksum mismatch"});
}

TEST(Shard, FlippedHeaderByteFailsTheHeaderChecksum) {
  TempDir dir;
  write_shard(dir / "s.bin", std::vector<int32_t>(10, 7), 256, "byte");
  patch(dir / "s.bin", 33, "X");  // inside the identity
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "header checksum mismatch"});
}

TEST(Shard, BadMagicIsAnError) {
  TempDir dir;
  write_shard(dir / "s.bin", std::vector<int32_t>(10, 7), 256, "byte");
  patch(dir / "s.bin", 0, "NOTASHRD");
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "bad magic"});
  testing::write_text(dir / "empty.bin", "");
  expect_error([&] { ShardReader r(dir / "empty.bin"); }, {"empty.bin", "bad magic"});
}

TEST(Shard, UnknownVersionIsAnError) {
  TempDir dir;
  write_shard(dir / "s.bin", std::vector<int32_t>(10, 7), 256, "byte");
  patch(dir / "s.bin", 8, std::string_view("\x02\0\0\0", 4));
  expect_error([&] { ShardReader r(dir / "s.bin"); }, {"s.bin", "unknown version 2"});
}

TEST(Manifest, RoundTripsThroughJson) {
  TempDir dir;
  Manifest m;
  m.tokenizer_kind = "sentencepiece";
  m.vocab_size = 4096;
  m.tokenizer_identity = "sentencepiece:00112233aabbccdd";
  m.tokenizer_model = "tokenizer.model";
  m.train = {10, 30, {{"train-00000.bin", 20, 0xffffffffffffffffull}, {"train-00001.bin", 10, 1}}};
  m.val = {1, 3, {{"val-00000.bin", 3, 42}}};
  m.inputs = {"/a \"quoted\" dir", "b"};
  m.fortunes = true;
  m.val_fraction = 0.05;
  write_manifest(dir.path(), m);
  const Manifest r = read_manifest(dir.path());
  EXPECT_EQ(manifest_to_json(r), manifest_to_json(m));
  EXPECT_EQ(r.train.shards[0].checksum, 0xffffffffffffffffull);
  EXPECT_EQ(r.inputs[0], m.inputs[0]);
  EXPECT_EQ(r.val_fraction, 0.05);
}

TEST(Manifest, ErrorsNameTheFileAndField) {
  TempDir dir;
  expect_error([&] { read_manifest(dir.path()); },
               {"manifest.json\" not found", "moetron prepare"});
  testing::write_text(dir / "manifest.json",
                      "{\"format\": \"moetron-tokens\",\n \"version\": 1,,}");
  expect_error([&] { read_manifest(dir.path()); }, {"manifest.json:2:15"});
  testing::write_text(dir / "manifest.json",
                      "{\"format\": \"moetron-tokens\", \"version\": 1, \"tokenizer\": {}}");
  expect_error([&] { read_manifest(dir.path()); }, {"manifest.json", "$.tokenizer", "\"kind\""});
}

TEST(Json, ParsesTheWholeGrammar) {
  const JsonValue v =
      parse_json(R"({"a": [1, -2.5e3, true, false, null], "s": "x\"\\\n\u00e9", "o": {}})", "t");
  EXPECT_EQ(v.at("a").as_array().size(), 5u);
  EXPECT_EQ(v.at("a").as_array()[1].as_double(), -2500.0);
  EXPECT_EQ(v.at("s").as_string(), "x\"\\\n\xc3\xa9");
  EXPECT_EQ(parse_json(json_quote("q\"\t\x01"), "t").as_string(), "q\"\t\x01");
  EXPECT_THROW(parse_json("[1, 2", "t"), Error);
  EXPECT_THROW(parse_json("{} x", "t"), Error);
}

TEST(Dataset, TokenizerMismatchBetweenShardAndManifestIsAnError) {
  TempDir dir;
  testing::write_dataset(dir.path(), {{1, 2, 3}, {4, 5}}, 256, "byte");
  // Replace the second shard with one written by another tokenizer.
  const ShardHeader h = write_shard(dir / "train-1.bin", std::vector<int32_t>{4, 5}, 256,
                                    "sentencepiece:0000000000000000");
  (void)h;
  expect_error([&] { Dataset ds(dir.path(), Split::train); },
               {"train-1.bin", "tokenizer identity", "sentencepiece:0000000000000000", "byte"});
}

TEST(Dataset, ShardReplacedAfterPrepareIsAnError) {
  TempDir dir;
  testing::write_dataset(dir.path(), {{1, 2, 3}}, 256, "byte");
  write_shard(dir / "train-0.bin", std::vector<int32_t>{3, 2, 1}, 256, "byte");
  expect_error([&] { Dataset ds(dir.path(), Split::train); }, {"train-0.bin", "checksum"});
}

TEST(Dataset, MissingShardIsAnError) {
  TempDir dir;
  testing::write_dataset(dir.path(), {{1, 2, 3}}, 256, "byte");
  std::filesystem::remove(dir / "train-0.bin");
  expect_error([&] { Dataset ds(dir.path(), Split::train); }, {"train-0.bin"});
}

}  // namespace
}  // namespace moetron::data
