#pragma once
// Image references as Docker spells them: [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST].
//   busybox                      -> docker.io/library/busybox:latest
//   127.0.0.1:5000/team/app:1.2  -> registry 127.0.0.1:5000, repository team/app, tag 1.2
//   app@sha256:...               -> pinned by manifest digest

#include <optional>
#include <string>
#include <string_view>

#include "corral/common/result.hpp"

namespace corral::image {

struct Reference {
  std::string registry;    // "docker.io", "127.0.0.1:5000", "registry.example:443"
  std::string repository;  // "library/busybox", "team/app"
  std::string tag;         // "latest" unless given (empty when only a digest was given)
  std::string digest;      // "sha256:..." when pinned

  // Canonical "registry/repository:tag" (or "@digest" when there is no tag).
  std::string to_string() const;
  // "registry/repository" (what policy patterns match against, with the tag or digest).
  std::string name() const { return registry + "/" + repository; }
};

// Parses and normalises a reference; EINVAL naming the problem otherwise.
Result<Reference> parse_reference(std::string_view text);

// True if `text` looks like an image id: "sha256:<64 hex>" or at least 12 hex digits of one.
bool looks_like_image_id(std::string_view text);

// Shell-style match of `name` against `pattern`: '*' matches any run of characters except '/',
// "**" any run including '/', '?' one character. Used by the [images] policy.
bool match_pattern(std::string_view pattern, std::string_view name);

}  // namespace corral::image
