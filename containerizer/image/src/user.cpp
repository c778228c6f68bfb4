#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <charconv>
#include <sstream>

#include "corral/common/fd.hpp"
#include "corral/image/store.hpp"

namespace corral::image {
namespace fs = std::filesystem;
namespace {

// The content of `rel` as the overlay of `layers` shows it: the topmost layer that has it, a
// whiteout ending the search. Never follows symlinks (an image's /etc/passwd is a plain file).
Result<std::string> read_image_file(const std::vector<fs::path>& layers, const std::string& rel) {
  for (const auto& layer : layers) {
    UniqueFd root(::open(layer.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return Error::from_errno("open layer " + layer.string());
    struct stat st {};
    if (::fstatat(root.get(), rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISCHR(st.st_mode) && st.st_rdev == ::makedev(0, 0)) break;  // whiteout
    if (!S_ISREG(st.st_mode)) return Error(EINVAL, "/" + rel + " in the image is not a file");
    open_how how{};
    how.flags = O_RDONLY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    UniqueFd fd(
        static_cast<int>(::syscall(SYS_openat2, root.get(), rel.c_str(), &how, sizeof how)));
    if (!fd) return Error::from_errno("open /" + rel + " in the image");
    return read_file("/proc/self/fd/" + std::to_string(fd.get()), 4 << 20);
  }
  return Error(ENOENT, "the image has no /" + rel);
}

bool parse_u32(std::string_view s, uint32_t* out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(line);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!line.empty() && line.back() == sep) out.push_back("");
  return out;
}

}  // namespace

Result<ImageUser> resolve_image_user(const std::vector<fs::path>& layers, std::string_view spec) {
  ImageUser u;
  if (spec.empty()) return u;
  std::string user(spec), group;
  if (auto colon = user.find(':'); colon != std::string::npos) {
    group = user.substr(colon + 1);
    user.resize(colon);
  }
  auto passwd = read_image_file(layers, "etc/passwd");
  std::string name;
  bool found = false;
  bool numeric = parse_u32(user, &u.uid);
  if (passwd) {
    std::istringstream in(*passwd);
    std::string line;
    while (std::getline(in, line)) {
      auto f = split(line, ':');
      if (f.size() < 4) continue;
      uint32_t uid = 0, gid = 0;
      if (!parse_u32(f[2], &uid) || !parse_u32(f[3], &gid)) continue;
      if ((numeric && uid == u.uid) || (!numeric && f[0] == user)) {
        u.uid = uid;
        u.gid = gid;
        name = f[0];
        found = true;
        break;
      }
    }
  }
  if (!found && !numeric) {
    return Error(ENOENT, "the image's user '" + user + "' is not in its /etc/passwd" +
                             (passwd ? "" : " (" + passwd.error().message() + ")"));
  }
  auto groups = read_image_file(layers, "etc/group");
  if (!group.empty()) {
    if (!parse_u32(group, &u.gid)) {
      bool hit = false;
      if (groups) {
        std::istringstream in(*groups);
        std::string line;
        while (std::getline(in, line) && !hit) {
          auto f = split(line, ':');
          uint32_t gid = 0;
          if (f.size() >= 3 && f[0] == group && parse_u32(f[2], &gid)) {
            u.gid = gid;
            hit = true;
          }
        }
      }
      if (!hit) return Error(ENOENT, "the image's group '" + group + "' is not in its /etc/group");
    }
  }
  if (groups && !name.empty()) {
    std::istringstream in(*groups);
    std::string line;
    while (std::getline(in, line)) {
      auto f = split(line, ':');
      uint32_t gid = 0;
      if (f.size() < 4 || !parse_u32(f[2], &gid) || gid == u.gid) continue;
      for (const auto& member : split(f[3], ',')) {
        if (member == name) u.supplementary_gids.push_back(gid);
      }
    }
  }
  return u;
}

}  // namespace corral::image
