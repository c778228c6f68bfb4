#pragma once
// Helpers shared by the network root tests (network_roottest, network_agent_roottest): what a
// test checks in its own namespaces after tasks come and go.

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace corral::network::testing {

// Fixed test-only commands (no outside input) run in the test's own namespaces.
inline std::string sh(const std::string& command) {
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return "popen failed";
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// Corral's host-side veth ends ("cv...") in this namespace.
inline std::vector<std::string> veths() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/sys/class/net")) {
    std::string n = e.path().filename().string();
    if (n.rfind("cv", 0) == 0) out.push_back(n);
  }
  return out;
}

// Elements of Corral's port map and egress set, as `nft` prints them ("" when empty).
inline std::string nft_elements() {
  std::string out = sh("nft list table ip corral");
  std::string elements;
  size_t pos = 0;
  while ((pos = out.find("elements = {", pos)) != std::string::npos) {
    size_t end = out.find('}', pos);
    elements += out.substr(pos, end - pos + 1) + "\n";
    pos = end;
  }
  return elements;
}

}  // namespace corral::network::testing
