// Writes benchmarks/RESULTS.md from Google Benchmark JSON files.
//
//   lola_write_results OUT.md RUN.json [RUN.json ...]
//
// Benchmark names are <area>/<variant>/<shape>. Variants whose name starts with "alt" are the
// obvious alternatives; every other row gets a speed-up column: the alternative's time for the same
// area and shape divided by its own.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct row {
  std::string area, variant, shape;
  double seconds = 0, bytes_per_second = 0, floor_ratio = 0;
};

double to_seconds(double value, const std::string& unit) {
  if (unit == "ns") return value * 1e-9;
  if (unit == "us") return value * 1e-6;
  if (unit == "ms") return value * 1e-3;
  return value;
}

std::string format_time(double seconds) {
  char buffer[64];
  if (seconds < 1e-3)
    std::snprintf(buffer, sizeof buffer, "%.2f µs", seconds * 1e6);
  else if (seconds < 1)
    std::snprintf(buffer, sizeof buffer, "%.3f ms", seconds * 1e3);
  else
    std::snprintf(buffer, sizeof buffer, "%.3f s", seconds);
  return buffer;
}

std::string format_number(double value, const char* format) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: lola_write_results OUT.md RUN.json [RUN.json ...]\n";
    return 2;
  }
  std::vector<row> rows;
  nlohmann::json context;
  for (int i = 2; i < argc; ++i) {
    std::ifstream in(argv[i]);
    if (!in) {
      std::cerr << "lola_write_results: cannot read " << argv[i] << "\n";
      return 1;
    }
    nlohmann::json run;
    try {
      run = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      std::cerr << "lola_write_results: " << argv[i] << ": " << e.what() << "\n";
      return 1;
    }
    if (context.is_null()) context = run.value("context", nlohmann::json::object());
    for (const auto& b : run.at("benchmarks")) {
      if (b.value("run_type", "iteration") != "iteration") continue;
      const std::string name = b.at("name");
      const auto first = name.find('/'), second = name.find('/', first + 1);
      if (first == std::string::npos || second == std::string::npos) continue;
      row r;
      r.area = name.substr(0, first);
      r.variant = name.substr(first + 1, second - first - 1);
      r.shape = name.substr(second + 1);
      // Google Benchmark's own suffixes (…/real_time, …/iterations:N) are not part of the shape.
      for (const char* suffix : {"/real_time", "/process_time"})
        if (const auto at = r.shape.rfind(suffix); at != std::string::npos && at + std::strlen(suffix) == r.shape.size())
          r.shape.erase(at);
      r.seconds = to_seconds(b.at("real_time").get<double>(), b.value("time_unit", "ns"));
      r.bytes_per_second = b.value("bytes_per_second", 0.0);
      r.floor_ratio = b.value("floor_ratio", 0.0);
      rows.push_back(r);
    }
  }

  std::map<std::string, double> alternative;  // area/shape → fastest alternative's time
  for (const auto& r : rows)
    if (r.variant.rfind("alt", 0) == 0) {
      auto& t = alternative[r.area + "/" + r.shape];
      t = t == 0 ? r.seconds : std::min(t, r.seconds);
    }

  std::ostringstream out;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  out << "# lola benchmark results\n\n"
      << "Written by `scripts/bench.sh` on " << date << " (UTC). Do not edit by hand.\n\n"
      << "Machine: " << context.value("host_name", std::string("?")) << ", "
      << context.value("num_cpus", 0) << " CPUs at " << context.value("mhz_per_cpu", 0)
      << " MHz. lola built Release with -march=native; one thread unless the shape ends in _tN (N threads).\n\n"
      << "Columns: time per operation; GB/s = bytes the operation must move ÷ time; floor_ratio = "
         "time ÷ the time to stream the same bytes once in the same run (1.0 is the limit); "
         "speed-up = the alternative's time ÷ this row's time, for the same shape.\n\n";
  std::string area;
  for (const auto& r : rows) {
    if (r.area != area) {
      area = r.area;
      out << "\n## " << area << "\n\n"
          << "| variant | shape | time | GB/s | floor_ratio | speed-up |\n"
          << "|---|---|---:|---:|---:|---:|\n";
    }
    std::string speedup = "—";
    const auto it = alternative.find(r.area + "/" + r.shape);
    if (r.variant.rfind("alt", 0) != 0 && it != alternative.end())
      speedup = format_number(it->second / r.seconds, "%.1f×");
    out << "| " << r.variant << " | " << r.shape << " | " << format_time(r.seconds) << " | "
        << format_number(r.bytes_per_second / 1e9, "%.2f") << " | "
        << format_number(r.floor_ratio, "%.2f") << " | " << speedup << " |\n";
  }
  std::ofstream file(argv[1]);
  file << out.str();
  if (!file) {
    std::cerr << "lola_write_results: cannot write " << argv[1] << "\n";
    return 1;
  }
  std::cout << "wrote " << argv[1] << " (" << rows.size() << " rows)\n";
  return 0;
}
