// smtp-sink: the test SMTP server as a program, for the demo and for running
// jobhost by hand: stores each message it receives as a .eml file.
//   smtp-sink --listen 127.0.0.1:2525 --maildir DIR
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "smtp_sink.hpp"

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:2525", maildir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--listen") == 0) listen = argv[i + 1];
    else if (std::strcmp(argv[i], "--maildir") == 0) maildir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: smtp-sink [--listen 127.0.0.1:PORT] --maildir DIR\n");
      return 2;
    }
  }
  if (maildir.empty() || listen.rfind("127.0.0.1:", 0) != 0) {
    std::fprintf(stderr, "smtp-sink: give --maildir DIR, and --listen 127.0.0.1:PORT (loopback only)\n");
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  try {
    smtp::Sink sink(static_cast<uint16_t>(std::stoi(listen.substr(10))), maildir);
    std::printf("smtp-sink: listening on 127.0.0.1:%u, messages under %s\n", sink.port(), maildir.c_str());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    std::printf("smtp-sink: %zu messages received; stopping\n", sink.messages().size());
    sink.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "smtp-sink: %s\n", e.what());
    return 1;
  }
  return 0;
}
