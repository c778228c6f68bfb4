#include "corral/image/reference.hpp"

#include <cctype>

#include "corral/image/digest.hpp"

namespace corral::image {
namespace {

bool valid_repo_component(std::string_view c) {
  if (c.empty() || c.size() > 128) return false;
  if (!std::islower(static_cast<unsigned char>(c.front())) &&
      !std::isdigit(static_cast<unsigned char>(c.front()))) {
    return false;
  }
  for (char ch : c) {
    if (!(std::islower(static_cast<unsigned char>(ch)) ||
          std::isdigit(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-')) {
      return false;
    }
  }
  return true;
}

bool valid_tag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  if (!(std::isalnum(static_cast<unsigned char>(t[0])) || t[0] == '_')) return false;
  for (char ch : t) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-')) {
      return false;
    }
  }
  return true;
}

bool valid_registry(std::string_view r) {
  if (r.empty() || r.size() > 253) return false;
  for (char ch : r) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == ':' ||
          ch == '[' || ch == ']')) {
      return false;
    }
  }
  return true;
}

bool match_at(std::string_view p, std::string_view n) {
  while (!p.empty()) {
    if (p.substr(0, 2) == "**") {
      p.remove_prefix(2);
      for (size_t i = 0; i <= n.size(); ++i) {
        if (match_at(p, n.substr(i))) return true;
      }
      return false;
    }
    if (p[0] == '*') {
      p.remove_prefix(1);
      for (size_t i = 0; i <= n.size(); ++i) {
        if (match_at(p, n.substr(i))) return true;
        if (i < n.size() && n[i] == '/') return false;
      }
      return false;
    }
    if (n.empty()) return false;
    if (p[0] != '?' && p[0] != n[0]) return false;
    p.remove_prefix(1);
    n.remove_prefix(1);
  }
  return n.empty();
}

}  // namespace

std::string Reference::to_string() const {
  std::string out = registry + "/" + repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

Result<Reference> parse_reference(std::string_view text) {
  const std::string shown(text.substr(0, 300));
  auto bad = [&](const std::string& why) {
    return Error(EINVAL, "image reference '" + shown + "': " + why +
                             " (expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. "
                             "127.0.0.1:5000/team/app:1.0)");
  };
  if (text.empty()) return bad("empty");
  if (text.size() > 512) return bad("too long");
  Reference ref;
  std::string rest(text);
  if (auto at = rest.find('@'); at != std::string::npos) {
    ref.digest = rest.substr(at + 1);
    rest.resize(at);
    if (auto r = check_digest(ref.digest, "the digest"); !r) return bad(r.error().message());
  }
  // The registry is the first component when it looks like a host (has '.' or ':' or is
  // "localhost").
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    std::string first = rest.substr(0, slash);
    if (first.find('.') != std::string::npos || first.find(':') != std::string::npos ||
        first == "localhost") {
      ref.registry = first;
      rest = rest.substr(slash + 1);
    }
  }
  if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    ref.tag = rest.substr(colon + 1);
    rest.resize(colon);
    if (!valid_tag(ref.tag)) return bad("invalid tag '" + ref.tag + "'");
  }
  if (ref.registry.empty()) ref.registry = "docker.io";
  if (!valid_registry(ref.registry)) return bad("invalid registry '" + ref.registry + "'");
  if (ref.registry == "docker.io" && rest.find('/') == std::string::npos) {
    rest = "library/" + rest;
  }
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find('/', start);
    if (end == std::string::npos) end = rest.size();
    if (!valid_repo_component(std::string_view(rest).substr(start, end - start))) {
      return bad("invalid repository '" + rest +
                 "' (lower-case letters, digits, '.', '_', '-' between slashes)");
    }
    start = end + 1;
  }
  ref.repository = rest;
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

bool looks_like_image_id(std::string_view text) {
  if (text.substr(0, 7) == "sha256:") text.remove_prefix(7);
  if (text.size() < 12 || text.size() > 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool match_pattern(std::string_view pattern, std::string_view name) {
  return match_at(pattern, name);
}

}  // namespace corral::image
