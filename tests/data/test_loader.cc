#include <gtest/gtest.h>

#include <numeric>
#include <set>

#include "core/check.h"
#include "data/loader.h"
#include "tests/data/test_util.h"

namespace moetron::data {
namespace {

using testing::TempDir;

constexpr int kVocab = 1000;

// A split whose token i is i % kVocab, cut into shards of uneven sizes.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::vector<int32_t>> shards;
    int32_t next = 0;
    for (int size : {700, 1, 1300, 500}) {
      shards.emplace_back(size);
      for (auto& t : shards.back()) t = next++ % kVocab;
    }
    testing::write_dataset(dir_.path(), shards, kVocab);
  }

  std::vector<int32_t> draw(Loader& l) {
    std::vector<int32_t> out(static_cast<size_t>(l.batch()) * l.window());
    l.next(out);
    return out;
  }

  TempDir dir_;
};

TEST_F(LoaderTest, DatasetIsOneStreamAcrossShards) {
  Dataset ds(dir_.path(), Split::train);
  EXPECT_EQ(ds.num_tokens(), 2501u);
  EXPECT_EQ(ds.vocab_size(), kVocab);
  EXPECT_EQ(ds.tokenizer_identity(), "test-tokenizer");
  std::vector<int32_t> all(ds.num_tokens());
  ds.copy(0, all);
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int32_t>(i % kVocab));
  std::vector<int32_t> span(5);
  ds.copy(698, span);  // crosses the 700 | 1 | 1300 boundaries
  EXPECT_EQ(span, (std::vector<int32_t>{698, 699, 700, 701, 702}));
  EXPECT_EQ(ds.token(2500), 500);
}

TEST_F(LoaderTest, WindowsAreContiguousAndInRange) {
  Dataset ds(dir_.path(), Split::train);
  Loader l(ds, 65, 8, 1234);
  for (int d = 0; d < 50; ++d) {
    const auto tokens = draw(l);
    for (int r = 0; r < 8; ++r) {
      const uint64_t start = l.window_start(d, r);
      ASSERT_LE(start + 65, ds.num_tokens());
      for (int j = 0; j < 65; ++j)
        ASSERT_EQ(tokens[r * 65 + j], static_cast<int32_t>((start + j) % kVocab));
    }
  }
}

TEST_F(LoaderTest, SameSeedSameTokensOtherSeedOtherTokens) {
  Dataset ds(dir_.path(), Split::train);
  Loader a(ds, 33, 4, 7), b(ds, 33, 4, 7), c(ds, 33, 4, 8);
  for (int d = 0; d < 10; ++d) {
    const auto ta = draw(a);
    EXPECT_EQ(ta, draw(b));
    EXPECT_NE(ta, draw(c));
  }
}

TEST_F(LoaderTest, SeekResumesTheSameSequence) {
  Dataset ds(dir_.path(), Split::train);
  Loader a(ds, 17, 3, 99);
  std::vector<std::vector<int32_t>> seq;
  for (int d = 0; d < 8; ++d) seq.push_back(draw(a));
  EXPECT_EQ(a.cursor().draws, 8u);

  Loader b(ds, 17, 3, 99);
  b.seek({5});
  EXPECT_EQ(draw(b), seq[5]);
  EXPECT_EQ(draw(b), seq[6]);
  EXPECT_EQ(b.cursor().draws, 7u);
  b.seek(LoaderCursor{});
  EXPECT_EQ(draw(b), seq[0]);
}

TEST_F(LoaderTest, RanksDrawDifferentWindowsThatTogetherFormTheGlobalBatch) {
  Dataset ds(dir_.path(), Split::train);
  Loader r0(ds, 9, 2, 5, 0, 2), r1(ds, 9, 2, 5, 1, 2), single(ds, 9, 4, 5);
  std::set<uint64_t> starts0, starts1;
  for (int d = 0; d < 20; ++d) {
    auto t0 = draw(r0), t1 = draw(r1);
    EXPECT_NE(t0, t1);
    for (int r = 0; r < 2; ++r)
      starts0.insert(r0.window_start(d, r)), starts1.insert(r1.window_start(d, r));
    // Rank 0's rows then rank 1's rows are the one-rank loader's rows for the doubled batch.
    t0.insert(t0.end(), t1.begin(), t1.end());
    EXPECT_EQ(t0, draw(single));
  }
  std::vector<uint64_t> common;
  std::set_intersection(starts0.begin(), starts0.end(), starts1.begin(), starts1.end(),
                        std::back_inserter(common));
  EXPECT_LE(common.size(), 2u);  // 40 draws each from ~2500 positions: overlaps are chance only
}

TEST_F(LoaderTest, PositionsCoverTheWholeRange) {
  Dataset ds(dir_.path(), Split::train);
  const int window = 2401;  // 101 valid start positions
  Loader l(ds, window, 1, 3);
  std::set<uint64_t> seen;
  for (uint64_t d = 0; d < 3000; ++d) seen.insert(l.window_start(d, 0));
  EXPECT_EQ(seen.size(), 101u);
  EXPECT_EQ(*seen.rbegin(), 100u);

  Loader exact(ds, 2501, 1, 3);  // window == split: the one position is 0
  EXPECT_EQ(exact.window_start(12345, 0), 0u);
}

TEST_F(LoaderTest, SplitSmallerThanAWindowIsAnError) {
  Dataset ds(dir_.path(), Split::train);
  try {
    Loader l(ds, 2502, 1, 0);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than one window"), std::string::npos) << e.what();
  }
  Dataset val(dir_.path(), Split::val);  // this dataset has no val shards
  EXPECT_EQ(val.num_tokens(), 0u);
  EXPECT_THROW(Loader(val, 2, 1, 0), Error);
}

TEST_F(LoaderTest, BadArgumentsAreErrors) {
  Dataset ds(dir_.path(), Split::train);
  EXPECT_THROW(Loader(ds, 0, 1, 0), Error);
  EXPECT_THROW(Loader(ds, 8, 0, 0), Error);
  EXPECT_THROW(Loader(ds, 8, 1, 0, 2, 2), Error);
  EXPECT_THROW(Loader(ds, 8, 1, 0, -1, 2), Error);
}

}  // namespace
}  // namespace moetron::data
