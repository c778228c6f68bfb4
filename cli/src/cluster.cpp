#include "corral/cli/cluster.hpp"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "corral/common/config.hpp"

namespace corral::cli {
namespace {

using nlohmann::json;

Result<json> call(http::HttpClient& master, const json& body) {
  auto r = master.post("/api/v1", body.dump());
  if (!r) {
    return Error(r.error().code(), "cannot reach the master: " + r.error().message() +
                                       " (is corral-master running? use --master or "
                                       "CORRAL_MASTER)");
  }
  if (r->result() != http::Status::ok) {
    return Error(EPROTO, "the master answered " + body.value("type", std::string("?")) + " with " +
                             std::to_string(r->result_int()) + ": " + r->body());
  }
  if (r->body().empty()) return json::object();
  auto j = json::parse(r->body(), nullptr, false);
  if (j.is_discarded()) return Error(EPROTO, "the master's answer is not JSON");
  return j;
}

// Scalar sums of a Mesos resource list.
std::map<std::string, double> scalars(const json& resources) {
  std::map<std::string, double> out;
  if (!resources.is_array()) return out;
  for (const auto& r : resources) {
    if (r.contains("scalar")) out[r.value("name", "")] += r["scalar"].value("value", 0.0);
  }
  return out;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", std::round(v * 100) / 100);
  return buf;
}

std::string mem(double mb) {
  char buf[32];
  if (mb >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1fG", mb / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%.0fM", mb);
  }
  return buf;
}

// Left-aligned columns sized to their content.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string percent(double used, double total) {
  if (total <= 0) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", 100 * used / total);
  return buf;
}

Result<std::map<std::string, double>> parse_amounts(const std::vector<std::string>& items) {
  std::map<std::string, double> out;
  for (const auto& item : items) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Error(EINVAL, "'" + item + "': expected NAME=AMOUNT, e.g. cpus=4 or mem=8192");
    }
    char* end = nullptr;
    std::string num = item.substr(eq + 1);
    double v = std::strtod(num.c_str(), &end);
    if (num.empty() || end == nullptr || *end != '\0' || v < 0) {
      return Error(EINVAL, "'" + item + "': the amount must be a non-negative number");
    }
    out[item.substr(0, eq)] = v;
  }
  return out;
}

}  // namespace

Result<std::string> render_agents(http::HttpClient& master, bool as_json) {
  CORRAL_ASSIGN_OR_RETURN(json r, call(master, {{"type", "GET_AGENTS"}}));
  const json agents = r["get_agents"].value("agents", json::array());
  if (as_json) return agents.dump(2) + "\n";
  std::vector<std::vector<std::string>> rows = {
      {"ID", "HOSTNAME", "STATE", "CPUS", "MEM", "VERSION"}};
  for (const auto& a : agents) {
    auto total = scalars(a.value("total_resources", json::array()));
    auto used = scalars(a.value("allocated_resources", json::array()));
    std::string state = a.value("active", false) ? "active" : "disconnected";
    if (a.value("deactivated", false)) state = "deactivated";
    rows.push_back({a["agent_info"]["id"].value("value", "?"),
                    a["agent_info"].value("hostname", "?"), state,
                    fmt(used["cpus"]) + "/" + fmt(total["cpus"]),
                    mem(used["mem"]) + "/" + mem(total["mem"]), a.value("version", "")});
  }
  for (const auto& a : r["get_agents"].value("recovered_agents", json::array())) {
    rows.push_back({a["id"].value("value", "?"), a.value("hostname", "?"),
                    "expected (master restarted)", "-", "-", ""});
  }
  return table(rows);
}

Result<std::string> render_frameworks(http::HttpClient& master, bool as_json) {
  CORRAL_ASSIGN_OR_RETURN(json r, call(master, {{"type", "GET_FRAMEWORKS"}}));
  const json fws = r["get_frameworks"].value("frameworks", json::array());
  if (as_json) return fws.dump(2) + "\n";
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "ROLES", "STATE", "CPUS", "MEM", "OFFERS"}};
  for (const auto& f : fws) {
    const json& info = f["framework_info"];
    std::string roles;
    for (const auto& role : info.value("roles", json::array())) {
      roles += (roles.empty() ? "" : ",") + role.get<std::string>();
    }
    if (roles.empty()) roles = info.value("role", "*");
    auto used = scalars(f.value("allocated_resources", json::array()));
    std::string state = f.value("connected", false)   ? "connected"
                        : f.value("recovered", false) ? "expected (master restarted)"
                                                      : "disconnected (failover)";
    rows.push_back({info["id"].value("value", "?"), info.value("name", ""), roles, state,
                    fmt(used["cpus"]), mem(used["mem"]),
                    std::to_string(f.value("offers", json::array()).size())});
  }
  return table(rows);
}

Result<std::string> render_tasks(http::HttpClient& master, bool as_json, bool all) {
  CORRAL_ASSIGN_OR_RETURN(json r, call(master, {{"type", "GET_TASKS"}}));
  const json& t = r["get_tasks"];
  json list = json::array();
  for (const char* key : {"tasks", "unreachable_tasks", "completed_tasks"}) {
    if (!all && std::string(key) != "tasks") continue;
    for (const auto& task : t.value(key, json::array())) list.push_back(task);
  }
  if (as_json) return list.dump(2) + "\n";
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "STATE", "FRAMEWORK", "AGENT", "CPUS", "MEM"}};
  for (const auto& task : list) {
    auto res = scalars(task.value("resources", json::array()));
    rows.push_back({task["task_id"].value("value", "?"), task.value("name", ""),
                    task.value("state", "?"), task["framework_id"].value("value", "?"),
                    task["agent_id"].value("value", "?"), fmt(res["cpus"]), mem(res["mem"])});
  }
  return table(rows);
}

Result<std::string> render_quota(http::HttpClient& master, bool as_json) {
  CORRAL_ASSIGN_OR_RETURN(json r, call(master, {{"type", "GET_QUOTA"}}));
  CORRAL_ASSIGN_OR_RETURN(json roles, call(master, {{"type", "GET_ROLES"}}));
  const json configs = r["get_quota"]["status"].value("configs", json::array());
  if (as_json) return configs.dump(2) + "\n";
  std::map<std::string, std::map<std::string, double>> consumed;
  for (const auto& role : roles["get_roles"].value("roles", json::array())) {
    consumed[role.value("name", "")] = scalars(role.value("resources", json::array()));
  }
  auto amounts = [](const json& m) {
    std::string out;
    for (const auto& [k, v] : m.items()) {
      out += (out.empty() ? "" : " ") + k + "=" + fmt(v.value("value", 0.0));
    }
    return out.empty() ? std::string("-") : out;
  };
  std::vector<std::vector<std::string>> rows = {{"ROLE", "GUARANTEE", "LIMIT", "CONSUMED"}};
  for (const auto& c : configs) {
    std::string role = c.value("role", "?");
    std::string used;
    for (const auto& [k, v] : consumed[role]) used += (used.empty() ? "" : " ") + k + "=" + fmt(v);
    rows.push_back({role, amounts(c.value("guarantees", json::object())),
                    amounts(c.value("limits", json::object())), used.empty() ? "-" : used});
  }
  if (rows.size() == 1)
    return std::string("no quota set (corral quota set ROLE --guarantee cpus=N)\n");
  return table(rows);
}

Result<void> set_quota(http::HttpClient& master, const std::string& role,
                       const std::map<std::string, double>& guarantees,
                       const std::map<std::string, double>& limits) {
  json cfg = {{"role", role}, {"guarantees", json::object()}, {"limits", json::object()}};
  for (const auto& [k, v] : guarantees) cfg["guarantees"][k] = {{"value", v}};
  for (const auto& [k, v] : limits) cfg["limits"][k] = {{"value", v}};
  CORRAL_TRY(call(master, {{"type", "UPDATE_QUOTA"},
                           {"update_quota", {{"quota_configs", json::array({cfg})}}}}));
  return {};
}

Result<std::string> render_top(http::HttpClient& master) {
  auto snap = master.get("/metrics/snapshot");
  if (!snap) {
    return Error(snap.error().code(), "cannot reach the master: " + snap.error().message());
  }
  json m = json::parse(snap->body(), nullptr, false);
  if (m.is_discarded()) return Error(EPROTO, "the master's /metrics/snapshot is not JSON");
  CORRAL_ASSIGN_OR_RETURN(json roles, call(master, {{"type", "GET_ROLES"}}));
  auto num = [&](const char* k) { return m.value(k, 0.0); };
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "cluster   cpus %s/%s (%s)   mem %s/%s (%s)   disk %s/%s\n",
                fmt(num("master/cpus_used")).c_str(), fmt(num("master/cpus_total")).c_str(),
                percent(num("master/cpus_used"), num("master/cpus_total")).c_str(),
                mem(num("master/mem_used")).c_str(), mem(num("master/mem_total")).c_str(),
                percent(num("master/mem_used"), num("master/mem_total")).c_str(),
                mem(num("master/disk_used")).c_str(), mem(num("master/disk_total")).c_str());
  out += line;
  std::snprintf(line, sizeof line,
                "agents    %.0f active, %.0f disconnected, %.0f unreachable, %.0f gone\n",
                num("master/slaves_active"), num("master/slaves_disconnected"),
                num("master/slaves_unreachable"), num("master/slaves_gone"));
  out += line;
  std::snprintf(line, sizeof line, "frameworks %.0f connected, %.0f disconnected   offers %.0f\n",
                num("master/frameworks_connected"), num("master/frameworks_disconnected"),
                num("master/outstanding_offers"));
  out += line;
  std::snprintf(line, sizeof line,
                "tasks     %.0f running, %.0f staging, %.0f starting, %.0f unreachable, %.0f "
                "launched since start\n",
                num("master/tasks_running"), num("master/tasks_staging"),
                num("master/tasks_starting"), num("master/tasks_unreachable"),
                num("master/tasks_launched_total"));
  out += line;
  std::snprintf(line, sizeof line, "allocator %.0f runs, last %.2f ms\n\n",
                num("allocator/allocation_runs"), num("allocator/allocation_run_ms"));
  out += line;
  std::vector<std::vector<std::string>> rows = {
      {"ROLE", "WEIGHT", "FRAMEWORKS", "CPUS", "MEM", "CPU SHARE"}};
  for (const auto& role : roles["get_roles"].value("roles", json::array())) {
    auto res = scalars(role.value("resources", json::array()));
    rows.push_back({role.value("name", "?"), fmt(role.value("weight", 1.0)),
                    std::to_string(role.value("frameworks", json::array()).size()),
                    fmt(res["cpus"]), mem(res["mem"]),
                    percent(res["cpus"], num("master/cpus_total"))});
  }
  out += table(rows);
  return out;
}

std::function<std::optional<int>()> add_cluster_commands(CLI::App& app, const std::string* master) {
  struct Opts {
    bool json = false;
    bool all = false;
    bool once = false;
    std::string interval = "2s";
    std::string role;
    std::vector<std::string> guarantees, limits;
  };
  auto o = std::make_shared<Opts>();
  auto* agents = app.add_subcommand("agents", "list the cluster's agents and their resources");
  agents->add_flag("--json", o->json, "print JSON");
  auto* fws = app.add_subcommand("frameworks", "list the frameworks subscribed to the master");
  fws->add_flag("--json", o->json, "print JSON");
  auto* tasks = app.add_subcommand("tasks", "list tasks (running ones; --all for every task)");
  tasks->add_flag("--json", o->json, "print JSON");
  tasks->add_flag("-a,--all", o->all, "also completed and unreachable tasks");
  auto* quota = app.add_subcommand("quota", "show role quota (guarantee, limit, consumption)");
  quota->add_flag("--json", o->json, "print JSON");
  auto* qset = quota->add_subcommand("set", "set a role's quota (replaces it)");
  qset->add_option("role", o->role, "the role, e.g. eng/web")->required();
  qset->add_option("--guarantee", o->guarantees, "NAME=AMOUNT, e.g. cpus=4 (repeatable)");
  qset->add_option("--limit", o->limits, "NAME=AMOUNT, e.g. mem=16384 (repeatable)");
  auto* top = app.add_subcommand("top", "live cluster usage (refreshes until Ctrl-C)");
  top->add_option("--interval", o->interval, "refresh interval, e.g. 2s");
  top->add_flag("--once", o->once, "print one screen and exit");

  return [=]() -> std::optional<int> {
    if (!agents->parsed() && !fws->parsed() && !tasks->parsed() && !quota->parsed() &&
        !top->parsed()) {
      return std::nullopt;
    }
    auto client = http::HttpClient::create(*master);
    if (!client) {
      std::fprintf(stderr, "corral: bad master address '%s': %s\n", master->c_str(),
                   client.error().message().c_str());
      return 64;
    }
    auto show = [&](Result<std::string> r) {
      if (!r) {
        std::fprintf(stderr, "corral: %s: %s\n", master->c_str(), r.error().message().c_str());
        return 69;
      }
      std::fputs(r->c_str(), stdout);
      return 0;
    };
    if (agents->parsed()) return show(render_agents(*client, o->json));
    if (fws->parsed()) return show(render_frameworks(*client, o->json));
    if (tasks->parsed()) return show(render_tasks(*client, o->json, o->all));
    if (qset->parsed()) {
      auto g = parse_amounts(o->guarantees);
      auto l = parse_amounts(o->limits);
      if (!g || !l) {
        std::fprintf(stderr, "corral: quota set: %s\n",
                     (!g ? g.error() : l.error()).message().c_str());
        return 64;
      }
      auto done = set_quota(*client, o->role, *g, *l);
      if (!done) {
        std::fprintf(stderr, "corral: %s\n", done.error().message().c_str());
        return 69;
      }
      return 0;
    }
    if (quota->parsed()) return show(render_quota(*client, o->json));
    auto interval = parse_duration(o->interval);
    if (!interval || interval->count() <= 0) {
      std::fprintf(stderr, "corral: top --interval '%s': expected a duration such as 2s\n",
                   o->interval.c_str());
      return 64;
    }
    while (true) {
      auto screen = render_top(*client);
      if (!screen) return show(std::move(screen));
      if (!o->once) std::fputs("\033[H\033[2J", stdout);
      std::fputs(screen->c_str(), stdout);
      std::fflush(stdout);
      if (o->once) return 0;
      std::this_thread::sleep_for(*interval);
    }
  };
}

}  // namespace corral::cli
