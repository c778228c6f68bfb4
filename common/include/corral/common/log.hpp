#pragma once
// Structured logging. Under systemd (JOURNAL_STREAM names our stderr) records go to journald's
// native protocol with their fields (CORRAL_TASK_ID=..., so `journalctl CORRAL_TASK_ID=t1` works);
// otherwise one line per record on stderr: "LEVEL message key=value ...".

#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace corral::log {

// syslog priorities, so they map 1:1 onto journald's PRIORITY= field.
enum class Level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

struct Field {
  std::string key;  // upper-case journald field name, e.g. "CORRAL_TASK_ID"
  std::string value;
};

struct Record {
  Level level;
  std::string message;
  std::vector<Field> fields;
};

// Records below this level are dropped. Default: info.
void set_level(Level level);
Level level();
// Parses "debug", "info", "notice", "warning", "error"; false for anything else.
bool parse_level(std::string_view text, Level* out);

// Where records go. The default sink picks journald or stderr as described above. Tests install
// their own sink to capture records; pass nullptr to restore the default.
using Sink = std::function<void(const Record&)>;
void set_sink(Sink sink);

// Program name used in SYSLOG_IDENTIFIER and as the stderr prefix.
void set_identifier(std::string identifier);

// A field every journald record of this process carries (e.g. CORRAL_AGENT_ID, so
// `journalctl CORRAL_AGENT_ID=...` finds all of an agent's lines). Setting a key again replaces
// its value; an empty value removes it. Not repeated on stderr lines (the daemon says it once).
void set_process_field(const std::string& key, const std::string& value);
std::vector<Field> process_fields();

void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});
inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::info, m, f);
}
inline void notice(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::notice, m, f);
}
inline void warning(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::warning, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::error, m, f);
}

}  // namespace corral::log
