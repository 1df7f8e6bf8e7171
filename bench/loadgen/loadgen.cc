// Compiled open-loop HTTP/1.1 load generator and responder for bench/dataplane_overhead.py.
//
// Why compiled: the benchmark measures what two Envoys cost per request on a two-core machine. A Python
// generator (aiohttp) and responder spent ~0.5 vCPU of those two cores at 1,000 rps and added ~1 ms of their own
// to every request, so the sidecars competed with them for the cores and the "added" latency was a difference of
// two noisy numbers. This program does the same thing in a few microseconds per request, on one thread, with
// nothing but the C++ standard library and Linux (epoll, timerfd).
//
//   loadgen serve HOST:PORT
//       Answers every HTTP/1.1 request on a keep-alive connection with a fixed 200 (requests carry no body).
//   loadgen run --connect HOST:PORT --url URL [--proxy] --rate R --duration S --connections C --max-inflight M
//       Open loop: request i is due at t0 + i/R; latency is measured from that due time to the end of the
//       response (no coordinated omission). Due requests wait in a queue for a free keep-alive connection; one
//       that would push queued + in-flight requests past M is counted as dropped. With --proxy the request line
//       carries the absolute URL (an explicit HTTP proxy, which is how a meshplane workload reaches its sidecar);
//       without it, the path. Prints one JSON object with the same fields as the Python generator.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "loadgen: %s: %s\n", what.c_str(), errno ? std::strerror(errno) : "error");
  std::exit(2);
}

sockaddr_in parse_addr(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos) { errno = 0; die("expected HOST:PORT, got " + hostport); }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(hostport.substr(colon + 1))));
  if (inet_pton(AF_INET, hostport.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    errno = 0;
    die("not an IPv4 address: " + hostport);
  }
  return a;
}

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// --- serve --------------------------------------------------------------------------------------------------

const char kResponse[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";

int serve(const std::string& listen_at) {
  sockaddr_in addr = parse_addr(listen_at);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind " + listen_at);
  if (listen(lfd, 1024) != 0) die("listen");
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  // Per connection: the tail of the last read (to find a "\r\n\r\n" split across reads), answers the socket did
  // not take yet (sent when it is writable again, so a slow peer never stalls the others), and the epoll events it
  // is registered for. A peer that does not read its answers is not read either once kMaxPending bytes wait for
  // it, so its requests back up in its own socket, not in this process.
  constexpr size_t kMaxPending = 1 << 20;
  struct Peer {
    std::string tail, pending;
    uint32_t events = EPOLLIN;
  };
  std::vector<Peer> peers;
  std::vector<epoll_event> events(256);
  char buf[65536];
  auto rewatch = [&](int fd) {
    Peer& peer = peers[fd];
    uint32_t want = (peer.pending.size() < kMaxPending ? EPOLLIN : 0u) | (peer.pending.empty() ? 0u : EPOLLOUT);
    if (want == peer.events) return;
    peer.events = want;
    epoll_event ev{};
    ev.events = want;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
  };
  auto flush = [&](int fd) -> bool {  // false: the connection is gone
    std::string& pending = peers[fd].pending;
    size_t off = 0;
    while (off < pending.size()) {
      ssize_t w = write(fd, pending.data() + off, pending.size() - off);
      if (w < 0) {
        if (errno == EAGAIN) break;
        return false;
      }
      off += static_cast<size_t>(w);
    }
    pending.erase(0, off);
    rewatch(fd);
    return true;
  };
  for (;;) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) break;
          set_nodelay(c);
          if (static_cast<size_t>(c) >= peers.size()) peers.resize(c + 1);
          peers[c] = Peer{};
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      bool alive = true;
      if (events[i].events & EPOLLOUT) alive = flush(fd);
      if (alive && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        ssize_t got = read(fd, buf, sizeof buf);
        if (got == 0 || (got < 0 && errno != EAGAIN)) {
          alive = false;
        } else if (got > 0) {
          Peer& peer = peers[fd];
          peer.tail.append(buf, static_cast<size_t>(got));
          size_t from = 0, pos;
          while ((pos = peer.tail.find("\r\n\r\n", from)) != std::string::npos) {
            from = pos + 4;
            peer.pending.append(kResponse, sizeof kResponse - 1);
          }
          // Keep only what may start a "\r\n\r\n" split across reads.
          peer.tail.erase(0, std::max(from, peer.tail.size() > 3 ? peer.tail.size() - 3 : 0));
          alive = flush(fd);
        }
      }
      if (!alive) {
        close(fd);  // also leaves the epoll set
        peers[fd] = Peer{};
      }
    }
  }
}

// --- run ----------------------------------------------------------------------------------------------------

struct Conn {
  int fd = -1;
  bool busy = false;
  int64_t due = 0;  // due time of the request in flight
  std::string in;
};

// Parses one complete HTTP/1.1 response at the start of `in`: its length in bytes (0 when incomplete), its status
// (-1 when it is no HTTP response) and whether the server closes the connection after it (`Connection: close`).
size_t response_length(const std::string& in, int* status, bool* close_after) {
  size_t head_end = in.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0) { *status = -1; return head_end + 4; }
  *status = std::atoi(in.c_str() + 9);
  size_t body = head_end + 4;
  // Header names (and these values) are case-insensitive: look in a lower-cased copy of the head.
  std::string head = in.substr(0, head_end + 2);
  std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return std::tolower(c); });
  auto header = [&](const char* name) -> std::string {  // the value of header `name` ("" when absent)
    size_t at = head.find(std::string("\r\n") + name + ":");
    if (at == std::string::npos) return "";
    size_t from = at + 3 + std::strlen(name), to = head.find("\r\n", from);
    return head.substr(from, to - from);
  };
  *close_after = header("connection").find("close") != std::string::npos;
  if (header("transfer-encoding").find("chunked") != std::string::npos) {  // it wins over Content-Length
    size_t p = body;
    for (;;) {
      size_t eol = in.find("\r\n", p);
      if (eol == std::string::npos) return 0;
      size_t size = std::strtoul(in.c_str() + p, nullptr, 16);
      p = eol + 2;
      if (size == 0) {  // the last chunk, then trailer lines, then an empty line
        if (in.compare(p, 2, "\r\n") == 0) return p + 2;
        size_t end = in.find("\r\n\r\n", p);
        return end == std::string::npos ? 0 : end + 4;
      }
      if (in.size() < p + size + 2) return 0;
      p += size + 2;
    }
  }
  std::string length = header("content-length");
  if (!length.empty()) {
    size_t len = std::strtoul(length.c_str(), nullptr, 10);
    return in.size() >= body + len ? body + len : 0;
  }
  return body;  // no body (e.g. 204) as far as this generator is concerned
}

double pct(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return -1;
  size_t i = std::min(sorted.size() - 1, static_cast<size_t>(sorted.size() * q / 100));
  return static_cast<double>(sorted[i]) / 1e6;
}

int run(int argc, char** argv) {
  std::string connect_to, url;
  bool proxy = false;
  double rate = 1000, duration = 10;
  int connections = 32, max_inflight = 512;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { errno = 0; die(a + " needs a value"); }
      return argv[++i];
    };
    if (a == "--connect") connect_to = next();
    else if (a == "--url") url = next();
    else if (a == "--proxy") proxy = true;
    else if (a == "--rate") rate = std::stod(next());
    else if (a == "--duration") duration = std::stod(next());
    else if (a == "--connections") connections = std::stoi(next());
    else if (a == "--max-inflight") max_inflight = std::stoi(next());
    else { errno = 0; die("unknown option " + a); }
  }
  if (url.rfind("http://", 0) != 0) { errno = 0; die("--url must start with http://"); }
  std::string authority = url.substr(7, url.find('/', 7) - 7);
  std::string path = url.find('/', 7) == std::string::npos ? "/" : url.substr(url.find('/', 7));
  std::string request = "GET " + (proxy ? url : path) + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n";
  sockaddr_in addr = parse_addr(connect_to);

  int ep = epoll_create1(0);
  std::vector<Conn> conns(connections);
  std::vector<size_t> refused;  // slots whose reconnect was refused: tried again at the next dispatch
  int64_t reconnect_failures = 0;
  // Connects connection k (blocking: loopback); false when the peer refused, and the slot stays closed.
  auto open_conn = [&](size_t k) -> bool {
    conns[k] = Conn{};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      close(fd);
      return false;
    }
    set_nonblocking(fd);
    set_nodelay(fd);
    conns[k].fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = k;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return true;
  };
  for (size_t k = 0; k < conns.size(); ++k) {
    if (!open_conn(k)) die("connect " + connect_to);
  }

  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  const uint64_t kTimer = ~0ULL;
  epoll_event tev{};
  tev.events = EPOLLIN;
  tev.data.u64 = kTimer;
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);

  std::deque<int64_t> queue;  // due times of requests waiting for a connection
  std::vector<size_t> idle;
  std::vector<int64_t> latencies;
  int64_t errors = 0, dropped = 0, busy = 0, unexpected = 0;
  bool measuring = false;

  auto finish = [&](size_t k, bool ok, int64_t t) {
    Conn& c = conns[k];
    c.busy = false;
    --busy;
    if (measuring) {
      if (ok) latencies.push_back(t - c.due);
      else ++errors;
    }
  };
  // Closes connection k (its request in flight, if any, failed) and opens it again; a refused reconnect leaves it
  // closed (in `refused`) until the next dispatch. The connection is idle afterwards when it is open.
  auto reset = [&](size_t k, int64_t t) {
    Conn& c = conns[k];
    if (c.fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
      close(c.fd);
      c.fd = -1;
    }
    if (c.busy) finish(k, false, t);
    idle.erase(std::remove(idle.begin(), idle.end(), k), idle.end());
    if (open_conn(k)) {
      idle.push_back(k);
    } else {
      ++reconnect_failures;
      refused.push_back(k);
    }
  };
  auto send_on = [&](size_t k, int64_t due) {
    Conn& c = conns[k];
    c.busy = true;
    c.due = due;
    ++busy;
    ssize_t w = write(c.fd, request.data(), request.size());
    if (w != static_cast<ssize_t>(request.size())) reset(k, now_ns());  // reset by the peer meanwhile: a failure
  };
  auto dispatch = [&]() {
    if (!refused.empty()) {
      std::vector<size_t> retry;
      retry.swap(refused);
      for (size_t k : retry) reset(k, now_ns());
    }
    while (!queue.empty() && !idle.empty()) {
      size_t k = idle.back();
      idle.pop_back();
      int64_t due = queue.front();
      queue.pop_front();
      send_on(k, due);
    }
  };

  std::vector<epoll_event> events(connections + 1);
  char buf[65536];
  auto pump = [&](int timeout_ms) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), timeout_ms);
    for (int i = 0; i < n; ++i) {
      uint64_t k = events[i].data.u64;
      if (k == kTimer) continue;  // the caller reads the clock
      Conn& c = conns[k];
      bool closed = false;
      for (;;) {
        ssize_t got = read(c.fd, buf, sizeof buf);
        if (got > 0) { c.in.append(buf, static_cast<size_t>(got)); continue; }
        if (got == 0 || errno != EAGAIN) closed = true;
        break;
      }
      int64_t t = now_ns();
      for (;;) {
        int status = 0;
        bool close_after = false;
        size_t len = c.in.empty() ? 0 : response_length(c.in, &status, &close_after);
        if (len == 0) break;
        c.in.erase(0, len);
        if (!c.busy || status <= 0) {
          ++unexpected;  // bytes that are no response to a request of ours: a parsing bug or a confused peer
          closed = true;
          break;
        }
        finish(k, status == 200, t);
        if (close_after) {
          closed = true;  // the server said so: do not send on it again
          break;
        }
        idle.push_back(k);
      }
      if (closed) reset(k, t);
    }
    dispatch();
  };

  // Warm every connection outside the measurement.
  for (size_t k = 0; k < conns.size(); ++k) send_on(k, now_ns());
  int64_t warm_deadline = now_ns() + 10'000'000'000LL;
  while (busy > 0 && now_ns() < warm_deadline) pump(100);
  if (busy > 0) { errno = 0; die("warm-up requests got no answer within 10 s"); }

  measuring = true;
  const int64_t total = static_cast<int64_t>(rate * duration);
  const double interval_ns = 1e9 / rate;
  const int64_t t0 = now_ns() + 50'000'000;
  int64_t i = 0;
  while (i < total) {
    int64_t now = now_ns();
    while (i < total && t0 + static_cast<int64_t>(i * interval_ns) <= now) {
      int64_t due = t0 + static_cast<int64_t>(i * interval_ns);
      if (busy + static_cast<int64_t>(queue.size()) >= max_inflight) ++dropped;
      else queue.push_back(due);
      ++i;
    }
    dispatch();
    if (i < total) {
      int64_t next = t0 + static_cast<int64_t>(i * interval_ns);
      itimerspec its{};
      its.it_value.tv_sec = next / 1000000000;
      its.it_value.tv_nsec = next % 1000000000;
      timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, nullptr);
      pump(-1);
      uint64_t expirations;
      while (read(tfd, &expirations, sizeof expirations) > 0) {}
    }
  }
  int64_t drain_deadline = now_ns() + 10'000'000'000LL;
  while ((busy > 0 || !queue.empty()) && now_ns() < drain_deadline) pump(100);
  errors += busy + static_cast<int64_t>(queue.size());  // unanswered after 10 s
  double elapsed = static_cast<double>(now_ns() - t0) / 1e9;
  std::sort(latencies.begin(), latencies.end());
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  double own_cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::printf(
      "{\"sent\": %lld, \"ok\": %zu, \"errors\": %lld, \"dropped\": %lld, \"elapsed_s\": %.6f, "
      "\"achieved_rps\": %.3f, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"generator_cpu_s\": %.3f, "
      "\"unexpected_responses\": %lld, \"reconnect_failures\": %lld}\n",
      static_cast<long long>(total), latencies.size(), static_cast<long long>(errors),
      static_cast<long long>(dropped), elapsed, elapsed > 0 ? latencies.size() / elapsed : 0.0,
      pct(latencies, 50), pct(latencies, 90), pct(latencies, 99), own_cpu, static_cast<long long>(unexpected),
      static_cast<long long>(reconnect_failures));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 3 && std::string(argv[1]) == "serve") return serve(argv[2]);
  if (argc >= 2 && std::string(argv[1]) == "run") return run(argc, argv);
  std::fprintf(stderr, "usage: loadgen serve HOST:PORT | loadgen run --connect HOST:PORT --url URL [--proxy] "
                       "[--rate R] [--duration S] [--connections C] [--max-inflight M]\n");
  return 2;
}
