#include "corral/common/config.hpp"

#include <toml++/toml.h>
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "corral/common/fd.hpp"

namespace corral {

struct ConfigState {
  std::string name;
  toml::table doc;
  std::set<const toml::node*> read;                           // nodes some reader asked for
  std::map<const toml::table*, std::set<std::string>> asked;  // key names asked for, per table
  struct Problem {
    uint32_t line;
    std::string text;
  };
  std::vector<Problem> problems;

  void add(const toml::node* node, std::string text) {
    uint32_t line = node != nullptr ? node->source().begin.line : 0;
    problems.push_back({line, std::move(text)});
  }
  std::string where(const toml::node* node) const {
    if (node != nullptr && node->source().begin.line > 0) {
      return name + ":" + std::to_string(node->source().begin.line);
    }
    return name;
  }
};

namespace {

const char* type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a floating-point number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

// ---------------------------------------------------------------- ConfigTable

std::string ConfigTable::full_key(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

const void* ConfigTable::lookup(std::string_view key) {
  if (table_ == nullptr) return nullptr;
  const auto* table = static_cast<const toml::table*>(table_);
  state_->asked[table].insert(std::string(key));
  const toml::node* node = table->get(key);
  if (node != nullptr) state_->read.insert(node);
  return node;
}

bool ConfigTable::has(std::string_view key) const {
  return table_ != nullptr && static_cast<const toml::table*>(table_)->contains(key);
}

std::vector<std::string> ConfigTable::keys() const {
  std::vector<std::string> out;
  if (table_ == nullptr) return out;
  for (const auto& [k, v] : *static_cast<const toml::table*>(table_)) out.emplace_back(k.str());
  return out;
}

std::string ConfigTable::location(std::string_view key) const {
  const toml::node* node =
      table_ != nullptr ? static_cast<const toml::table*>(table_)->get(key) : nullptr;
  return state_->where(node);
}

void ConfigTable::fail(std::string_view key, std::string_view message) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr && table_ != nullptr) node = static_cast<const toml::table*>(table_);
  state_->add(node, state_->where(node) + ": key '" + full_key(key) + "': " + std::string(message));
}

#define CORRAL_WRONG_TYPE(node, key, expected)                        \
  state_->add(node, state_->where(node) + ": key '" + full_key(key) + \
                        "': expected " expected ", got " + type_name(*node))

bool ConfigTable::get(std::string_view key, bool* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  if (auto v = node->value<bool>(); v && node->is_boolean()) {
    *out = *v;
    return true;
  }
  CORRAL_WRONG_TYPE(node, key, "true or false");
  return false;
}

bool ConfigTable::get(std::string_view key, std::string* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  if (node->is_string()) {
    *out = *node->value<std::string>();
    return true;
  }
  CORRAL_WRONG_TYPE(node, key, "a string");
  return false;
}

bool ConfigTable::get(std::string_view key, double* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  if (node->is_number()) {
    double v = *node->value<double>();
    if (!std::isfinite(v)) {
      fail(key, "must be a finite number");
      return false;
    }
    *out = v;
    return true;
  }
  CORRAL_WRONG_TYPE(node, key, "a number");
  return false;
}

bool ConfigTable::get(std::string_view key, std::vector<std::string>* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  const toml::array* arr = node->as_array();
  if (arr == nullptr) {
    CORRAL_WRONG_TYPE(node, key, "an array of strings");
    return false;
  }
  std::vector<std::string> values;
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& item = *arr->get(i);
    if (!item.is_string()) {
      state_->add(&item, state_->where(&item) + ": key '" + full_key(key) + "[" +
                             std::to_string(i) + "]': expected a string, got " + type_name(item));
      return false;
    }
    values.push_back(*item.value<std::string>());
  }
  *out = std::move(values);
  return true;
}

bool ConfigTable::get_int(std::string_view key, int64_t* out, int64_t min, int64_t max) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  if (!node->is_integer()) {
    CORRAL_WRONG_TYPE(node, key, "an integer");
    return false;
  }
  int64_t v = *node->value<int64_t>();
  if (v < min || v > max) {
    fail(key, "value " + std::to_string(v) + " is out of range; allowed: " + std::to_string(min) +
                  " to " + std::to_string(max));
    return false;
  }
  *out = v;
  return true;
}

bool ConfigTable::get_duration(std::string_view key, std::chrono::milliseconds* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  if (!node->is_string()) {
    CORRAL_WRONG_TYPE(node, key, "a duration string such as \"30s\" or \"500ms\"");
    return false;
  }
  auto d = parse_duration(*node->value<std::string>());
  if (!d) {
    fail(key, d.error().message());
    return false;
  }
  *out = *d;
  return true;
}

bool ConfigTable::get_bytes(std::string_view key, uint64_t* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  if (node->is_integer()) {
    int64_t v = *node->value<int64_t>();
    if (v < 0) {
      fail(key, "a size cannot be negative");
      return false;
    }
    *out = static_cast<uint64_t>(v);
    return true;
  }
  if (!node->is_string()) {
    CORRAL_WRONG_TYPE(node, key, "a size such as \"512MiB\" or an integer number of bytes");
    return false;
  }
  auto b = parse_bytes(*node->value<std::string>());
  if (!b) {
    fail(key, b.error().message());
    return false;
  }
  *out = *b;
  return true;
}

bool ConfigTable::get_enum(std::string_view key, std::string* out,
                           const std::vector<std::string>& allowed) {
  std::string v;
  if (!get(key, &v)) return false;
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
    fail(key, "\"" + v + "\" is not one of " + list);
    return false;
  }
  *out = v;
  return true;
}

bool ConfigTable::get_string_map(std::string_view key, std::map<std::string, std::string>* out) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return false;
  const toml::table* t = node->as_table();
  if (t == nullptr) {
    CORRAL_WRONG_TYPE(node, key, "a table of strings");
    return false;
  }
  std::map<std::string, std::string> values;
  bool ok = true;
  for (const auto& [k, v] : *t) {
    state_->read.insert(&v);
    if (!v.is_string()) {
      state_->add(&v, state_->where(&v) + ": key '" + full_key(key) + "." + std::string(k.str()) +
                          "': expected a string, got " + type_name(v));
      ok = false;
      continue;
    }
    values[std::string(k.str())] = *v.value<std::string>();
  }
  if (ok) *out = std::move(values);
  return ok;
}

ConfigTable ConfigTable::table(std::string_view key) {
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return ConfigTable(state_, nullptr, full_key(key));
  if (!node->is_table()) {
    CORRAL_WRONG_TYPE(node, key, "a table");
    return ConfigTable(state_, nullptr, full_key(key));
  }
  return ConfigTable(state_, node->as_table(), full_key(key));
}

std::vector<ConfigTable> ConfigTable::tables(std::string_view key) {
  std::vector<ConfigTable> out;
  const auto* node = static_cast<const toml::node*>(lookup(key));
  if (node == nullptr) return out;
  const toml::array* arr = node->as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    CORRAL_WRONG_TYPE(node, key, "an array of tables ([[" + full_key(key) + "]])");
    return out;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    out.push_back(ConfigTable(state_, arr->get(i)->as_table(),
                              full_key(key) + "[" + std::to_string(i) + "]"));
  }
  return out;
}

#undef CORRAL_WRONG_TYPE

// ---------------------------------------------------------------- ConfigFile

Result<ConfigFile> ConfigFile::load(const std::filesystem::path& path) {
  auto text = read_file(path, 1 << 20);
  if (!text) {
    return Error(text.error().code(), "cannot read configuration file " + text.error().message() +
                                          " (check the path and its permissions)");
  }
  return parse(*text, path.string());
}

Result<ConfigFile> ConfigFile::parse(std::string_view text, std::string name) {
  auto state = std::make_shared<ConfigState>();
  state->name = std::move(name);
  try {
    state->doc = toml::parse(text, std::string_view(state->name));
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    return Error(EINVAL, state->name + ":" + std::to_string(src.begin.line) + ":" +
                             std::to_string(src.begin.column) +
                             ": TOML syntax error: " + std::string(e.description()));
  }
  return ConfigFile(std::move(state));
}

ConfigTable ConfigFile::root() { return ConfigTable(state_, &state_->doc, ""); }

const std::string& ConfigFile::name() const { return state_->name; }

Result<void> ConfigFile::finish() {
  // Unknown keys: walk the document; every leaf or table that no reader touched (and that does
  // not sit below a touched map-like table) is reported with the closest known sibling name.
  std::vector<ConfigState::Problem> problems = state_->problems;
  std::function<void(const toml::table&, const std::string&)> walk =
      [&](const toml::table& t, const std::string& prefix) {
        const std::set<std::string>& known = state_->asked[&t];
        for (const auto& [k, v] : t) {
          std::string full =
              prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
          if (!state_->read.count(&v)) {
            std::string text = state_->where(&v) + ": unknown key '" + full + "'";
            std::string best;
            size_t best_d = 3;
            for (const auto& cand : known) {
              size_t d = edit_distance(k.str(), cand);
              if (d < best_d) best_d = d, best = cand;
            }
            if (!best.empty())
              text += " (did you mean '" + best + "'?)";
            else
              text += " (remove it, or check the documentation for the valid keys)";
            problems.push_back({v.source().begin.line, text});
            continue;
          }
          if (const toml::table* sub = v.as_table()) walk(*sub, full);
          if (const toml::array* arr = v.as_array()) {
            for (size_t i = 0; i < arr->size(); ++i)
              if (const toml::table* st = arr->get(i)->as_table())
                walk(*st, full + "[" + std::to_string(i) + "]");
          }
        }
      };
  walk(state_->doc, "");
  if (problems.empty()) return {};
  std::stable_sort(problems.begin(), problems.end(),
                   [](const auto& a, const auto& b) { return a.line < b.line; });
  std::string text;
  for (const auto& p : problems) {
    if (!text.empty()) text += "\n";
    text += p.text;
  }
  return Error(EINVAL, text);
}

// ---------------------------------------------------------------- units

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  auto bad = [&] {
    return Error(EINVAL, "\"" + std::string(text) +
                             "\" is not a duration; write a number and a unit, e.g. \"500ms\", "
                             "\"30s\", \"5m\", \"2h\" or \"1d\"");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0 || i == text.size()) return bad();
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(std::string(text.substr(0, i)), &used);
    if (used != i) return bad();
  } catch (...) {
    return bad();
  }
  std::string_view unit = text.substr(i);
  double ms;
  if (unit == "ms")
    ms = number;
  else if (unit == "s")
    ms = number * 1e3;
  else if (unit == "m" || unit == "min")
    ms = number * 60e3;
  else if (unit == "h")
    ms = number * 3600e3;
  else if (unit == "d")
    ms = number * 86400e3;
  else
    return bad();
  if (ms > 1e15) return Error(EINVAL, "\"" + std::string(text) + "\" is too long a duration");
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

Result<uint64_t> parse_bytes(std::string_view text) {
  auto bad = [&] {
    return Error(EINVAL, "\"" + std::string(text) +
                             "\" is not a size; write a number and an optional unit, e.g. "
                             "\"4096\", \"512KiB\", \"64MiB\", \"2GiB\" or \"1.5G\"");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0) return bad();
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(std::string(text.substr(0, i)), &used);
    if (used != i) return bad();
  } catch (...) {
    return bad();
  }
  std::string_view unit = text.substr(i);
  if (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  static const std::pair<std::string_view, double> kUnits[] = {{"", 1},
                                                               {"B", 1},
                                                               {"K", 1e3},
                                                               {"KB", 1e3},
                                                               {"KiB", 1024.0},
                                                               {"M", 1e6},
                                                               {"MB", 1e6},
                                                               {"MiB", 1048576.0},
                                                               {"G", 1e9},
                                                               {"GB", 1e9},
                                                               {"GiB", 1073741824.0},
                                                               {"T", 1e12},
                                                               {"TB", 1e12},
                                                               {"TiB", 1099511627776.0}};
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) {
      double bytes = number * factor;
      if (bytes >= 1.8e19) return Error(EINVAL, "\"" + std::string(text) + "\" is too large");
      return static_cast<uint64_t>(std::llround(bytes));
    }
  }
  return bad();
}

}  // namespace corral
