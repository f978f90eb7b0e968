// email.send over TLS: STARTTLS and implicit TLS (smtps://) to a sink with a
// certificate made here, verified against ca_file; and what it refuses.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <catch2/catch.hpp>

#include "email_send_fixture.hpp"

using namespace email_fixture;

namespace {

// A self-signed certificate for 127.0.0.1 and its key, as PEM files in a
// fresh folder; returns the folder.
std::filesystem::path make_certificate(const std::string& tag) {
  const auto dir = std::filesystem::temp_directory_path() / ("jobhost-tls-" + tag + "-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  REQUIRE(key != nullptr);
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                                   std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(ext != nullptr);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  REQUIRE(X509_sign(cert, key, EVP_sha256()) > 0);
  FILE* f = std::fopen((dir / "cert.pem").c_str(), "w");
  PEM_write_X509(f, cert);
  std::fclose(f);
  f = std::fopen((dir / "key.pem").c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(cert);
  EVP_PKEY_free(key);
  return dir;
}

std::string tls_config(TestDb& db, const std::string& url, const std::string& keys) {
  HostOptions o;
  o.extra_yaml = "  - name: email_send\n"
                 "    library: " + plugin_dir() + "/libemail_send.so\n"
                 "    job_types: [email.send]\n"
                 "    concurrency: { min: 1, max: 1 }\n"
                 "    retry: { max_attempts: 1 }\n"
                 "    settings:\n"
                 "      database_url: \"" + db.url() + "\"\n"
                 "      providers:\n"
                 "        - { name: tls, url: \"" + url + "\", timeout_ms: 3000" + keys + " }\n";
  return write_config(db, o, "email");
}

}  // namespace

TEST_CASE("email.send upgrades to TLS with STARTTLS, or speaks it from the start to smtps://", "[email][tls]") {
  const auto dir = make_certificate("ok");
  const std::string ca = ", ca_file: \"" + (dir / "cert.pem").string() + "\"";
  for (const bool implicit : {false, true}) {
    DYNAMIC_SECTION((implicit ? "smtps://" : "STARTTLS")) {
      TestDb db;
      seed(db);
      smtp::Sink sink;
      sink.enable_tls((dir / "cert.pem").string(), (dir / "key.pem").string(), implicit);
      const std::string url = std::string(implicit ? "smtps" : "smtp") + "://127.0.0.1:" + std::to_string(sink.port());
      auto host = start_host(tls_config(db, url, ca), "email");
      for (int i = 0; i < 3; ++i) REQUIRE(completed(db, send(db, "t" + std::to_string(i) + "@example.com")));
      CHECK(sink.messages().size() == 3);
      CHECK(sink.tls_sessions() == 1);  // one TLS session carried all three
      CHECK(sink.connections() == 1);
    }
  }
}

TEST_CASE("email.send refuses a relay whose certificate it cannot verify, and credentials without TLS",
          "[email][tls]") {
  const auto dir = make_certificate("bad");
  TestDb db;
  seed(db);
  smtp::Sink untrusted, plain;
  untrusted.enable_tls((dir / "cert.pem").string(), (dir / "key.pem").string(), false);
  {
    // No ca_file: the system's CAs do not know this certificate.
    auto host = start_host(tls_config(db, "smtp://127.0.0.1:" + std::to_string(untrusted.port()), ""), "email");
    const std::string id = send(db, "u@example.com");
    REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
    CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("TLS handshake with 127.0.0.1") &&
                                                       Catch::Contains("certificate"));
    CHECK(untrusted.messages().empty());
  }
  {
    // Credentials are set and the relay offers no STARTTLS: nothing is sent, the password least of all.
    auto host = start_host(tls_config(db, "smtp://127.0.0.1:" + std::to_string(plain.port()),
                                      ", username: u, password: secret-pw"),
                           "email");
    const std::string id = send(db, "p@example.com");
    REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
    CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("does not offer STARTTLS"));
    CHECK(plain.messages().empty());
    CHECK_THAT(host->log(), !Catch::Contains("secret-pw"));
  }
}
