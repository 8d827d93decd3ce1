// A checkpoint file is untrusted input (docs/checkpoint.md, "Trust"): damaged or hostile
// metadata, tensors the config does not describe, sizes the file cannot hold and files that are
// not regular files all give a clear error naming the file, quickly and within a small memory
// limit, from every command that reads a checkpoint (inspect, export, generate, train --resume),
// and never a crash. The fuzz test runs the real program on mutated files under RLIMIT_AS.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>

#include "checkpoint/h5.h"
#include "checkpoint/inspect.h"
#include "checkpoint/metadata.h"
#include "checkpoint/reader.h"
#include "configs/config.h"
#include "core/check.h"
#include "data/hash.h"
#include "tests/checkpoint/h5_edit.h"
#include "tests/process.h"
#include "tests/trainer/train_fixture.h"
#include "trainer/trainer.h"

namespace moetron {
namespace {

// The address space the CUDA libraries (cuBLASLt alone is 540 MB, NCCL 220 MB) take in this
// process, which links what the program links: mapped before main, whatever it then allocates.
rlim_t gpu_library_bytes() {
  static const rlim_t bytes = [] {
    std::ifstream maps("/proc/self/maps");
    rlim_t sum = 0;
    for (std::string line; std::getline(maps, line);) {
      const bool gpu = line.find("/libcu") != std::string::npos ||
                       line.find("/libnccl") != std::string::npos ||
                       line.find("/libnv") != std::string::npos;
      unsigned long long begin = 0, end = 0;
      if (gpu && std::sscanf(line.c_str(), "%llx-%llx", &begin, &end) == 2) sum += end - begin;
    }
    return sum;
  }();
  return bytes;
}

namespace fs = std::filesystem;
using data::testing::read_text;
using data::testing::TempDir;

#define EXPECT_HAS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// Root attributes through the HDF5 C API, as a damaged or hostile file would have them.
int64_t get_int(hid_t f, const char* name) {
  int64_t v = 0;
  const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  H5Aread(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  return v;
}
std::string get_str(hid_t f, const char* name) {
  const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  const hid_t t = H5Aget_type(a);
  std::string s(H5Tget_size(t), '\0');
  H5Aread(a, t, s.data());
  H5Tclose(t);
  H5Aclose(a);
  s.resize(std::strlen(s.c_str()));
  return s;
}
void put_int(hid_t f, const char* name, int64_t v) {
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  H5Sclose(space);
}
void put_str(hid_t f, const char* name, const std::string& v) {
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  const hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, std::max<size_t>(v.size(), 1));
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(f, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
  const std::string padded = v.empty() ? std::string(1, '\0') : v;
  H5Awrite(a, t, padded.data());
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(t);
}
// Writes the metadata checksum that matches the attributes as they are now: what a hostile
// writer who knows the format would do.
void reseal(hid_t f) {
  checkpoint::Metadata m;
  m.version = get_int(f, "version");
  m.state.step = get_int(f, "step");
  m.state.tokens_seen = get_int(f, "tokens_seen");
  m.state.samples_consumed = get_int(f, "samples_consumed");
  m.optimizer_step = get_int(f, "optimizer_step");
  m.layout = get_str(f, "layout");
  m.config_text = get_str(f, "config");
  m.state.dataset = get_str(f, "dataset");
  put_str(f, "metadata_checksum", data::hex64(checkpoint::metadata_checksum(m)));
}
// The config attribute, edited through the schema, then resealed.
void edit_config(hid_t f, const std::function<void(config::RunConfig&)>& edit) {
  config::RunConfig cfg = parse_config_text(get_str(f, "config"), "checkpoint");
  edit(cfg);
  put_str(f, "config", config_to_text(cfg));
  reseal(f);
}

class Trust : public test::TrainedCheckpoint<Trust> {
 public:
  static config::RunConfig run_config(const fs::path& run_dir, int steps) {
    return testing::small_moe_run(run_dir, steps);
  }

 protected:
  // The real program on `args`, in 1 GiB of address space beyond its GPU libraries', and 30 s;
  // its output.
  static std::string run(const std::vector<std::string>& args, test::Exit& exit) {
    const fs::path out = *dir_ / "out.txt";
    exit = test::run_moetron(args, out,
                             test::limit(RLIMIT_AS, (rlim_t{1} << 30) + gpu_library_bytes()),
                             std::chrono::seconds(30));
    return read_text(out);
  }
  // Each command that reads a checkpoint must fail on `file` with status 1, naming it and saying
  // `why`, within the limits above.
  static void expect_refused(const fs::path& file, const std::string& why,
                             bool every_command = true) {
    std::vector<std::vector<std::string>> commands = {{"inspect", file.string()}};
    if (every_command) {
      commands.push_back({"generate", file.string(), "--prompt", "The ", "--max-tokens", "2",
                          "--tokenizer", testing::dataset_dir().string()});
      commands.push_back({"export", file.string(), "--out", (*dir_ / "hf").string(), "--dataset",
                          testing::dataset_dir().string()});
    }
    for (const auto& args : commands) {
      SCOPED_TRACE(args[0] + " " + file.filename().string());
      test::Exit e;
      const std::string out = run(args, e);
      EXPECT_FALSE(e.timed_out) << out;
      ASSERT_TRUE(e.exited) << "killed by signal " << e.signal << "\n" << out;
      EXPECT_EQ(e.status, 1) << out;
      EXPECT_HAS(out, file.string());
      EXPECT_HAS(out, why);
      EXPECT_FALSE(fs::exists(*dir_ / "hf"));
    }
  }
};

TEST_F(Trust, TheGoodCheckpointPassesEveryCommand) {
  test::Exit e;
  std::string out = run({"inspect", good_->string()}, e);
  EXPECT_EQ(e.status, 0) << out;
  EXPECT_HAS(out, "every tensor and moment matches its checksum");
  out = run({"generate", good_->string(), "--prompt", "The ", "--max-tokens", "3", "--tokenizer",
             testing::dataset_dir().string()},
            e);
  EXPECT_EQ(e.status, 0) << out;
}

// One flipped bit, a changed counter, a removed or retyped attribute: the checksum or the
// attribute check catches each, and no command crashes or runs out of memory.
TEST_F(Trust, FuzzedMetadataIsRefusedAndNeverCrashes) {
  const char* ints[] = {"version", "step", "tokens_seen", "samples_consumed", "optimizer_step"};
  const char* strings[] = {"format", "layout", "config", "dataset", "metadata_checksum"};
  const int64_t values[] = {-5, -1, 0, 3, int64_t{1} << 31, int64_t{1} << 62, INT64_MIN, INT64_MAX};
  std::mt19937_64 gen(2026);
  const int cases = 48;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < cases; ++i) {
    const int kind = static_cast<int>(gen() % 6);
    std::string what;
    const fs::path f = copy_with("fuzz.h5", [&](hid_t file) {
      const char* in = ints[gen() % std::size(ints)];
      const char* st = strings[gen() % std::size(strings)];
      switch (kind) {
        case 0: {  // a counter or the version, changed
          int64_t v = values[gen() % std::size(values)];
          if (v == get_int(file, in)) v += 1;
          put_int(file, in, v);
          what = std::string(in) + " = " + std::to_string(v);
          break;
        }
        case 1: {  // one bit of a string flipped
          std::string s = get_str(file, st);
          const size_t at = gen() % std::max<size_t>(s.size(), 1);
          if (s.empty()) s = "x";
          s[at] = static_cast<char>(s[at] ^ (1 << (gen() % 7)));
          if (s[at] == '\0') s[at] = '?';
          put_str(file, st, s);
          what = std::string(st) + " bit flip at " + std::to_string(at);
          break;
        }
        case 2:  // an attribute removed
          H5Adelete(file, gen() % 2 ? in : st);
          what = "deleted";
          break;
        case 3:  // an integer stored as a string, a string as an integer
          put_str(file, in, "12");
          put_int(file, st, 12);
          what = "retyped";
          break;
        case 4: {  // an array where one value belongs (a read of one value would overrun)
          H5Adelete(file, in);
          const hsize_t n = 4096;
          const hid_t space = H5Screate_simple(1, &n, nullptr);
          const hid_t a = H5Acreate2(file, in, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
          std::vector<int64_t> zeros(n, 7);
          H5Awrite(a, H5T_NATIVE_INT64, zeros.data());
          H5Aclose(a);
          H5Sclose(space);
          what = std::string(in) + " as an array";
          break;
        }
        default:  // a string far longer than any moetron writes
          put_str(file, st, std::string(size_t{3} << 20, 'y'));
          what = std::string(st) + " of 3 MiB";
          break;
      }
    });
    SCOPED_TRACE("case " + std::to_string(i) + ": " + what);
    test::Exit e;
    const std::string out = run({"inspect", f.string()}, e);
    ASSERT_TRUE(e.exited) << "killed by signal " << e.signal << "\n" << out;
    EXPECT_EQ(e.status, 1) << out;
    EXPECT_HAS(out, "moetron inspect: error: ");
  }
  std::cout << cases << " mutated checkpoints refused in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s"
            << std::endl;
}

// A writer that knows the format can reseal its metadata: then the checks behind the checksum
// hold. Sizes are weighed against the file before anything of that size is allocated (these
// ran at 2-6 GB before the checks; here the limit is 1 GiB beyond the GPU libraries), the config is
// validated as a config file is, and the counters must be in range.
TEST_F(Trust, ResealedHostileMetadataIsRefusedBeforeAllocating) {
  struct Case {
    const char* name;
    std::function<void(hid_t)> edit;
    const char* why;
  };
  const std::vector<Case> cases = {
      {"vocab.h5",
       [](hid_t f) { edit_config(f, [](auto& c) { c.mutable_model()->set_vocab_size(2000000); }); },
       "its config describes a model of"},
      {"layers.h5",
       [](hid_t f) {
         edit_config(f, [](auto& c) { c.mutable_model()->set_num_hidden_layers(100000); });
       },
       "its config describes a model of"},
      {"experts.h5",
       [](hid_t f) {
         edit_config(
             f, [](auto& c) { c.mutable_model()->mutable_moe()->set_n_routed_experts(1000000); });
       },
       "its config describes a model of"},
      {"theta.h5",
       [](hid_t f) {
         edit_config(f, [](auto& c) { c.mutable_model()->set_rope_theta(std::nanf("")); });
       },
       "its config fails the checks of a config file: model.rope_theta = nan"},
      {"threads.h5", [](hid_t f) { edit_config(f, [](auto& c) { c.set_threads(100000); }); },
       "threads = 100000: must be in [0, 1024]"},
      {"negative_step.h5",
       [](hid_t f) {
         put_int(f, "step", -5);
         reseal(f);
       },
       "attribute step = -5 is out of range"},
      {"huge_step.h5",
       [](hid_t f) {
         put_int(f, "step", int64_t{1} << 62);
         reseal(f);
       },
       "attribute step = 4611686018427387904 is out of range"},
      {"samples.h5",
       [](hid_t f) {
         put_int(f, "samples_consumed", -1);
         reseal(f);
       },
       "attribute samples_consumed = -1 is out of range"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    expect_refused(copy_with(c.name, c.edit), c.why);
  }
}

// Datasets a reader could be misled by: each is named before any of it is read.
TEST_F(Trust, TensorsTheConfigDoesNotDescribeAreRefused) {
  const std::string victim = "/params/model.layers.1.self_attn.q_proj.weight";
  auto replace = [&](hid_t f, hid_t space, hid_t dcpl) {
    H5Ldelete(f, victim.c_str(), H5P_DEFAULT);
    H5Dclose(H5Dcreate2(f, victim.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Sclose(space);
  };
  const fs::path scalar =
      copy_with("scalar.h5", [&](hid_t f) { replace(f, H5Screate(H5S_SCALAR), H5P_DEFAULT); });
  expect_refused(scalar, "has shape [], the model its config describes needs [32, 32]");
  const fs::path rank3 = copy_with("rank3.h5", [&](hid_t f) {
    const hsize_t dims[3] = {32, 32, 1};
    replace(f, H5Screate_simple(3, dims, nullptr), H5P_DEFAULT);
  });
  expect_refused(rank3, "has shape [32, 32, 1]", false);
  // The shape the model needs, declared, but not stored: reading would give zeros (or, at
  // [32768, 16384], allocate 2 GiB) from a file that never held them.
  const fs::path hollow = copy_with("hollow.h5", [&](hid_t f) {
    const hsize_t dims[2] = {32, 32};
    replace(f, H5Screate_simple(2, dims, nullptr), H5P_DEFAULT);
  });
  expect_refused(hollow,
                 "is not stored as moetron writes it (4096 contiguous bytes; the file has 0)");
  const fs::path packed = copy_with("packed.h5", [&](hid_t f) {
    const hsize_t dims[2] = {32, 32}, chunk[2] = {32, 32};
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_deflate(dcpl, 9);
    const hid_t space = H5Screate_simple(2, dims, nullptr);
    H5Ldelete(f, victim.c_str(), H5P_DEFAULT);
    const hid_t ds =
        H5Dcreate2(f, victim.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    std::vector<float> zeros(32 * 32);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
    H5Dclose(ds);
    H5Sclose(space);
    H5Pclose(dcpl);
  });
  expect_refused(packed, "not contiguous", false);
  const fs::path moments = copy_with(
      "moments.h5", [&](hid_t f) { H5Ldelete(f, "/exp_avg_sq/model.norm.weight", H5P_DEFAULT); });
  expect_refused(moments, "/exp_avg and /exp_avg_sq hold different tensors", false);
}

// Only regular files are read: a FIFO would block the reader forever, a device never end.
TEST_F(Trust, OnlyRegularFilesAreRead) {
  const fs::path fifo = *dir_ / "fifo.h5";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  expect_refused(fifo, "is a FIFO, not a regular file");
  expect_refused("/dev/zero", "is a character device, not a regular file", false);
  // And a run directory whose `latest` is one.
  const fs::path run = *dir_ / "fifo-run" / "checkpoints";
  fs::create_directories(run);
  ASSERT_EQ(mkfifo((run / "latest").c_str(), 0644), 0);
  test::Exit e;
  const std::string out = this->run({"inspect", run.parent_path().string()}, e);
  EXPECT_FALSE(e.timed_out);
  EXPECT_EQ(e.status, 1) << out;
  EXPECT_HAS(out, "is a FIFO, not a regular file");
}

// inspect verifies what it shows, and what it does not show (the moments without --moments).
TEST_F(Trust, InspectVerifiesEveryTensorAndMoment) {
  for (const char* victim : {"/params/model.norm.weight", "/exp_avg_sq/model.norm.weight"}) {
    SCOPED_TRACE(victim);
    const fs::path f = copy_with("flipped.h5", [&](hid_t file) {
      const hid_t ds = H5Dopen2(file, victim, H5P_DEFAULT);
      std::vector<float> v(32);
      H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
      v[5] += 1.0f;
      H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
      H5Dclose(ds);
    });
    std::ostringstream out;
    try {
      checkpoint::inspect(f, out);
      ADD_FAILURE() << "inspect took a corrupt file";
    } catch (const Error& e) {
      EXPECT_HAS(std::string(e.what()),
                 std::string("1 datasets do not match their checksums (the ") +
                     "file is corrupt): " + victim);
    }
    EXPECT_HAS(out.str(), "model.norm.weight");
    EXPECT_HAS(out.str(), "CHECKSUM MISMATCH");
  }
}

// Checkpoints of format version 2 (before the metadata checksum) still load.
TEST_F(Trust, Version2CheckpointsStillLoad) {
  const fs::path f = copy_with("v2.h5", [](hid_t file) {
    put_int(file, "version", 2);
    H5Adelete(file, "metadata_checksum");
    H5Adelete(file, "dataset");
  });
  const checkpoint::CheckpointReader reader(f);
  EXPECT_EQ(reader.metadata().version, 2);
  EXPECT_EQ(reader.metadata().state.step, 2);
  EXPECT_EQ(reader.metadata().state.dataset, "");
  std::ostringstream out;
  checkpoint::inspect(f, out);
  EXPECT_HAS(out.str(), "version 2");
}

}  // namespace
}  // namespace moetron
