// api_attack: measures a running host's admin API on loopback.
//
//   api_attack attack --port P [--health-port H] [--stalled 1000] [--garbage 1000] [--seconds 10]
//     probe latency (/healthz, /readyz on H, else on P) and an honest client's
//     rate, first unloaded, then while the stalled-connection flood and the
//     garbage run (bench/http_load.hpp);
//   api_attack load --port P --token T [--clients 4] [--seconds 10]
//     requests/s of POST /api/v1/jobs, then of GET /api/v1/jobs/{id}.
//
// --attack-cpus / --client-cpus pin the attack's threads and the measuring
// threads (probes, honest client) to CPUs of their own, so that on a small
// machine the attacker's own work does not take the CPU the host needs: what
// a real attacker on another machine would not (run the host with taskset on
// the client's CPUs, bench/api.sh JOBHOST_CPUS). --attack-nice N instead
// runs the attack's threads at nice N: they may use every CPU, but only what
// the host, PostgreSQL and the honest client leave idle, so the host still
// pays for every stalled connection and malformed request while the
// generator yields the CPU to it (README: on 2 cores this did not change the
// honest client's share).
//
// Every loop ends by itself; only 127.0.0.0/8 is accepted as a target.
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "http_load.hpp"

using namespace jobhost::load;

namespace {

// Pins the calling thread (and the threads it creates from now on) to `cpus`,
// a list such as "1" or "0,2-3"; an empty list leaves it alone.
void pin_to(const std::string& cpus) {
  if (cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  size_t at = 0;
  while (at < cpus.size()) {
    const size_t comma = std::min(cpus.find(',', at), cpus.size());
    const std::string part = cpus.substr(at, comma - at);
    const size_t dash = part.find('-');
    const int lo = std::stoi(part.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
    if (lo < 0 || hi < lo || hi >= CPU_SETSIZE) throw std::invalid_argument("bad CPU list: " + cpus);
    for (int c = lo; c <= hi; ++c) CPU_SET(c, &set);
    at = comma + 1;
  }
  if (const int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set); rc != 0)
    throw std::runtime_error("cannot pin to CPUs " + cpus + ": " + std::strerror(rc));
}

struct Phase {
  Latencies healthz, readyz;
  Throughput honest;
};

Phase measure(const std::string& addr, int port, int health_port, const std::string& honest_path,
              double honest_per_s, int seconds) {
  Phase out;
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  std::thread h([&] { out.healthz = probe(addr, health_port, "/healthz", milliseconds(20), deadline); });
  std::thread r([&] { out.readyz = probe(addr, health_port, "/readyz", milliseconds(20), deadline); });
  out.honest = closed_loop(
      addr, port, 1, deadline, [&](long) { return get_request(honest_path); }, 200, "127.0.0.1",
      honest_per_s);
  h.join();
  r.join();
  return out;
}

void print(const char* name, const Phase& p) {
  std::printf("%s: /healthz %s\n", name, p.healthz.summary().c_str());
  std::printf("%s: /readyz  %s\n", name, p.readyz.summary().c_str());
  std::printf("%s: honest GET: %.0f req/s (%ld ok, %ld other), latency %s\n", name, p.honest.rate(),
              p.honest.ok, p.honest.other, p.honest.latencies.summary().c_str());
}

// Starts the attack from a thread of its own at nice `nice` (0: as the
// caller), so that its threads inherit the priority and the caller keeps its own.
void start_at_nice(Attack& a, int nice) {
  if (nice == 0) return a.start();
  std::string error;
  std::thread([&] {
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice) != 0) {
      error = std::string("cannot set nice ") + std::to_string(nice) + ": " + std::strerror(errno);
      return;
    }
    a.start();
  }).join();
  if (!error.empty()) throw std::runtime_error(error);
}

int attack(const AttackOptions& o, int health_port, const std::string& honest_path, double honest_per_s,
           int seconds, const std::string& attack_cpus, const std::string& client_cpus, int attack_nice) {
  pin_to(client_cpus);
  if (!attack_cpus.empty() || !client_cpus.empty()) {
    std::printf("cpus: attack on %s, probes and honest client on %s\n", attack_cpus.empty() ? "any" : attack_cpus.c_str(),
                client_cpus.empty() ? "any" : client_cpus.c_str());
  }
  if (attack_nice != 0) std::printf("attack: its threads at nice %d\n", attack_nice);
  const Phase before = measure(o.addr, o.port, health_port, honest_path, honest_per_s, seconds);
  print("unloaded", before);
  Attack a(o);
  // Threads inherit the affinity of the thread that creates them.
  pin_to(attack_cpus.empty() ? client_cpus : attack_cpus);
  start_at_nice(a, attack_nice);
  pin_to(client_cpus.empty() ? attack_cpus : client_cpus);
  // Let the flood build up (the stalled connections are opened 200 at a time).
  const auto ramp = Clock::now() + std::chrono::seconds(5);
  while (a.open_stalled() < o.stalled * 9 / 10 && Clock::now() < ramp)
    std::this_thread::sleep_for(milliseconds(50));
  std::printf("attack: %d stalled connections open after ramp-up\n", a.open_stalled());
  const long garbage_before = a.garbage_sent();
  const auto t0 = Clock::now();
  const Phase during = measure(o.addr, o.port, health_port, honest_path, honest_per_s, seconds);
  const double window = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("attack: %s\n", a.summary().c_str());
  std::printf("attack: %.0f garbage requests/s and %d stalled connections during the measurement\n",
              (a.garbage_sent() - garbage_before) / window, a.open_stalled());
  a.stop();
  print("attacked", during);
  std::printf("honest rate under attack: %.0f %% of unloaded\n",
              before.honest.rate() > 0 ? 100.0 * during.honest.rate() / before.honest.rate() : 0.0);
  return 0;
}

int load(const std::string& addr, int port, const std::string& token, int clients, int seconds) {
  const std::string auth = "Authorization: Bearer " + token + "\r\n";
  const std::string body = R"({"type": "noop", "payload": {}})";
  std::mutex mu;
  std::vector<std::string> ids;
  // Each client collects the ids it created (parsed after the timed part).
  std::vector<std::vector<std::string>> bodies(static_cast<size_t>(clients));
  std::vector<Throughput> posts(static_cast<size_t>(clients));
  {
    const auto deadline = Clock::now() + std::chrono::seconds(seconds);
    std::vector<std::thread> threads;
    const auto t0 = Clock::now();
    for (int i = 0; i < clients; ++i) {
      threads.emplace_back([&, i] {
        Client c(addr, port, "127.0.0.1");
        while (Clock::now() < deadline) {
          const Response r = c.send(post_request("/api/v1/jobs", body, auth));
          if (r.status == 201) {
            ++posts[static_cast<size_t>(i)].ok;
            bodies[static_cast<size_t>(i)].push_back(r.body);
          } else {
            ++posts[static_cast<size_t>(i)].other;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    long ok = 0, other = 0;
    for (const auto& p : posts) ok += p.ok, other += p.other;
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("POST /api/v1/jobs: %.0f req/s over %.1f s with %d clients (%ld created, %ld other)\n",
                ok / s, s, clients, ok, other);
  }
  for (const auto& list : bodies) {
    for (const auto& b : list) ids.push_back(nlohmann::json::parse(b)["id"].get<std::string>());
  }
  if (ids.empty()) {
    std::fprintf(stderr, "no job was created; is --token right?\n");
    return 1;
  }
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  const Throughput gets = closed_loop(
      addr, port, clients, deadline,
      [&](long n) { return get_request("/api/v1/jobs/" + ids[static_cast<size_t>(n) % ids.size()]); }, 200,
      "127.0.0.1");
  std::printf("GET /api/v1/jobs/{id}: %.0f req/s over %.1f s with %d clients (%ld ok, %ld other)\n",
              gets.rate(), gets.seconds, clients, gets.ok, gets.other);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"api_attack: the admin API under load and under attack (loopback only)"};
  app.require_subcommand(1);
  AttackOptions o;
  int health_port = 0, seconds = 10, clients = 4, attack_nice = 0;
  double honest_per_s = 0;
  std::string honest_path = "/api/v1/queues", token, attack_cpus, client_cpus;
  auto* a =
      app.add_subcommand("attack", "probe latency and an honest client's rate, unloaded and under attack");
  a->add_option("--addr", o.addr, "the API's address (127.0.0.0/8)");
  a->add_option("--port", o.port, "api.listen's port")->required();
  a->add_option("--health-port", health_port, "api.health_listen's port (default: --port)");
  a->add_option("--stalled", o.stalled, "connections held with half a request line")->capture_default_str();
  a->add_option("--sources", o.stall_sources, "spread them over 127.0.0.2 .. 127.0.0.(1+N)")
      ->capture_default_str();
  a->add_option("--trickle-ms", o.trickle, "one more byte on each stalled connection this often (0: never)");
  a->add_option("--garbage", o.garbage_per_second, "malformed requests per second")->capture_default_str();
  o.garbage_threads = 4;
  a->add_option("--garbage-threads", o.garbage_threads, "threads sending it, each on fresh connections")
      ->capture_default_str();
  a->add_option("--token", o.token, "the API token, so that some garbage bodies reach the JSON parser");
  a->add_option("--honest-path", honest_path, "what the honest client GETs")->capture_default_str();
  a->add_option("--honest-per-s", honest_per_s, "pace the honest client (0: one request after another)")
      ->capture_default_str();
  a->add_option("--seconds", seconds, "length of each phase")->capture_default_str();
  a->add_option("--attack-cpus", attack_cpus, "pin the attack's threads to these CPUs (e.g. 1)");
  a->add_option("--client-cpus", client_cpus, "pin the probes and the honest client to these CPUs (e.g. 0)");
  a->add_option("--attack-nice", attack_nice, "run the attack's threads at this nice value (0: unchanged; up to 19)")
      ->check(CLI::Range(0, 19));
  auto* l = app.add_subcommand("load", "requests/s of POST /api/v1/jobs and GET /api/v1/jobs/{id}");
  l->add_option("--addr", o.addr, "the API's address (127.0.0.0/8)");
  l->add_option("--port", o.port, "api.listen's port")->required();
  l->add_option("--token", token, "the API token")->required();
  l->add_option("--clients", clients, "keep-alive connections")->capture_default_str();
  l->add_option("--seconds", seconds, "length of each phase")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (seconds < 1 || seconds > 600) {
    std::fprintf(stderr, "--seconds: 1 to 600\n");
    return 2;
  }
  try {
    require_loopback(o.addr);
    if (a->parsed())
      return attack(o, health_port > 0 ? health_port : o.port, honest_path, honest_per_s, seconds, attack_cpus,
                    client_cpus, attack_nice);
    return load(o.addr, o.port, token, clients, seconds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "api_attack: %s\n", e.what());
    return 1;
  }
}
