#include "corral/common/log.hpp"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace corral::log {
namespace {

std::atomic<Level> g_level{Level::info};
std::mutex g_mutex;  // guards g_sink, g_identifier, and serialises stderr lines
Sink g_sink;
std::string g_identifier = "corral";
std::vector<Field> g_process_fields;  // guarded by g_mutex

const char* level_name(Level level) {
  switch (level) {
    case Level::error:
      return "ERROR";
    case Level::warning:
      return "WARN";
    case Level::notice:
      return "NOTICE";
    case Level::info:
      return "INFO";
    case Level::debug:
      return "DEBUG";
  }
  return "?";
}

// systemd sets JOURNAL_STREAM=<dev>:<ino> when stderr is connected to the journal; only then
// is the native protocol the right destination (stderr may have been redirected since).
bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (env == nullptr) {
    return false;
  }
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  if (std::sscanf(env, "%llu:%llu", &dev, &ino) != 2) {
    return false;
  }
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) {
    return false;
  }
  return st.st_dev == dev && st.st_ino == ino;
}

bool needs_quoting(const std::string& value) {
  if (value.empty()) {
    return true;
  }
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\t') {
      return true;
    }
  }
  return false;
}

void write_journal(const Record& record, const std::string& identifier) {
  std::vector<std::string> items;
  items.reserve(record.fields.size() + 3);
  items.push_back("MESSAGE=" + record.message);
  items.push_back("PRIORITY=" + std::to_string(static_cast<int>(record.level)));
  items.push_back("SYSLOG_IDENTIFIER=" + identifier);
  for (const Field& f : record.fields) {
    items.push_back(f.key + "=" + f.value);
  }
  for (const Field& f : g_process_fields) {
    bool own = false;  // a record's own value of the same key wins
    for (const Field& r : record.fields) own = own || r.key == f.key;
    if (!own) items.push_back(f.key + "=" + f.value);
  }
  std::vector<iovec> iov(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    iov[i].iov_base = items[i].data();
    iov[i].iov_len = items[i].size();
  }
  if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) {
    std::fprintf(stderr, "%s: %s\n", level_name(record.level), record.message.c_str());
  }
}

void write_stderr(const Record& record, const std::string& identifier) {
  std::string line;
  line.reserve(128);
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm parts{};
  gmtime_r(&ts.tv_sec, &parts);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", parts.tm_year + 1900,
                parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
                ts.tv_nsec / 1000000);
  line += stamp;
  line += ' ';
  line += identifier;
  line += ' ';
  line += level_name(record.level);
  line += ' ';
  line += record.message;
  for (const Field& f : record.fields) {
    line += ' ';
    line += f.key;
    line += '=';
    if (needs_quoting(f.value)) {
      line += '"';
      for (char c : f.value) {
        if (c == '"' || c == '\\') line += '\\';
        if (c == '\n') {
          line += "\\n";
          continue;
        }
        line += c;
      }
      line += '"';
    } else {
      line += f.value;
    }
  }
  line += '\n';
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void set_level(Level level) { g_level.store(level); }
Level level() { return g_level.load(); }

bool parse_level(std::string_view text, Level* out) {
  struct Named {
    std::string_view name;
    Level level;
  };
  static constexpr Named kNames[] = {{"debug", Level::debug},   {"info", Level::info},
                                     {"notice", Level::notice}, {"warning", Level::warning},
                                     {"warn", Level::warning},  {"error", Level::error}};
  for (const auto& n : kNames) {
    if (n.name == text) {
      *out = n.level;
      return true;
    }
  }
  return false;
}

void set_sink(Sink sink) {
  std::lock_guard lock(g_mutex);
  g_sink = std::move(sink);
}

void set_identifier(std::string identifier) {
  std::lock_guard lock(g_mutex);
  g_identifier = std::move(identifier);
}

void set_process_field(const std::string& key, const std::string& value) {
  std::lock_guard lock(g_mutex);
  for (auto it = g_process_fields.begin(); it != g_process_fields.end(); ++it) {
    if (it->key == key) {
      g_process_fields.erase(it);
      break;
    }
  }
  if (!value.empty()) g_process_fields.push_back(Field{key, value});
}

std::vector<Field> process_fields() {
  std::lock_guard lock(g_mutex);
  return g_process_fields;
}

void write(Level lvl, std::string_view message, std::initializer_list<Field> fields) {
  if (static_cast<int>(lvl) > static_cast<int>(g_level.load())) {
    return;
  }
  Record record{lvl, std::string(message), std::vector<Field>(fields)};
  static const bool journal = stderr_is_journal();
  std::lock_guard lock(g_mutex);
  if (g_sink) {
    g_sink(record);
  } else if (journal) {
    write_journal(record, g_identifier);
  } else {
    write_stderr(record, g_identifier);
  }
}

}  // namespace corral::log
