#include "corral/common/metrics.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <regex>

namespace corral {
namespace {

bool valid_metric_name(const std::string& s) {
  static const std::regex re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  return std::regex_match(s, re);
}
bool valid_label_name(const std::string& s) {
  static const std::regex re("[a-zA-Z_][a-zA-Z0-9_]*");
  return std::regex_match(s, re) && s.rfind("__", 0) != 0;
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string escape_help(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string render_labels(const Labels& labels, const std::string& extra_key = {},
                          const std::string& extra_value = {}) {
  if (labels.empty() && extra_key.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k + "=\"" + escape_label_value(v) + "\"";
  }
  if (!extra_key.empty()) {
    if (!first) out += ',';
    out += extra_key + "=\"" + extra_value + "\"";
  }
  out += '}';
  return out;
}

void atomic_add(std::atomic<double>& a, double by) {
  double cur = a.load();
  while (!a.compare_exchange_weak(cur, cur + by)) {
  }
}

}  // namespace

std::string escape_label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void Counter::inc(double by) {
  if (by < 0) return;  // counters only go up; a negative increment is ignored
  atomic_add(value_, by);
}

void Gauge::add(double by) { atomic_add(value_, by); }

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  std::lock_guard lock(mu_);
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::snapshot(std::vector<uint64_t>* cumulative, double* sum, uint64_t* count) const {
  std::lock_guard lock(mu_);
  cumulative->clear();
  uint64_t acc = 0;
  for (uint64_t c : counts_) {
    acc += c;
    cumulative->push_back(acc);
  }
  *sum = sum_;
  *count = count_;
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& help,
                                                 Kind kind, const Labels& labels) {
  if (!valid_metric_name(name)) {
    std::fprintf(stderr, "corral: invalid metric name '%s'\n", name.c_str());
    std::abort();
  }
  for (const auto& [k, v] : labels) {
    if (!valid_label_name(k) || k == "le") {
      std::fprintf(stderr, "corral: invalid label name '%s' on metric '%s'\n", k.c_str(),
                   name.c_str());
      std::abort();
    }
  }
  auto [it, inserted] = families_.try_emplace(name);
  if (inserted) {
    it->second.kind = kind;
    it->second.help = help;
  } else if (it->second.kind != kind) {
    std::fprintf(stderr, "corral: metric '%s' registered with two different types\n", name.c_str());
    std::abort();
  }
  return it->second;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                  const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& slot = family(name, help, Kind::counter, labels).counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                              const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& slot = family(name, help, Kind::gauge, labels).gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      std::vector<double> bounds, const Labels& labels) {
  std::lock_guard lock(mu_);
  auto& slot = family(name, help, Kind::histogram, labels).histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(std::move(bounds));
  return *slot;
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    static const char* kTypes[] = {"counter", "gauge", "histogram"};
    out += "# HELP " + name + " " + escape_help(fam.help) + "\n";
    out += "# TYPE " + name + " " + kTypes[static_cast<int>(fam.kind)] + "\n";
    for (const auto& [labels, c] : fam.counters)
      out += name + render_labels(labels) + " " + format_number(c->value()) + "\n";
    for (const auto& [labels, g] : fam.gauges)
      out += name + render_labels(labels) + " " + format_number(g->value()) + "\n";
    for (const auto& [labels, h] : fam.histograms) {
      std::vector<uint64_t> cumulative;
      double sum = 0;
      uint64_t count = 0;
      h->snapshot(&cumulative, &sum, &count);
      for (size_t i = 0; i < cumulative.size(); ++i) {
        std::string le = i < h->bounds().size() ? format_number(h->bounds()[i]) : "+Inf";
        out += name + "_bucket" + render_labels(labels, "le", le) + " " +
               std::to_string(cumulative[i]) + "\n";
      }
      out += name + "_sum" + render_labels(labels) + " " + format_number(sum) + "\n";
      out += name + "_count" + render_labels(labels) + " " + std::to_string(count) + "\n";
    }
  }
  return out;
}

}  // namespace corral
