// DKIM signing, verified by an independent verifier: Debian's python3-dkim
// (dkimpy), given a DNS lookup function that answers with the test's public
// key. Keys are made per test with OpenSSL.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>

#include <catch2/catch.hpp>

#include "dkim.hpp"
#include "email_send_fixture.hpp"

using namespace email_fixture;

namespace {

struct KeyPair {
  std::string private_pem;
  std::string dns_record;  // the TXT record at <selector>._domainkey.<domain>
};

std::string b64(const unsigned char* p, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  out.resize(static_cast<size_t>(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n))));
  return out;
}

KeyPair make_key(bool ed25519) {
  EVP_PKEY* k = ed25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                        : EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  REQUIRE(k != nullptr);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(k, EVP_PKEY_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  REQUIRE(PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  KeyPair kp{std::string(data, static_cast<size_t>(len)), {}};
  if (ed25519) {
    unsigned char raw[32];
    size_t n = sizeof raw;
    REQUIRE(EVP_PKEY_get_raw_public_key(k, raw, &n) == 1);
    kp.dns_record = "v=DKIM1; k=ed25519; p=" + b64(raw, n);
  } else {
    unsigned char* der = nullptr;
    const int n = i2d_PUBKEY(k, &der);
    REQUIRE(n > 0);
    kp.dns_record = "v=DKIM1; k=rsa; p=" + b64(der, static_cast<size_t>(n));
    OPENSSL_free(der);
  }
  return kp;
}

// The verifier, dkimpy: prints "pass" or "fail" (and why on stderr).
constexpr const char* kVerifier = R"py(
import logging, sys, dkim
message = open(sys.argv[1], 'rb').read()
record = open(sys.argv[2], 'rb').read()
want = sys.argv[3].encode()
def dns(name, timeout=5):
    return record if name.rstrip(b'.') == want else None
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
d = dkim.DKIM(message, logger=logging.getLogger('dkim'))
try:
    ok = d.verify(dnsfunc=dns)
except dkim.DKIMException as e:  # a body hash mismatch raises instead of returning False
    print('verify:', e, file=sys.stderr)
    ok = False
print('pass' if ok else 'fail')
)py";

// Runs dkimpy on this message with this record for <selector>._domainkey.<domain>.
std::string verify(const std::string& message, const std::string& record, const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("jobhost-dkim-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "verify.py") << kVerifier;
  std::ofstream(dir / "message.eml", std::ios::binary) << message;
  std::ofstream(dir / "record.txt", std::ios::binary) << record;
  // The system interpreter: python3-dkim is a Debian package, not a pip one.
  const std::string cmd = "/usr/bin/python3 " + (dir / "verify.py").string() + " " + (dir / "message.eml").string() +
                          " " + (dir / "record.txt").string() + " " + name + " 2>" + (dir / "why.txt").string();
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[256];
    while (fgets(buf, sizeof buf, p) != nullptr) out += buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out != "pass") {
    std::ifstream why(dir / "why.txt");
    UNSCOPED_INFO("dkimpy: " << std::string(std::istreambuf_iterator<char>(why), {}));
  }
  return out;
}

void add_domain(TestDb& db, const std::string& algorithm, const std::string& pem, const std::string& selector = "sel1") {
  pqxx::connection c(db.url());
  pqxx::work tx(c);
  tx.exec_params("INSERT INTO app.sending_domains (tenant_id, domain, dkim_selector, dkim_private_key, dkim_algorithm) "
                 "VALUES ('t1', 't1.example', $1, $2, $3)",
                 selector, pem.empty() ? std::optional<std::string>() : std::optional<std::string>(pem), algorithm);
  tx.commit();
}

void set_key(TestDb& db, const std::string& pem) {
  pqxx::connection c(db.url());
  pqxx::work tx(c);
  tx.exec_params("UPDATE app.sending_domains SET dkim_private_key = $1 WHERE tenant_id = 't1'", pem);
  tx.commit();
}

// The body with one character changed.
std::string tamper_body(std::string m) {
  const auto body = m.find("\r\n\r\n--") + 4;
  const auto at = m.find("base64\r\n\r\n", body) + 10;
  m[at] = m[at] == 'A' ? 'B' : 'A';
  return m;
}

}  // namespace

TEST_CASE("email.send signs with rsa-sha256 relaxed/relaxed, and dkimpy verifies it, but not once the body changed",
          "[email][dkim]") {
  TestDb db;
  seed(db);
  const KeyPair key = make_key(false);
  add_domain(db, "rsa-sha256", key.private_pem);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  REQUIRE(completed(db, send(db)));
  REQUIRE(primary.messages().size() == 1);
  const std::string m = primary.messages()[0].data;
  REQUIRE(m.rfind("DKIM-Signature: ", 0) == 0);
  const std::string sig = header(m, "DKIM-Signature");
  CHECK_THAT(sig, Catch::Contains("a=rsa-sha256;") && Catch::Contains("c=relaxed/relaxed;") &&
                      Catch::Contains("d=t1.example;") && Catch::Contains("s=sel1;") &&
                      Catch::Contains("h=from:to:subject:date:message-id:mime-version:content-type;"));
  CHECK(verify(m, key.dns_record, "sel1._domainkey.t1.example") == "pass");
  CHECK(verify(tamper_body(m), key.dns_record, "sel1._domainkey.t1.example") == "fail");
  std::string subject_changed = m;
  subject_changed.replace(subject_changed.find("Subject: Hello"), 14, "Subject: Hallo");
  CHECK(verify(subject_changed, key.dns_record, "sel1._domainkey.t1.example") == "fail");
  CHECK(verify(m, make_key(false).dns_record, "sel1._domainkey.t1.example") == "fail");  // another key
  // Another tenant's mail from the same domain is not signed with t1's key.
  db.scalar("INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) VALUES "
            "('tpl-t2', 't2', 'W', 'news@t1.example', 'Hi', 'x', 'x') RETURNING 1");
  REQUIRE(completed(db, db.enqueue("email.send", R"({"recipient": "b@example.com", "template_id": "tpl-t2", )"
                                                 R"("tenant_id": "t2", "variables": {}})")));
  REQUIRE(primary.messages().size() == 2);
  CHECK(primary.messages()[1].data.find("DKIM-Signature") == std::string::npos);
}

TEST_CASE("email.send signs with ed25519-sha256 (RFC 8463), and dkimpy verifies it, but not once the body changed",
          "[email][dkim]") {
  TestDb db;
  seed(db);
  const KeyPair key = make_key(true);
  add_domain(db, "ed25519-sha256", key.private_pem, "ed1");
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  REQUIRE(completed(db, send(db)));
  REQUIRE(primary.messages().size() == 1);
  const std::string m = primary.messages()[0].data;
  CHECK_THAT(header(m, "DKIM-Signature"), Catch::Contains("a=ed25519-sha256;") && Catch::Contains("s=ed1;"));
  CHECK(verify(m, key.dns_record, "ed1._domainkey.t1.example") == "pass");
  CHECK(verify(tamper_body(m), key.dns_record, "ed1._domainkey.t1.example") == "fail");
}

TEST_CASE("a missing or bad DKIM key fails the job for good, saying which row, and a fixed row signs again",
          "[email][dkim]") {
  TestDb db;
  seed(db);
  add_domain(db, "rsa-sha256", "");  // the domain is set up, its key is not there
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const auto fails_with = [&](const std::string& to, const std::string& why) {
    const std::string id = send(db, to);
    REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
    const std::string error = db.field(id, "last_error_message");
    CHECK_THAT(error, Catch::Contains("cannot DKIM-sign mail from t1.example (app.sending_domains, tenant 't1', "
                                      "domain 't1.example')") &&
                          Catch::Contains(why));
    CHECK(db.field(id, "attempt_count") == "1");
    CHECK(db.scalar("SELECT status FROM app.email_messages WHERE job_id = '" + id + "'") == "failed");
    return error;
  };
  fails_with("a@example.com", "dkim_private_key is missing");

  const std::string garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n";
  set_key(db, garbage);
  const std::string e = fails_with("b@example.com", "not a PEM private key");
  CHECK(e.find("bm90IGEga2V5") == std::string::npos);  // the key is never quoted
  CHECK_THAT(host->log(), !Catch::Contains("bm90IGEga2V5"));

  const KeyPair ed = make_key(true);
  set_key(db, ed.private_pem);
  fails_with("c@example.com", "dkim_algorithm is rsa-sha256 but dkim_private_key is not an RSA key");
  CHECK(primary.messages().empty());
  CHECK(fallback.messages().empty());

  // Fixed: the next message is signed with the new key (the cached bad one is not used).
  db.scalar("UPDATE app.sending_domains SET dkim_algorithm = 'ed25519-sha256' RETURNING 1");
  REQUIRE(completed(db, send(db, "d@example.com")));
  REQUIRE(primary.messages().size() == 1);
  CHECK(verify(primary.messages()[0].data, ed.dns_record, "sel1._domainkey.t1.example") == "pass");
}

TEST_CASE("a DKIM signature covers List-Unsubscribe when the message has it", "[email][dkim]") {
  const KeyPair key = make_key(false);
  const dkim::Signer signer(key.private_pem, "rsa-sha256", "t1.example", "sel1");
  const std::string m = "From: news@t1.example\r\nTo: ann@example.com\r\nSubject: Hi\r\n"
                        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <x@jobhost>\r\n"
                        "List-Unsubscribe: <mailto:u@t1.example>,\r\n <https://t1.example/u?t=1>\r\n"
                        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: text/plain; charset=UTF-8\r\n\r\nHello  there \r\n\r\n";
  const std::string signed_m = signer.signature(m, 1764583200) + m;
  CHECK_THAT(header(signed_m, "DKIM-Signature"), Catch::Contains(":list-unsubscribe:list-unsubscribe-post;"));
  CHECK(verify(signed_m, key.dns_record, "sel1._domainkey.t1.example") == "pass");
  std::string other = signed_m;
  other.replace(other.find("t=1>"), 4, "t=2>");
  CHECK(verify(other, key.dns_record, "sel1._domainkey.t1.example") == "fail");
}
