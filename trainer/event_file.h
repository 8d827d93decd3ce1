// A TensorBoard event file (the tfevents record format): records of a little-endian uint64
// length, the masked CRC32C of those 8 bytes, the serialised Event (trainer/tfevents.proto) and
// the masked CRC32C of it; the first record holds file_version "brain.Event:2". Scalars and PNG
// images, flushed after each step's records so TensorBoard follows a live run. docs/runs.md.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>

namespace moetron {

// CRC-32C (Castagnoli) of `bytes`, and TensorFlow's masked form of a CRC.
uint32_t crc32c(std::span<const uint8_t> bytes);
uint32_t masked_crc32c(std::span<const uint8_t> bytes);

class EventFile {
 public:
  // Creates `dir` if needed and a new file events.out.tfevents.<seconds>.<host> in it.
  explicit EventFile(const std::filesystem::path& dir);
  ~EventFile();
  EventFile(const EventFile&) = delete;
  EventFile& operator=(const EventFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  void scalar(const std::string& tag, int64_t step, double value);
  // A PNG of width x height pixels, `channels` 1 (grayscale) or 3 (RGB).
  void image(const std::string& tag, int64_t step, const std::string& png, int width, int height,
             int channels);
  // A session (re)starting at `step`: TensorBoard drops the earlier files' records from `step`
  // on (a resumed run's first step).
  void session_start(int64_t step);
  // Writes what is buffered; throws Error naming the file when the system refuses.
  void flush();

 private:
  void record(const std::string& event);

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace moetron
