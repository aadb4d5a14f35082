#include "layer.h"

#include <cmath>

namespace fastmlp {

namespace {
std::map<std::string, LayerEntry>& table() {
  static std::map<std::string, LayerEntry> t;  // built at load time, read-only afterwards
  return t;
}
}  // namespace

bool register_layer(const LayerEntry& e) {
  table()[e.kind] = e;
  return true;
}

const LayerEntry* find_layer(const std::string& kind) {
  auto it = table().find(kind);
  return it == table().end() ? nullptr : &it->second;
}

std::vector<std::string> layer_kinds() {
  std::vector<std::string> out;
  for (const auto& kv : table()) out.push_back(kv.first);
  return out;
}

template <>
std::unique_ptr<Layer<float>> make_layer<float>(const Options& o) {
  const LayerEntry* e = find_layer(o.kind);
  if (!e) throw value_error("unknown layer kind '" + o.kind + "'");
  return e->make32(o);
}
template <>
std::unique_ptr<Layer<double>> make_layer<double>(const Options& o) {
  const LayerEntry* e = find_layer(o.kind);
  if (!e) throw value_error("unknown layer kind '" + o.kind + "'");
  return e->make64(o);
}

double Options::number(const std::string& key, double dflt) const {
  auto it = num.find(key);
  return it == num.end() ? dflt : it->second;
}

double Options::number(const std::string& key) const {
  auto it = num.find(key);
  if (it == num.end()) throw value_error(kind + ": missing argument '" + key + "'");
  return it->second;
}

idx Options::integer(const std::string& key, idx dflt) const {
  auto it = num.find(key);
  return it == num.end() ? dflt : integer(key);
}

idx Options::integer(const std::string& key) const {
  auto it = ints.find(key);
  if (it != ints.end()) return it->second;
  const double v = number(key);
  if (!(std::fabs(v) < 9.2e18) || v != std::floor(v))
    throw value_error(kind + ": argument '" + key + "' must be an integer");
  return static_cast<idx>(v);
}

std::string Options::string(const std::string& key, const std::string& dflt) const {
  auto it = str.find(key);
  return it == str.end() ? dflt : it->second;
}

}  // namespace fastmlp
