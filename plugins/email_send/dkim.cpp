// dkim.cpp: the DKIM signer (see dkim.hpp).
//
// What is signed (RFC 6376 3.7): the relaxed form of each picked header field
// in h= order, then the relaxed DKIM-Signature field itself with an empty b=
// and no final CR LF. rsa-sha256 signs that with RSASSA-PKCS1-v1_5/SHA-256;
// ed25519-sha256 (RFC 8463) signs the SHA-256 digest of it with PureEd25519.
#include "dkim.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <vector>

#include "dkim_canon.hpp"

namespace dkim {
namespace {

std::string b64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

std::string sha256(std::string_view data) {
  unsigned char md[32];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) throw KeyError("SHA-256 failed");
  return std::string(reinterpret_cast<char*>(md), len);
}

}  // namespace

struct Signer::Key {
  EVP_PKEY* pkey = nullptr;
  ~Key() { EVP_PKEY_free(pkey); }
};

Signer::Signer(const std::string& pem, const std::string& algorithm, std::string domain, std::string selector)
    : key_(std::make_unique<Key>()), algorithm_(algorithm), domain_(std::move(domain)), selector_(std::move(selector)) {
  if (pem.find_first_not_of(" \t\r\n") == std::string::npos) throw KeyError("dkim_private_key is missing");
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  key_->pkey = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  ERR_clear_error();
  if (key_->pkey == nullptr) throw KeyError("dkim_private_key is not a PEM private key (unencrypted PKCS#8 or PKCS#1)");
  const int type = EVP_PKEY_get_base_id(key_->pkey);
  if (algorithm_ == "rsa-sha256") {
    if (type != EVP_PKEY_RSA) throw KeyError("dkim_algorithm is rsa-sha256 but dkim_private_key is not an RSA key");
    if (EVP_PKEY_get_bits(key_->pkey) < 1024) {
      throw KeyError("dkim_private_key is an RSA key of " + std::to_string(EVP_PKEY_get_bits(key_->pkey)) +
                     " bits; RFC 8301 requires at least 1024 (2048 recommended)");
    }
  } else if (algorithm_ == "ed25519-sha256") {
    if (type != EVP_PKEY_ED25519) throw KeyError("dkim_algorithm is ed25519-sha256 but dkim_private_key is not an Ed25519 key");
  } else {
    throw KeyError("dkim_algorithm '" + algorithm_ + "' is neither rsa-sha256 nor ed25519-sha256");
  }
}

Signer::~Signer() = default;

std::string Signer::signature(const std::string& message, std::time_t now) const {
  const Split parts = split(message);
  const auto picked = pick_headers(parts);
  std::string h, hashed;
  for (const auto& [name, field] : picked) {
    h += (h.empty() ? "" : ":") + name;
    hashed += relaxed_header(field);
  }
  const std::string body_hash = sha256(relaxed_body(parts.body));
  const std::string bh = b64(reinterpret_cast<const unsigned char*>(body_hash.data()), body_hash.size());
  // Folded between tags so every line stays short; b= last, on its own line.
  const std::string head = "DKIM-Signature: v=1; a=" + algorithm_ + "; c=relaxed/relaxed; d=" + domain_ + "; s=" +
                           selector_ + ";\r\n\tt=" + std::to_string(static_cast<long long>(now)) + "; h=" + h +
                           ";\r\n\tbh=" + bh + ";\r\n\tb=";
  const std::string head_canon = relaxed_header(head);
  hashed += head_canon.substr(0, head_canon.size() - 2);  // without its CR LF

  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  const bool rsa = algorithm_ == "rsa-sha256";
  const std::string input = rsa ? hashed : sha256(hashed);
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, rsa ? EVP_sha256() : nullptr, nullptr, key_->pkey) != 1) {
    ERR_clear_error();
    throw KeyError("cannot start signing with dkim_private_key");
  }
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size()) != 1) {
    ERR_clear_error();
    throw KeyError("signing with dkim_private_key failed");
  }
  std::vector<unsigned char> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, in, input.size()) != 1) {
    ERR_clear_error();
    throw KeyError("signing with dkim_private_key failed");
  }
  return head + b64(sig.data(), len) + "\r\n";
}

}  // namespace dkim
