// smtp-sink: the test SMTP server as a program, for the demo and for running
// jobhost by hand: stores each message it receives as a .eml file.
//   smtp-sink --listen 127.0.0.1:2525 (--maildir DIR | --count-only) [--refuse CODE] [--delay-ms N]
//             [--unknown-user ADDRESS]...
// --refuse answers every MAIL FROM with CODE (try a failover by hand);
// --delay-ms sends each reply N ms after its command arrived, as a relay that
// far away would (try the relays' timeout_ms, or pipelining: commands sent
// together are answered together); --count-only keeps no message, only
// counts them (the benchmark); --unknown-user refuses RCPT TO of that address
// with "550 5.1.1 ... User unknown" (a hard bounce at RCPT). Prints "listening on 127.0.0.1:PORT" once it
// accepts connections, and runs until SIGTERM or SIGINT; then prints
// "N messages received, C connections (at most P open at once)".
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "smtp_sink.hpp"

namespace {

int usage(const char* why) {
  std::fprintf(stderr,
               "smtp-sink: %s\nusage: smtp-sink --listen 127.0.0.1:PORT --maildir DIR [--refuse CODE] [--delay-ms N] [--unknown-user ADDRESS]...\n",
               why);
  return 2;
}

// A whole non-negative number, or -1.
long number(const std::string& s) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stol(s);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:2525", maildir;
  long refuse = 0, delay_ms = 0;
  bool count_only = false;
  std::vector<std::string> unknown_users;
  for (int i = 1; i < argc; i += 2) {
    if (std::strcmp(argv[i], "--count-only") == 0) {
      count_only = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) return usage((std::string(argv[i]) + " needs a value").c_str());
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--listen") {
      listen = value;
    } else if (flag == "--maildir") {
      maildir = value;
    } else if (flag == "--refuse") {
      refuse = number(value);
      if (refuse < 400 || refuse > 599) return usage("--refuse: give an SMTP error code, 400 to 599");
    } else if (flag == "--unknown-user") {
      unknown_users.push_back(value);
    } else if (flag == "--delay-ms") {
      delay_ms = number(value);
      if (delay_ms < 0) return usage("--delay-ms: give a number of milliseconds");
    } else {
      return usage(("unknown option " + flag).c_str());
    }
  }
  if (maildir.empty() == !count_only) return usage("give one of --maildir DIR or --count-only");
  const long port = listen.rfind("127.0.0.1:", 0) == 0 ? number(listen.substr(10)) : -1;
  if (port < 0 || port > 65535) return usage("--listen: give 127.0.0.1:PORT (loopback only)");

  // Block the signals before any thread starts, so only sigwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  try {
    smtp::Sink sink(static_cast<uint16_t>(port), maildir);
    if (refuse != 0) sink.refuse_with(static_cast<int>(refuse), smtp::Stage::kMail);
    if (delay_ms != 0) sink.delay_replies_ms(static_cast<int>(delay_ms));
    for (const auto& a : unknown_users) sink.unknown_user(a);
    sink.keep_messages(!count_only);
    std::printf("smtp-sink: listening on 127.0.0.1:%u, %s%s\n", sink.port(), count_only ? "counting messages" : "messages under ",
                maildir.c_str());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    sink.stop();
    std::printf("smtp-sink: %zu messages received, %d connections (at most %d open at once); stopped\n",
                sink.received(), sink.connections(), sink.peak_connections());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smtp-sink: %s\n", e.what());
    return 1;
  }
  return 0;
}
