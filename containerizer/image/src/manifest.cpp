#include "corral/image/manifest.hpp"

#include "corral/image/digest.hpp"

namespace corral::image {
namespace {
using nlohmann::json;

Result<json> parse_json(std::string_view text, const std::string& what) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(EBADMSG, what + " is not a JSON object");
  }
  return j;
}

Result<Descriptor> parse_descriptor(const json& j, const std::string& where) {
  if (!j.is_object()) return Error(EBADMSG, where + ": not an object");
  Descriptor d;
  if (!j.contains("digest") || !j["digest"].is_string()) {
    return Error(EBADMSG, where + ".digest: missing");
  }
  d.digest = j["digest"].get<std::string>();
  if (auto r = check_digest(d.digest, where + ".digest"); !r) {
    return Error(EBADMSG, r.error().message());
  }
  if (!j.contains("size") || !j["size"].is_number_integer() || j["size"].get<int64_t>() < 0) {
    return Error(EBADMSG, where + ".size: missing or negative");
  }
  d.size = j["size"].get<int64_t>();
  if (j.contains("mediaType") && j["mediaType"].is_string()) {
    d.media_type = j["mediaType"].get<std::string>();
  }
  if (j.contains("platform") && j["platform"].is_object()) {
    const auto& p = j["platform"];
    d.platform.os = p.value("os", "");
    d.platform.architecture = p.value("architecture", "");
    d.platform.variant = p.value("variant", "");
  }
  if (j.contains("annotations") && j["annotations"].is_object()) {
    for (const auto& [k, v] : j["annotations"].items()) {
      if (v.is_string()) d.annotations[k] = v.get<std::string>();
    }
  }
  return d;
}

std::vector<std::string> string_list(const json& j) {
  std::vector<std::string> out;
  if (j.is_array()) {
    for (const auto& v : j) {
      if (v.is_string()) out.push_back(v.get<std::string>());
    }
  }
  return out;
}

}  // namespace

std::string media::manifest_accept() {
  return std::string(kOciIndex) + ", " + kOciManifest + ", " + kDockerList + ", " + kDockerManifest;
}

std::string Platform::to_string() const {
  return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

Result<Platform> parse_platform(std::string_view text) {
  Platform p;
  std::string s(text);
  auto a = s.find('/');
  if (a == std::string::npos || a == 0 || a + 1 == s.size()) {
    return Error(EINVAL, "platform '" + s + "': expected OS/ARCH[/VARIANT], e.g. linux/amd64");
  }
  p.os = s.substr(0, a);
  auto b = s.find('/', a + 1);
  p.architecture = s.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
  if (b != std::string::npos) p.variant = s.substr(b + 1);
  return p;
}

bool is_index_type(std::string_view t) { return t == media::kDockerList || t == media::kOciIndex; }
bool is_manifest_type(std::string_view t) {
  return t == media::kDockerManifest || t == media::kOciManifest;
}

Result<std::string> document_media_type(const json& doc) {
  if (doc.contains("mediaType") && doc["mediaType"].is_string()) {
    std::string t = doc["mediaType"].get<std::string>();
    if (is_index_type(t) || is_manifest_type(t)) return t;
    return Error(EPROTONOSUPPORT,
                 "unsupported manifest media type '" + t +
                     "' (supported: Docker schema 2 manifest and list, OCI manifest and index)");
  }
  if (doc.contains("schemaVersion") && doc["schemaVersion"] == 1) {
    return Error(EPROTONOSUPPORT,
                 "Docker schema 1 manifests are not supported; push the image again with a "
                 "current client");
  }
  if (doc.contains("manifests")) return std::string(media::kOciIndex);
  if (doc.contains("layers") && doc.contains("config")) return std::string(media::kOciManifest);
  return Error(EBADMSG, "the document is neither an image manifest nor an index");
}

Result<Manifest> parse_manifest(std::string_view text) {
  CORRAL_ASSIGN_OR_RETURN(json j, parse_json(text, "the manifest"));
  CORRAL_ASSIGN_OR_RETURN(std::string type, document_media_type(j));
  if (!is_manifest_type(type)) return Error(EBADMSG, "expected an image manifest, got " + type);
  Manifest m;
  m.media_type = type;
  if (!j.contains("config")) return Error(EBADMSG, "manifest.config: missing");
  CORRAL_ASSIGN_OR_RETURN(m.config, parse_descriptor(j["config"], "manifest.config"));
  if (!j.contains("layers") || !j["layers"].is_array()) {
    return Error(EBADMSG, "manifest.layers: missing");
  }
  for (size_t i = 0; i < j["layers"].size(); ++i) {
    CORRAL_ASSIGN_OR_RETURN(
        Descriptor d,
        parse_descriptor(j["layers"][i], "manifest.layers[" + std::to_string(i) + "]"));
    if (d.media_type.find("nondistributable") != std::string::npos ||
        d.media_type.find("foreign") != std::string::npos) {
      return Error(EPROTONOSUPPORT, "manifest.layers[" + std::to_string(i) +
                                        "]: foreign (non-distributable) layers are not supported");
    }
    m.layers.push_back(std::move(d));
  }
  return m;
}

Result<Index> parse_index(std::string_view text) {
  CORRAL_ASSIGN_OR_RETURN(json j, parse_json(text, "the index"));
  CORRAL_ASSIGN_OR_RETURN(std::string type, document_media_type(j));
  if (!is_index_type(type)) return Error(EBADMSG, "expected an image index, got " + type);
  Index idx;
  idx.media_type = type;
  if (!j["manifests"].is_array()) return Error(EBADMSG, "index.manifests: not an array");
  for (size_t i = 0; i < j["manifests"].size(); ++i) {
    CORRAL_ASSIGN_OR_RETURN(
        Descriptor d,
        parse_descriptor(j["manifests"][i], "index.manifests[" + std::to_string(i) + "]"));
    idx.manifests.push_back(std::move(d));
  }
  return idx;
}

Result<ImageConfig> parse_image_config(std::string_view text) {
  CORRAL_ASSIGN_OR_RETURN(json j, parse_json(text, "the image config"));
  ImageConfig c;
  c.os = j.value("os", "");
  c.architecture = j.value("architecture", "");
  if (j.contains("config") && j["config"].is_object()) {
    const auto& cc = j["config"];
    if (cc.contains("Entrypoint")) c.entrypoint = string_list(cc["Entrypoint"]);
    if (cc.contains("Cmd")) c.cmd = string_list(cc["Cmd"]);
    if (cc.contains("Env")) c.env = string_list(cc["Env"]);
    if (cc.contains("WorkingDir") && cc["WorkingDir"].is_string()) {
      c.working_dir = cc["WorkingDir"].get<std::string>();
    }
    if (cc.contains("User") && cc["User"].is_string()) c.user = cc["User"].get<std::string>();
    if (cc.contains("ExposedPorts") && cc["ExposedPorts"].is_object()) {
      for (const auto& [k, v] : cc["ExposedPorts"].items()) c.exposed_ports.push_back(k);
    }
    if (cc.contains("Labels") && cc["Labels"].is_object()) {
      for (const auto& [k, v] : cc["Labels"].items()) {
        if (v.is_string()) c.labels[k] = v.get<std::string>();
      }
    }
  }
  if (!j.contains("rootfs") || !j["rootfs"].is_object() || !j["rootfs"].contains("diff_ids") ||
      !j["rootfs"]["diff_ids"].is_array()) {
    return Error(EBADMSG, "image config: rootfs.diff_ids missing");
  }
  for (const auto& d : j["rootfs"]["diff_ids"]) {
    if (!d.is_string()) return Error(EBADMSG, "image config: rootfs.diff_ids has a non-string");
    std::string id = d.get<std::string>();
    if (auto r = check_digest(id, "image config rootfs.diff_ids entry"); !r) {
      return Error(EBADMSG, r.error().message());
    }
    c.diff_ids.push_back(std::move(id));
  }
  return c;
}

Result<Descriptor> select_platform(const Index& index, const Platform& want) {
  std::string have;
  for (const auto& d : index.manifests) {
    if (d.platform.os == want.os && d.platform.architecture == want.architecture &&
        (want.variant.empty() || d.platform.variant == want.variant)) {
      return d;
    }
    if (d.platform.os.empty() && index.manifests.size() == 1) return d;  // unlabelled single
    have += (have.empty() ? "" : ", ") + d.platform.to_string();
  }
  return Error(ENOENT, "the image has no variant for " + want.to_string() +
                           " (it has: " + (have.empty() ? "none" : have) + ")");
}

nlohmann::json to_json(const ImageConfig& c) {
  return json{{"Entrypoint", c.entrypoint},  {"Cmd", c.cmd},   {"Env", c.env},
              {"WorkingDir", c.working_dir}, {"User", c.user}, {"ExposedPorts", c.exposed_ports},
              {"Labels", c.labels},          {"os", c.os},     {"architecture", c.architecture},
              {"diff_ids", c.diff_ids}};
}

Result<ImageConfig> image_config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return Error(EBADMSG, "image config record is not an object");
  ImageConfig c;
  c.entrypoint = string_list(j.value("Entrypoint", json::array()));
  c.cmd = string_list(j.value("Cmd", json::array()));
  c.env = string_list(j.value("Env", json::array()));
  c.working_dir = j.value("WorkingDir", "");
  c.user = j.value("User", "");
  c.exposed_ports = string_list(j.value("ExposedPorts", json::array()));
  if (j.contains("Labels") && j["Labels"].is_object()) {
    for (const auto& [k, v] : j["Labels"].items()) {
      if (v.is_string()) c.labels[k] = v.get<std::string>();
    }
  }
  c.os = j.value("os", "");
  c.architecture = j.value("architecture", "");
  c.diff_ids = string_list(j.value("diff_ids", json::array()));
  return c;
}

std::string manifest_to_json(const Manifest& m) {
  json layers = json::array();
  for (const auto& l : m.layers) {
    layers.push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}});
  }
  json j = {{"schemaVersion", 2},
            {"mediaType", media::kOciManifest},
            {"config",
             {{"mediaType", m.config.media_type.empty() ? media::kOciConfig : m.config.media_type},
              {"digest", m.config.digest},
              {"size", m.config.size}}},
            {"layers", layers}};
  return j.dump();
}

}  // namespace corral::image
