#include "trainer/event_file.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/check.h"
#include "trainer/tfevents.pb.h"

namespace moetron {
namespace {

using detail::concat;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(std::span<const uint8_t> bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : bytes) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::span<const uint8_t> bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

EventFile::EventFile(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(concat("cannot create ", dir, ": ", ec.message()));
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const std::string base = concat("events.out.tfevents.", static_cast<long long>(now_seconds()),
                                  ".", host, ".", ::getpid());
  // A new file, never an earlier one (a resume within the same second: .1, .2, ...).
  for (int n = 0; !file_; ++n) {
    path_ = dir / (n == 0 ? base : concat(base, ".", n));
    file_ = std::fopen(path_.c_str(), "wbx");
    if (!file_ && (errno != EEXIST || n > 1000))
      throw Error(concat("cannot create ", path_, ": ", std::strerror(errno)));
  }
  tfevents::Event e;
  e.set_wall_time(now_seconds());
  e.set_file_version("brain.Event:2");
  record(e.SerializeAsString());
  flush();
}

EventFile::~EventFile() {
  if (file_) std::fclose(file_);
}

void EventFile::record(const std::string& event) {
  uint8_t header[12];
  const uint64_t length = event.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<uint8_t>(length >> (8 * i));
  const uint32_t length_crc = masked_crc32c({header, 8});
  std::memcpy(header + 8, &length_crc, 4);  // little-endian, as the format (x86, ARM)
  const auto* data = reinterpret_cast<const uint8_t*>(event.data());
  const uint32_t data_crc = masked_crc32c({data, event.size()});
  if (std::fwrite(header, 1, 12, file_) != 12 ||
      std::fwrite(event.data(), 1, event.size(), file_) != event.size() ||
      std::fwrite(&data_crc, 1, 4, file_) != 4)
    throw Error(concat("cannot write ", path_, ": ", std::strerror(errno)));
}

void EventFile::scalar(const std::string& tag, int64_t step, double value) {
  tfevents::Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  tfevents::Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  record(e.SerializeAsString());
}

void EventFile::image(const std::string& tag, int64_t step, const std::string& png, int width,
                      int height, int channels) {
  tfevents::Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  tfevents::Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  tfevents::Summary::Image* img = v->mutable_image();
  img->set_width(width);
  img->set_height(height);
  img->set_colorspace(channels);
  img->set_encoded_image_string(png);
  record(e.SerializeAsString());
}

void EventFile::session_start(int64_t step) {
  tfevents::Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  e.mutable_session_log()->set_status(tfevents::SessionLog::START);
  record(e.SerializeAsString());
  flush();
}

void EventFile::flush() {
  if (std::fflush(file_) != 0)
    throw Error(concat("cannot write ", path_, ": ", std::strerror(errno)));
}

}  // namespace moetron
