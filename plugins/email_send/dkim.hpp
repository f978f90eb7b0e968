// dkim.hpp: DKIM signing (RFC 6376; rsa-sha256, and ed25519-sha256 per
// RFC 8463), relaxed/relaxed, over OpenSSL. A Signer holds one domain's
// parsed private key; it is immutable and shared by the workers.
#pragma once

#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>

namespace dkim {

// A key that cannot sign: the message says what is wrong with it (never the
// key itself).
struct KeyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Signer {
 public:
  // algorithm: "rsa-sha256" (an RSA key of at least 1024 bits) or
  // "ed25519-sha256" (an Ed25519 key). Throws KeyError when the PEM text is
  // empty, unreadable, or of the other kind.
  Signer(const std::string& pem, const std::string& algorithm, std::string domain, std::string selector);
  ~Signer();
  Signer(const Signer&) = delete;
  Signer& operator=(const Signer&) = delete;

  // The DKIM-Signature field ("DKIM-Signature: ...\r\n") for this message
  // (CR LF line ends), to be put before its first header field. Throws
  // KeyError when signing fails.
  std::string signature(const std::string& message, std::time_t now) const;

 private:
  struct Key;
  std::unique_ptr<Key> key_;
  std::string algorithm_, domain_, selector_;
};

}  // namespace dkim
