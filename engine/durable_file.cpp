// engine/durable_file.cpp: tmp + fsync + rename + directory fsync, and the test-only crash points
// (declared in durable_file.h).
#include "engine/durable_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "engine/error.h"

namespace engine {

bool crash_requested(const char* point) {
  const char* want = std::getenv("ENGINE_CACHE_CRASH_AT");
  if (!want) return false;
  const char* hash = std::strchr(want, '#');
  const size_t len = hash ? static_cast<size_t>(hash - want) : std::strlen(want);
  if (std::strlen(point) != len || std::strncmp(want, point, len) != 0) return false;
  static std::atomic<long> hits{0};
  return ++hits >= (hash ? std::atol(hash + 1) : 1);
}

void crash_point(const char* point) {
  if (crash_requested(point)) std::raise(SIGKILL);
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, ": cannot open directory to fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0 && e != EINVAL) fail(dir, ": fsync of directory failed: ", std::strerror(e));
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open to fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) fail(path, ": fsync failed: ", std::strerror(e));
}

void fsync_close_or_unlink(int fd, const std::string& tmp) {
  int rc = ::fsync(fd);
  int e = errno;
  if (::close(fd) != 0 && rc == 0) rc = -1, e = errno;
  if (rc != 0) {
    ::unlink(tmp.c_str());
    fail(tmp, ": fsync/close failed: ", std::strerror(e));
  }
}

void rename_or_fail(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail(from, ": cannot rename to ", to, ": ", std::strerror(errno));
}

void unlink_if_exists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    fail(path, ": cannot delete: ", std::strerror(errno));
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return names;
    fail(dir, ": cannot list directory: ", std::strerror(errno));
  }
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

namespace {
// The last two steps of every durable write; a failed rename removes the temporary.
void rename_into_place(const std::string& tmp, const std::string& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail(tmp, ": cannot rename to ", path, ": ", std::strerror(e));
  }
  fsync_dir(dir_of(path));
}
}  // namespace

std::string durable_tmp_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

void commit_file_durable(const std::string& tmp, const std::string& path, const char* crash_tag) {
  try {
    fsync_path(tmp);
  } catch (...) {
    ::unlink(tmp.c_str());  // never leave a temporary behind an error
    throw;
  }
  if (crash_tag) crash_point((std::string(crash_tag) + ":tmp_written").c_str());
  rename_into_place(tmp, path);
  if (crash_tag) crash_point((std::string(crash_tag) + ":renamed").c_str());
}

void write_file_durable(const std::string& path, const std::string& bytes) {
  const std::string tmp = durable_tmp_name(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, ": cannot create: ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(tmp, ": write failed: ", std::strerror(e));
    }
    done += static_cast<size_t>(w);
  }
  fsync_close_or_unlink(fd, tmp);
  rename_into_place(tmp, path);
}

}  // namespace engine
