// api.cpp: the admin HTTP API's routes, on HttpServer (see api.hpp).
#include "api.hpp"

#include <algorithm>
#include <limits>
#include <set>
#include <type_traits>
#include <stdexcept>
#include <vector>

#include <spdlog/spdlog.h>

#include "access.hpp"
#include "admin.hpp"
#include "audit.hpp"
#include "batches.hpp"
#include <jobhost_plugins/unsubscribe_token.hpp>
#include "job_search.hpp"
#include "job_state.hpp"
#include "http_server.hpp"
#include "metrics.hpp"
#include "flow_dispatch.hpp"
#include "pause.hpp"
#include "pg.hpp"
#include "readiness.hpp"
#include "redis.hpp"
#include "routing.hpp"

namespace jobhost {

// host/dashboard.html, embedded at build time (host/embed_text.cmake).
extern const char* const kDashboardHtml;

namespace {

constexpr const char* kJson = "application/json";
// Deeper JSON is refused before it is built (no request needs more than a few levels).
constexpr int kMaxJsonDepth = 64;
const std::string kId = "([0-9A-Za-z-]+)";
// A queue (job type) name in a path.
const std::string kQueue = "([0-9A-Za-z_.:-]{1,200})";

// An error the client caused: status, message, and the field at fault.
struct HttpError : std::runtime_error {
  HttpError(int s, const std::string& message, std::string f = {})
      : std::runtime_error(message), status(s), field(std::move(f)) {}
  int status;
  std::string field;
};

// Text from the request (a queue name, a path) may not be UTF-8: replaced, not thrown.
void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), kJson);
}

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& field = {}) {
  nlohmann::json body{{"error", message}};
  if (!field.empty()) body["field"] = field;
  send_json(res, status, body);
}

std::pair<std::string, int> split_listen(const std::string& key, const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error(key + ": expected HOST:PORT, got " + listen);
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    throw std::runtime_error(key + ": the port of " + listen + " is not a number");
  }
  if (port < 0 || port > 65535) throw std::runtime_error(key + ": port out of range in " + listen);
  return {host, port};
}

// Strict JSON: UTF-8 (the parser checks it), at most kMaxJsonDepth deep, and
// no key twice in one object (which value would count is anyone's guess).
nlohmann::json parse_body(const httplib::Request& req) {
  if (req.body.empty()) throw HttpError(400, "the request body is empty; expected a JSON object");
  std::vector<std::set<std::string>> open_objects;
  const auto strict = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (depth > kMaxJsonDepth) {
      throw HttpError(400,
                      "the request body is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    }
    if (event == Event::object_start) open_objects.emplace_back();
    if (event == Event::object_end && !open_objects.empty()) open_objects.pop_back();
    if (event == Event::key && !open_objects.back().insert(parsed.get<std::string>()).second) {
      throw HttpError(400, parsed.get<std::string>() + ": given twice in one object",
                      parsed.get<std::string>());
    }
    return true;
  };
  nlohmann::json body;
  try {
    body = nlohmann::json::parse(req.body, strict);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e400
    throw HttpError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw HttpError(400, "the request body must be a JSON object");
  return body;
}

// Routes that act on the path alone take no body; one that says more than {}
// is refused rather than ignored.
void expect_no_body(const httplib::Request& req) {
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) return;
  if (parse_body(req).empty()) return;
  throw HttpError(400, "this route takes no body (send none, or {})");
}

// JSON integers include unsigned ones above INT64_MAX, which get<long long> would wrap.
bool integer_in(const nlohmann::json& v, long long lo, long long hi) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    const auto u = v.get<unsigned long long>();
    return hi >= 0 && u <= static_cast<unsigned long long>(hi) &&
           (lo <= 0 || u >= static_cast<unsigned long long>(lo));
  }
  return v.get<long long>() >= lo && v.get<long long>() <= hi;
}

int query_int(const httplib::Request& req, const std::string& key, int fallback, int lo, int hi) {
  if (!req.has_param(key.c_str())) return fallback;
  const std::string text = req.get_param_value(key.c_str());
  try {
    size_t used = 0;
    const long v = std::stol(text, &used);
    if (used == text.size() && v >= lo && v <= hi) return static_cast<int>(v);
  } catch (const std::exception&) {
  }
  throw HttpError(400, key + ": must be an integer between " + std::to_string(lo) + " and " + std::to_string(hi),
                  key);
}

}  // namespace

struct ApiServer::Impl {
  Impl(const Config& c, ApiHooks h)
      : config(c),
        hooks(std::move(h)),
        access(c.api_access),
        pg(c.postgres_url, 4),
        readiness(c.postgres_url, c.redis_url),
        server(c.api_limits, [this](const std::string& authorization) { return access.identify(authorization); }) {}

  const Config& config;
  ApiHooks hooks;
  AccessPolicy access;
  PgPool pg;
  Readiness readiness;
  HttpServer server;

  // Runs a handler after the route class's access check, turning exceptions
  // into JSON errors.
  template <typename Fn>
  HttpServer::Handler wrap_as(RouteClass route, Fn fn) {
    return [this, route, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        access.check(route, req.get_header_value("Authorization"));
        fn(req, res);
      } catch (const AccessDenied& e) {
        send_error(res, e.status, e.what());
      } catch (const HttpError& e) {
        send_error(res, e.status, e.what(), e.field);
      } catch (const std::invalid_argument& e) {
        send_error(res, 400, e.what(), "id");
      } catch (const pqxx::broken_connection& e) {
        send_error(res, 503, std::string("PostgreSQL is unreachable: ") + e.what());
      } catch (const std::exception& e) {
        spdlog::error("api {} {}: {}", req.method, req.path, e.what());
        send_error(res, 500, e.what());
      }
    };
  }
  // Writes need a write token; reads a read token when one is configured.
  template <typename Fn>
  HttpServer::Handler wrap(bool write, Fn fn) {
    return wrap_as(write ? RouteClass::kWrite : RouteClass::kRead, std::move(fn));
  }

  // Records an admin write in jobhost.audit_log, after it was done: who (the
  // request's token name), what, on which target, how many jobs. Every write
  // route calls it. A failure to record is logged, not returned: the change
  // is made, and a client told otherwise would retry it.
  void audit(const httplib::Request& req, std::string_view action, const std::string& target, long long count,
             nlohmann::json detail = nlohmann::json::object()) {
    detail["client"] = req.remote_addr;
    audit::Entry e{.actor = access.identify(req.get_header_value("Authorization")).value_or("anonymous"),
                   .action = std::string(action),
                   .target = target,
                   .count = count,
                   .detail = std::move(detail)};
    try {
      pg.with([&](pqxx::connection& c) {
        audit::record(c, e);
        return 0;
      });
    } catch (const std::exception& ex) {
      spdlog::error("audit: {} {} by {} ({} jobs) done but not recorded: {}", e.action, e.target, e.actor, e.count,
                    ex.what());
    }
  }

  // The schema's own refusals (sql/014_batches.sql): no such batch (P0002)
  // is the client's mistake, a batch that is no longer open a conflict.
  template <typename Fn>
  static auto sql_errors_as_http(const char* field, Fn fn) {
    try {
      return fn();
    } catch (const pqxx::sql_error& e) {
      const std::string first_line = std::string(e.what()).substr(0, std::string(e.what()).find('\n'));
      if (e.sqlstate() == "P0002") throw HttpError(400, std::string(field) + ": " + strip_error(first_line), field);
      if (e.sqlstate() == "55000") throw HttpError(409, strip_error(first_line), field);
      throw;
    }
  }
  static std::string strip_error(const std::string& line) {
    const std::string prefix = "ERROR:  ";
    return line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : line;
  }

  nlohmann::json create_job(const nlohmann::json& body) {
    for (const auto& [key, _] : body.items()) {
      if (key != "type" && key != "payload" && key != "priority" && key != "run_at" && key != "max_attempts" &&
          key != "unique_key" && key != "flow_key" && key != "batch_id") {
        throw HttpError(400,
                        key + ": unknown field; expected type, payload, priority, run_at, max_attempts, unique_key, "
                              "flow_key, batch_id",
                        key);
      }
    }
    if (!body.contains("type") || !body["type"].is_string() || body["type"].get<std::string>().empty()) {
      throw HttpError(400, "type: required, a non-empty string", "type");
    }
    const std::string type = body["type"];
    if (type.size() > 200) throw HttpError(400, "type: longer than 200 characters", "type");
    const nlohmann::json payload = body.value("payload", nlohmann::json::object());
    if (!payload.is_object()) throw HttpError(400, "payload: must be a JSON object", "payload");
    std::optional<int> priority, max_attempts;
    if (body.contains("priority")) {
      if (!integer_in(body["priority"], -1000000, 1000000)) {
        throw HttpError(400, "priority: must be an integer between -1000000 and 1000000 (lower runs first)",
                        "priority");
      }
      priority = body["priority"].get<int>();
    }
    if (body.contains("max_attempts")) {
      if (!integer_in(body["max_attempts"], 1, 1000)) {
        throw HttpError(400, "max_attempts: must be an integer between 1 and 1000", "max_attempts");
      }
      max_attempts = body["max_attempts"].get<int>();
    }
    std::optional<std::string> run_at, unique_key;
    if (body.contains("run_at")) {
      if (!body["run_at"].is_string()) throw HttpError(400, "run_at: must be an ISO 8601 timestamp string", "run_at");
      run_at = body["run_at"].get<std::string>();
    }
    if (body.contains("unique_key")) {
      if (!body["unique_key"].is_string() || body["unique_key"].get<std::string>().empty()) {
        throw HttpError(400, "unique_key: must be a non-empty string", "unique_key");
      }
      unique_key = body["unique_key"].get<std::string>();
    }
    std::optional<std::string> flow_key;
    if (body.contains("flow_key")) {
      if (!body["flow_key"].is_string() || body["flow_key"].get<std::string>().size() > 200) {
        throw HttpError(400, "flow_key: must be a string of at most 200 characters", "flow_key");
      }
      flow_key = body["flow_key"].get<std::string>();
    }
    std::optional<std::string> batch_id;
    if (body.contains("batch_id")) {
      if (!body["batch_id"].is_string() || !admin::is_uuid(body["batch_id"].get<std::string>())) {
        throw HttpError(400, "batch_id: must be a batch id (a UUID, from POST /api/v1/batches)", "batch_id");
      }
      batch_id = body["batch_id"].get<std::string>();
    }
    if (hooks.validate) {
      if (const auto problem = hooks.validate(type, payload.dump()); problem && !problem->empty()) {
        throw HttpError(400, "payload: " + *problem, "payload");
      }
    }
    return pg.with([&](pqxx::connection& conn) {
      pqxx::work tx(conn);
      if (run_at) {
        try {
          pqxx::subtransaction check(tx, "run_at");
          check.exec_params("SELECT $1::timestamptz", *run_at);
          check.commit();
        } catch (const pqxx::data_exception&) {
          throw HttpError(400, "run_at: not a timestamp: " + *run_at, "run_at");
        }
      }
      const pqxx::row r = sql_errors_as_http("batch_id", [&] {
        return tx.exec_params1(
            "SELECT jobhost.enqueue($1, $2::jsonb, coalesce($3::int, 100), coalesce($4::timestamptz, now()), $5::int, "
            "$6::text, $7::text, $8::uuid)::text",
            type, payload.dump(), priority, run_at, max_attempts, unique_key, flow_key, batch_id);
      });
      tx.commit();
      return nlohmann::json{{"id", r[0].c_str()}};
    });
  }

  // Where the job is in Redis, if anywhere: its queue's membership set says
  // whether the id waits in one of the lists.
  nlohmann::json live_view(const nlohmann::json& job) {
    nlohmann::json live{{"worker_id", job["worker_id"]},
                        {"attempt", job["attempts"]},
                        {"lease_expires_at", job["lease_expires_at"]}};
    try {
      Redis redis(config.redis_url, std::chrono::seconds(2));
      const QueueKeys keys(config.redis_key_prefix, job["type"].get<std::string>());
      const Reply r = redis.command({"SISMEMBER", keys.members(), job["id"].get<std::string>()});
      live["in_redis"] = r->integer == 1;
    } catch (const std::exception& e) {
      live["redis_error"] = e.what();
    }
    return live;
  }

  // Keyed queues: how many keys have jobs waiting in Redis, and how many of
  // them a limit (or a pause) holds back right now.
  void add_flow_view(nlohmann::json& queues) {
    try {
      std::unique_ptr<Redis> redis;
      for (auto& q : queues) {
        if (!q["keyed"].get<bool>()) continue;
        if (!redis) redis = std::make_unique<Redis>(config.redis_url, std::chrono::seconds(2));
        const QueueKeys keys(config.redis_key_prefix, q["name"].get<std::string>());
        q["active_keys"] = active_keys(*redis, keys);
        q["held_keys"] = held_keys(*redis, keys);
      }
    } catch (const std::exception& e) {
      spdlog::warn("api: flow view of the queues not available: {}", e.what());
    }
  }

  // POST /api/v1/queues/{q}/pause|resume[?key=K]: PostgreSQL first (the
  // truth, which every host reads within a second), then Redis at once.
  void pause_route(const httplib::Request& req, httplib::Response& res, bool paused) {
    expect_no_body(req);
    const std::string queue = req.matches[1];
    std::optional<std::string> key;
    if (req.has_param("key")) key = req.get_param_value("key");
    bool changed = false;
    try {
      changed = pg.with([&](pqxx::connection& c) {
        const bool ch = set_paused(c, queue, key, paused);
        try {
          Redis redis(config.redis_url, std::chrono::seconds(2));
          refresh_pause(c, redis, QueueKeys(config.redis_key_prefix, queue), queue);
        } catch (const std::exception& e) {
          spdlog::warn("api: queue {} {} in PostgreSQL; Redis not told now ({}), hosts see it within a second",
                       queue, paused ? "paused" : "resumed", e.what());
        }
        return ch;
      });
    } catch (const std::invalid_argument& e) {
      throw HttpError(409, e.what(), "key");
    }
    nlohmann::json body{{"queue", queue}, {"paused", paused}, {"changed", changed}};
    if (key) body["key"] = *key;
    audit(req, paused ? "queue.pause" : "queue.resume", key ? queue + " key " + *key : queue, changed ? 1 : 0);
    send_json(res, 200, body);
  }

  void routes() {
    server.Probe("/healthz", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"status", "ok"}});
    });
    server.Probe("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      const Readiness::Answer a = readiness.answer();
      send_json(res, a.status, a.body);
    });
    server.Get("/metrics", wrap_as(RouteClass::kMetrics, [this](const httplib::Request&, httplib::Response& res) {
      if (hooks.refresh_gauges) hooks.refresh_gauges();
      res.set_content(Metrics::global().render(), "text/plain; version=0.0.4; charset=utf-8");
    }));

    server.Post("/api/v1/jobs", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      send_json(res, 201, create_job(parse_body(req)));
    }));
    server.Get("/api/v1/jobs/" + kId, wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      auto job = pg.with([&](pqxx::connection& c) { return admin::job(c, id); });
      if (!job) throw HttpError(404, "no job " + id);
      (*job)["live"] = live_view(*job);
      send_json(res, 200, *job);
    }));
    server.Post("/api/v1/jobs/" + kId + "/cancel",
                wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                  expect_no_body(req);
                  const std::string id = req.matches[1];
                  switch (pg.with([&](pqxx::connection& c) { return admin::cancel(c, id); })) {
                    case admin::CancelResult::kCancelled:
                      audit(req, "job.cancel", id, 1);
                      return send_json(res, 200, {{"id", id}, {"result", to_text(JobState::kCancelled)}});
                    case admin::CancelResult::kRequested:
                      audit(req, "job.cancel", id, 1);
                      return send_json(res, 202, {{"id", id}, {"result", "cancel_requested"}});
                    case admin::CancelResult::kFinished:
                      throw HttpError(409, "job " + id + " has already finished");
                    case admin::CancelResult::kNotFound:
                      throw HttpError(404, "no job " + id);
                  }
                }));
    server.Get("/api/v1/queues", wrap(false, [this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json queues = pg.with([](pqxx::connection& c) { return admin::queues(c); });
      add_flow_view(queues);
      send_json(res, 200, {{"queues", queues}, {"plugins", hooks.plugins ? hooks.plugins() : nlohmann::json::array()}});
    }));
    server.Post("/api/v1/queues/" + kQueue + "/pause", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      pause_route(req, res, true);
    }));
    server.Post("/api/v1/queues/" + kQueue + "/resume", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      pause_route(req, res, false);
    }));
    server.Get("/api/v1/queues/" + kQueue + "/keys", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const std::string queue = req.matches[1];
      const int limit = query_int(req, "limit", 20, 1, 1000);
      nlohmann::json body{{"queue", queue},
                          {"keys", pg.with([&](pqxx::connection& c) { return admin::queue_keys(c, queue, limit); })}};
      if (const auto flow = hooks.flow ? hooks.flow(queue) : std::nullopt) {
        for (auto& k : body["keys"]) k["limits"] = limits_json(flow->for_key(k["key"].get<std::string>()));
        body["flow"] = flow_json(*flow);
      }
      send_json(res, 200, body);
    }));
    server.Get("/api/v1/throughput", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const int minutes = query_int(req, "minutes", 15, 1, 1440);
      send_json(res, 200, {{"minutes", pg.with([&](pqxx::connection& c) { return admin::throughput(c, minutes); })}});
    }));
    server.Get("/api/v1/running", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const int limit = query_int(req, "limit", 50, 1, 500);
      send_json(res, 200, {{"jobs", pg.with([&](pqxx::connection& c) { return admin::running(c, limit); })}});
    }));
    server.Get("/api/v1/failures", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const int limit = query_int(req, "limit", 20, 1, 500);
      send_json(res, 200, {{"failures", pg.with([&](pqxx::connection& c) { return admin::recent_failures(c, limit); })}});
    }));
    server.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(kDashboardHtml, "text/html; charset=utf-8");
    });
    server.Get("/api/v1/dlq", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const std::string queue = req.has_param("queue") ? req.get_param_value("queue") : "";
      const int limit = query_int(req, "limit", 100, 1, 1000);
      send_json(res, 200, {{"jobs", pg.with([&](pqxx::connection& c) { return admin::dlq(c, queue, limit); })}});
    }));
    server.Post("/api/v1/dlq/replay", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      expect_no_body(req);
      if (!req.has_param("queue") || req.get_param_value("queue").empty()) {
        throw HttpError(400, "queue: required, as ?queue=NAME", "queue");
      }
      const std::string queue = req.get_param_value("queue");
      const long n = pg.with([&](pqxx::connection& c) { return admin::replay(c, "", queue); });
      audit(req, "dlq.replay", queue, n);
      send_json(res, 200, {{"queue", queue}, {"replayed", n}});
    }));
    server.Post("/api/v1/dlq/" + kId + "/replay",
                wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                  expect_no_body(req);
                  const std::string id = req.matches[1];
                  const long n = pg.with([&](pqxx::connection& c) { return admin::replay(c, id, ""); });
                  if (n == 0) throw HttpError(404, "job " + id + " is not in the DLQ");
                  audit(req, "dlq.replay", id, n);
                  send_json(res, 200, {{"id", id}, {"replayed", n}});
                }));
    ops_routes();
    batch_routes();
    unsubscribe_routes();
  }

  // RFC 8058 one-click unsubscribe (DESIGN §11): the link's signed token is
  // the credential, so no bearer token is asked for; a forged, altered or
  // expired token gets 403 and changes nothing. GET (a person following the
  // link) only shows a button that POSTs: mail scanners fetch links, and a
  // GET must not unsubscribe anyone.
  void unsubscribe_routes() {
    const std::string path = "/api/v1/unsubscribe/([A-Za-z0-9._-]{1,2048})";
    server.Get(path, wrap_as(RouteClass::kPublic, [this](const httplib::Request& req, httplib::Response& res) {
      unsubscribe_claims(req.matches[1]);  // 403 unless the link is good
      res.set_content("<!doctype html><meta charset=\"utf-8\"><title>Unsubscribe</title>"
                      "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
                      "<p>Stop receiving these emails?</p><button type=\"submit\">Unsubscribe</button></form>",
                      "text/html; charset=utf-8");
    }));
    server.Post(path, wrap_as(RouteClass::kPublic, [this](const httplib::Request& req, httplib::Response& res) {
      if (req.body.find("List-Unsubscribe=One-Click") == std::string::npos) {
        throw HttpError(400, "body: a one-click unsubscribe posts List-Unsubscribe=One-Click (RFC 8058)", "body");
      }
      const auto c = unsubscribe_claims(req.matches[1]);
      const bool added = pg.with([&](pqxx::connection& conn) {
        pqxx::work tx(conn);
        // The message the link came with, of that tenant and that address.
        const pqxx::result m = tx.exec_params(
            "SELECT campaign_id FROM app.email_messages WHERE tenant_id = $1 AND id = $2 "
            "AND lower(btrim(recipient)) = $3",
            c.tenant, c.message_row, c.email);
        if (m.empty()) throw HttpError(403, "the unsubscribe link names no message of this address");
        const bool inserted = !tx.exec_params("INSERT INTO app.suppressions (tenant_id, email, reason) "
                                              "VALUES ($1, $2, 'unsubscribed') ON CONFLICT DO NOTHING RETURNING 1",
                                              c.tenant, c.email)
                                   .empty();
        if (inserted) {
          tx.exec_params("INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail) "
                         "VALUES ($1, $2, $3, $4, 'unsubscribed', jsonb_build_object('via', 'one-click'))",
                         c.tenant, c.message_row, m[0][0].is_null() ? std::optional<std::string>() : m[0][0].c_str(),
                         c.email);
        }
        tx.commit();
        return inserted;
      });
      send_json(res, 200, {{"unsubscribed", true}, {"already", !added}});
    }));
  }

  jobhost_plugins::unsubscribe::Claims unsubscribe_claims(const std::string& token) {
    if (config.api_unsubscribe_secret.empty()) {
      throw HttpError(403, "one-click unsubscribe is not configured on this host (api.unsubscribe_secret)");
    }
    auto checked = jobhost_plugins::unsubscribe::check(token, config.api_unsubscribe_secret, std::time(nullptr));
    if (!checked.claims) throw HttpError(403, checked.problem);
    return *checked.claims;
  }

  // Batches (DESIGN §10): open, close, status, cancel, and the unfinished ones.
  void batch_routes() {
    server.Post("/api/v1/batches", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      const nlohmann::json body = parse_body(req);
      for (const auto& [key, _] : body.items()) {
        if (key != "callback_type" && key != "callback_payload" && key != "description" &&
            key != "callback_priority") {
          throw HttpError(400,
                          key + ": unknown field; expected callback_type, callback_payload, callback_priority, "
                                "description",
                          key);
        }
      }
      std::optional<std::string> callback;
      if (body.contains("callback_type")) {
        if (!body["callback_type"].is_string() || body["callback_type"].get<std::string>().empty() ||
            body["callback_type"].get<std::string>().size() > 200) {
          throw HttpError(400, "callback_type: must be a job type (a non-empty string of at most 200 characters)",
                          "callback_type");
        }
        callback = body["callback_type"].get<std::string>();
      }
      const nlohmann::json payload = body.value("callback_payload", nlohmann::json::object());
      if (!payload.is_object()) throw HttpError(400, "callback_payload: must be a JSON object", "callback_payload");
      if (!callback && body.contains("callback_payload")) {
        throw HttpError(400, "callback_payload: given without a callback_type", "callback_payload");
      }
      int priority = 100;
      if (body.contains("callback_priority")) {
        if (!integer_in(body["callback_priority"], -1000000, 1000000)) {
          throw HttpError(400, "callback_priority: must be an integer between -1000000 and 1000000",
                          "callback_priority");
        }
        priority = body["callback_priority"].get<int>();
      }
      if (body.contains("description") && !body["description"].is_string()) {
        throw HttpError(400, "description: must be a string", "description");
      }
      const std::string description = body.value("description", std::string());
      const std::string id = pg.with([&](pqxx::connection& c) {
        pqxx::work tx(c);
        const std::string out = tx.exec_params1("SELECT jobhost.batch_open($1, $2::jsonb, $3, $4)::text", callback,
                                                payload.dump(), description, priority)[0]
                                    .c_str();
        tx.commit();
        return out;
      });
      send_json(res, 201, {{"id", id}, {"state", "open"}});
    }));
    server.Post("/api/v1/batches/" + kId + "/close",
                wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                  expect_no_body(req);
                  const std::string id = req.matches[1];
                  if (!admin::is_uuid(id)) throw HttpError(400, "id: not a UUID: " + id, "id");
                  const std::string state = pg.with([&](pqxx::connection& c) {
                    return sql_errors_as_http("id", [&] {
                      pqxx::work tx(c);
                      const std::string st = tx.exec_params1("SELECT jobhost.batch_close($1::uuid)", id)[0].c_str();
                      tx.commit();
                      return st;
                    });
                  });
                  send_json(res, 200, {{"id", id}, {"state", state}});
                }));
    server.Get("/api/v1/batches/" + kId, wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      auto batch = pg.with([&](pqxx::connection& c) { return batches::status(c, id); });
      if (!batch) throw HttpError(404, "no batch " + id);
      send_json(res, 200, *batch);
    }));
    server.Get("/api/v1/batches", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const int limit = query_int(req, "limit", 50, 1, 500);
      send_json(res, 200,
                {{"batches", pg.with([&](pqxx::connection& c) { return batches::unfinished(c, limit); })}});
    }));
    server.Post("/api/v1/batches/" + kId + "/cancel",
                wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
                  expect_no_body(req);
                  const std::string id = req.matches[1];
                  long long n = 0;
                  switch (pg.with([&](pqxx::connection& c) { return batches::cancel(c, id, n); })) {
                    case batches::CancelResult::kCancelled:
                      audit(req, "batch.cancel", id, n);
                      return send_json(res, 200, {{"id", id}, {"cancelled_now", n}});
                    case batches::CancelResult::kAlreadyDone:
                      throw HttpError(409, "batch " + id + " has already finished or been cancelled");
                    case batches::CancelResult::kNotFound:
                      throw HttpError(404, "no batch " + id);
                  }
                }));
  }

  // Operating at scale (DESIGN §12): the audit log; job search, the job page
  // and bulk actions (job_search.hpp).
  void ops_routes() {
    server.Get("/api/v1/audit", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const int limit = query_int(req, "limit", 50, 1, 1000);
      send_json(res, 200, {{"entries", pg.with([&](pqxx::connection& c) { return audit::recent(c, limit); })}});
    }));
    server.Get("/api/v1/jobs", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      search::Query q = search_query(req, {"limit", "cursor"});
      q.limit = query_int(req, "limit", 50, 1, 500);
      if (req.has_param("cursor")) q.cursor = req.get_param_value("cursor");
      send_json(res, 200, searching([&](pqxx::connection& c) { return search::find(c, q); }));
    }));
    server.Get("/api/v1/jobs/" + kId + "/attempts",
               wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
                 const std::string id = req.matches[1];
                 send_json(res, 200, {{"attempts", searching([&](pqxx::connection& c) { return search::attempts(c, id); })}});
               }));
    server.Get("/api/v1/scheduled", wrap(false, [this](const httplib::Request& req, httplib::Response& res) {
      const int limit = query_int(req, "limit", 50, 1, 500);
      send_json(res, 200, {{"jobs", pg.with([&](pqxx::connection& c) { return search::scheduled(c, limit); })}});
    }));
    // {action, filter: {status, type, since, until}}: how many jobs it would
    // change; with "count": N as well, does it when it changes exactly N.
    server.Post("/api/v1/jobs/bulk", wrap(true, [this](const httplib::Request& req, httplib::Response& res) {
      const nlohmann::json body = parse_body(req);
      for (const auto& [key, _] : body.items()) {
        if (key != "action" && key != "filter" && key != "count") {
          throw HttpError(400, key + ": unknown field; expected action, filter, count", key);
        }
      }
      const auto action = body.contains("action") && body["action"].is_string()
                              ? search::bulk_action_from_text(body["action"].get<std::string>())
                              : std::nullopt;
      if (!action) throw HttpError(400, "action: required, one of replay, cancel, delete", "action");
      const search::Query q = bulk_filter(body.value("filter", nlohmann::json::object()));
      const std::string name = std::string("jobs.bulk_") + search::action_name(*action);
      if (!body.contains("count")) {
        const long long n = searching([&](pqxx::connection& c) { return search::bulk_count(c, *action, q); });
        return send_json(res, 200, {{"action", search::action_name(*action)}, {"would_change", n},
                                    {"max", search::kMaxBulk}, {"filter", q.describe()}});
      }
      if (!integer_in(body["count"], 0, search::kMaxBulk)) {
        throw HttpError(400, "count: the number of jobs confirmed, 0 to " + std::to_string(search::kMaxBulk), "count");
      }
      const long long expected = body["count"].get<long long>();
      audit::Entry entry{.actor = access.identify(req.get_header_value("Authorization")).value_or("anonymous"),
                         .action = name,
                         .target = "",
                         .count = 0,
                         .detail = {{"filter", q.describe()}, {"client", req.remote_addr}}};
      const search::BulkResult r = searching([&](pqxx::connection& c) {
        return search::bulk(c, *action, q, expected, [&](pqxx::transaction_base& tx, long long n) {
          entry.count = n;
          audit::record(tx, entry);
        });
      });
      if (!r.done) {
        throw HttpError(409, "the filter matches " + std::to_string(r.count) + " jobs now, not the " +
                                 std::to_string(expected) + " confirmed: nothing was changed; look again" +
                                 (r.count > search::kMaxBulk ? " (at most " + std::to_string(search::kMaxBulk) +
                                                                   " at once: narrow the filter)"
                                                             : ""));
      }
      send_json(res, 200, {{"action", search::action_name(*action)}, {"changed", r.count}});
    }));
  }

  // Runs a search, turning a value PostgreSQL cannot use into a 400 naming it.
  template <typename Fn>
  std::invoke_result_t<Fn&, pqxx::connection&> searching(Fn fn) {
    try {
      return pg.with(fn);
    } catch (const search::BadParam& e) {
      throw HttpError(400, e.what(), e.param);
    }
  }

  // The state and kFilters parameters of a search; any other parameter than
  // those and `also` is refused.
  static search::Query search_query(const httplib::Request& req, std::initializer_list<std::string> also) {
    nlohmann::json given = nlohmann::json::object();
    for (const auto& [key, value] : req.params) {
      const bool known = key == "status" || std::find(also.begin(), also.end(), key) != also.end() ||
                         std::any_of(search::kFilters.begin(), search::kFilters.end(),
                                     [&](const search::FilterDef& f) { return key == f.param; });
      if (!known) throw HttpError(400, key + ": unknown parameter; expected " + search_params(also), key);
      if (std::find(also.begin(), also.end(), key) == also.end()) given[key] = value;
    }
    return bulk_filter(given);
  }

  static std::string search_params(std::initializer_list<std::string> also) {
    std::string out = "status";
    for (const auto& f : search::kFilters) out += std::string(", ") + f.param;
    for (const auto& a : also) out += ", " + a;
    return out;
  }

  // {status: "failed,cancelled" or [..], type, since, until, ...} → a query.
  static search::Query bulk_filter(const nlohmann::json& filter) {
    if (!filter.is_object()) throw HttpError(400, "filter: must be a JSON object", "filter");
    search::Query q;
    for (const auto& [key, value] : filter.items()) {
      if (key == "status") continue;
      const auto f = std::find_if(search::kFilters.begin(), search::kFilters.end(),
                                  [&](const search::FilterDef& d) { return key == d.param; });
      if (f == search::kFilters.end()) throw HttpError(400, key + ": unknown filter; expected " + search_params({}), key);
      if (!value.is_string()) throw HttpError(400, key + ": must be a string", key);
      if (!value.get<std::string>().empty()) {
        q.filters.emplace_back(static_cast<size_t>(f - search::kFilters.begin()), value.get<std::string>());
      }
    }
    if (filter.contains("status")) {
      std::vector<std::string> names;
      const nlohmann::json& st = filter["status"];
      if (st.is_string()) {
        std::string text = st.get<std::string>();
        for (size_t start = 0; start <= text.size();) {
          const size_t comma = std::min(text.find(',', start), text.size());
          if (comma > start) names.push_back(text.substr(start, comma - start));
          start = comma + 1;
        }
      } else if (st.is_array()) {
        for (const auto& n : st) {
          if (!n.is_string()) throw HttpError(400, "status: a list of state names", "status");
          names.push_back(n.get<std::string>());
        }
      } else {
        throw HttpError(400, "status: a state name, or several separated by commas", "status");
      }
      for (const auto& n : names) {
        const auto s = job_state_from_text(n);
        if (!s) {
          std::string valid;
          for (JobState k : kJobStates) valid += (valid.empty() ? "" : ", ") + std::string(to_text(k));
          throw HttpError(400, "status: unknown state \"" + n + "\"; expected " + valid, "status");
        }
        if (std::find(q.states.begin(), q.states.end(), *s) == q.states.end()) q.states.push_back(*s);
      }
    }
    return q;
  }
};

ApiServer::ApiServer(const Config& config, ApiHooks hooks) : impl_(std::make_unique<Impl>(config, std::move(hooks))) {}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() {
  const auto [host, port] = split_listen("api.listen", impl_->config.api_listen);
  impl_->routes();
  HttpServer& s = impl_->server;
  try {
    port_ = s.listen(host, port, false);
  } catch (const std::exception& e) {
    throw std::runtime_error("api.listen: " + std::string(e.what()) +
                             " (address in use, or not an address of this machine)");
  }
  std::string health_host;
  if (!impl_->config.api_health_listen.empty()) {
    const auto [h, p] = split_listen("api.health_listen", impl_->config.api_health_listen);
    health_host = h;
    try {
      health_port_ = s.listen(h, p, true);
    } catch (const std::exception& e) {
      throw std::runtime_error("api.health_listen: " + std::string(e.what()) +
                               " (address in use, or not an address of this machine)");
    }
  }
  impl_->readiness.start();
  s.start();
  started_ = true;
  spdlog::info("api listening on {}:{}", host, port_);
  if (health_port_ > 0) spdlog::info("api health listening on {}:{}", health_host, health_port_);
}

void ApiServer::stop() {
  if (!started_) return;
  started_ = false;
  impl_->server.stop();
  impl_->readiness.stop();
}

}  // namespace jobhost
