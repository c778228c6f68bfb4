#pragma once
// TOML configuration and policy files.
//
// A file is loaded once, then read key by key into typed fields. Every problem — a syntax error,
// an unknown key, a value of the wrong type, a value out of range — becomes an error that names
// the file, the line and the full key, e.g.
//   /etc/corral/agent.toml:7: key 'resources.cpus': expected a number, got a string
//   /etc/corral/agent.toml:3: unknown key 'prot' (did you mean 'port'?)
// Readers record errors and keep going so one run reports every mistake; ConfigFile::finish()
// returns them all (and flags every key nobody read as unknown).
//
//   CORRAL_ASSIGN_OR_RETURN(auto file, ConfigFile::load("/etc/corral/agent.toml"));
//   ConfigTable root = file.root();
//   root.get("work_dir", &cfg.work_dir);
//   root.get_int("port", &cfg.port, 1, 65535);
//   ConfigTable http = root.table("http");
//   http.get_duration("idle_timeout", &cfg.idle_timeout);
//   CORRAL_TRY(file.finish());

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "corral/common/result.hpp"

namespace corral {

struct ConfigState;  // the parsed document and the error list, shared by all tables of a file

class ConfigTable {
 public:
  // Each getter leaves *out untouched when the key is absent (so callers set defaults first)
  // and returns whether the key was present and valid.
  bool get(std::string_view key, bool* out);
  bool get(std::string_view key, std::string* out);
  bool get(std::string_view key, double* out);
  bool get(std::string_view key, std::vector<std::string>* out);
  bool get_int(std::string_view key, int64_t* out, int64_t min = INT64_MIN,
               int64_t max = INT64_MAX);
  template <typename Int>
  bool get_int(std::string_view key, Int* out, int64_t min, int64_t max) {
    int64_t v = static_cast<int64_t>(*out);
    if (!get_int(key, &v, min, max)) return false;
    *out = static_cast<Int>(v);
    return true;
  }
  // A duration written as a string with a unit: "250ms", "30s", "5m", "2h", "1d".
  bool get_duration(std::string_view key, std::chrono::milliseconds* out);
  // A size in bytes: an integer, or a string with a unit: "512KiB", "64MiB", "2GiB", "1.5G".
  bool get_bytes(std::string_view key, uint64_t* out);
  // A string that must be one of `allowed`.
  bool get_enum(std::string_view key, std::string* out, const std::vector<std::string>& allowed);
  // Each entry of a table of strings (e.g. [attributes] rack = "r1").
  bool get_string_map(std::string_view key, std::map<std::string, std::string>* out);

  bool has(std::string_view key) const;
  // A nested table. Absent -> an empty table (reads leave defaults). Not a table -> an error.
  ConfigTable table(std::string_view key);
  // An array of tables ([[rule]] ...). Absent -> empty.
  std::vector<ConfigTable> tables(std::string_view key);
  // Keys present in this table, in file order.
  std::vector<std::string> keys() const;

  // "file:line" of `key` in this table ("file" alone if the key is absent).
  std::string location(std::string_view key) const;

  // Records a custom validation error located at `key` (file:line: key '<path>': message).
  void fail(std::string_view key, std::string_view message);

  // Full dotted path of this table ("" for the root).
  const std::string& path() const { return path_; }

 private:
  friend class ConfigFile;
  ConfigTable(std::shared_ptr<ConfigState> state, const void* table, std::string path)
      : state_(std::move(state)), table_(table), path_(std::move(path)) {}
  const void* lookup(std::string_view key);  // marks the key as read
  std::string full_key(std::string_view key) const;

  std::shared_ptr<ConfigState> state_;
  const void* table_;  // const toml::table*, nullptr for an absent table
  std::string path_;
};

class ConfigFile {
 public:
  // Loads and parses a file. Missing file, unreadable file, oversized file (> 1 MiB) and TOML
  // syntax errors are returned here, naming file (and line for syntax errors).
  static Result<ConfigFile> load(const std::filesystem::path& path);
  // Parses text as if it were the file `name` (for tests and for policy text from an API).
  static Result<ConfigFile> parse(std::string_view text, std::string name);

  ConfigTable root();
  // All errors recorded by readers, plus every key that no reader asked for ("unknown key").
  // Errors are joined one per line, in file order.
  Result<void> finish();

  const std::string& name() const;

 private:
  explicit ConfigFile(std::shared_ptr<ConfigState> state) : state_(std::move(state)) {}
  std::shared_ptr<ConfigState> state_;
};

// "250ms" -> 250ms; errors explain the accepted syntax.
Result<std::chrono::milliseconds> parse_duration(std::string_view text);
// "64MiB" -> 67108864; plain digits are bytes; K/M/G/T are powers of 1000, KiB/MiB/... of 1024.
Result<uint64_t> parse_bytes(std::string_view text);

}  // namespace corral
