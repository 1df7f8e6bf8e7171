// Compiled driver process for bench/xds_scale.py: simulated Envoy proxies on real gRPC ADS streams.
//
// The same behaviour and stdin/stdout line protocol as the Python driver (`_drive`, `SimProxy` and
// `ContentCache` in xds_scale.py), so the coordinator can run either; this one exists because the Python
// driver's CPU (grpc.aio's read/write path) bounded both meshplane and the baseline on a 2-core machine.
//
//   xds_driver --port P --first F --count C [--threads T]
//
// Proxies F .. F+C-1 each hold one StreamAggregatedResources stream (SotW) and ACK like Envoy: wildcard CDS and
// LDS first, then EDS for the clusters' EDS service names and RDS for the route configuration names the
// listeners reference; every ACK names the EDS/RDS resources the proxy references. Requests are encoded by
// hand and responses walked in the protobuf wire format (no generated code): grpc::GenericStub moves raw
// ByteBuffers. Resources are parsed once per process and content (by their bytes), like the Python
// ContentCache: every proxy of one scope receives identical bytes.
//
// Protocol (one command per stdin line, one JSON object per stdout line):
//   (at start)              -> {"ready": true}
//   start                   -> opens the streams; {"complete": [t, ...]} once every proxy holds CDS, LDS and
//                              every EDS/RDS resource it names (t: CLOCK_MONOTONIC seconds, per proxy)
//   watch CLUSTER ADDRESS   -> {"armed": true}, then {"hits": [t, ...]} once every proxy received a
//                              ClusterLoadAssignment for CLUSTER holding ADDRESS
//   quit (or end of input)  -> {"cpu_s": ..., "peak_rss_mb": ..., "parsed_regions": N}
//
// Threads: --threads workers (default 2), each draining its own CompletionQueue; proxy k is served by worker
// k % threads, so one proxy's state is only touched by one thread. Shared: the content cache (a mutex; the
// common case compares a response's resources with the last ones seen outside the lock) and the counters the
// main thread waits on.

#include <absl/synchronization/mutex.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

const std::string kCds = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const std::string kEds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const std::string kLds = "type.googleapis.com/envoy.config.listener.v3.Listener";
const std::string kRds = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const std::string kMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const std::string kNs = "bench";

double Now() {  // what Python's time.perf_counter() reads on Linux
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "xds_driver: %s\n", msg.c_str());
  std::fflush(stderr);
  _exit(1);
}

// --- protobuf wire format ---------------------------------------------------------------------------------

struct Field {
  uint32_t number = 0;
  uint32_t wire = 0;
  uint64_t varint = 0;    // wire type 0
  std::string_view data;  // wire type 2
};

// Walks the fields of one encoded message. Malformed input throws.
class Walker {
 public:
  explicit Walker(std::string_view buf) : p_(buf.data()), end_(buf.data() + buf.size()) {}

  bool Next(Field* f) {
    if (p_ >= end_) return false;
    uint64_t key = Varint();
    f->number = static_cast<uint32_t>(key >> 3);
    f->wire = static_cast<uint32_t>(key & 7);
    switch (f->wire) {
      case 0:
        f->varint = Varint();
        break;
      case 1:
        Skip(8);
        break;
      case 2: {
        uint64_t n = Varint();
        if (n > static_cast<uint64_t>(end_ - p_)) throw std::runtime_error("truncated length-delimited field");
        f->data = std::string_view(p_, n);
        p_ += n;
        break;
      }
      case 5:
        Skip(4);
        break;
      default:
        throw std::runtime_error("unexpected wire type " + std::to_string(f->wire));
    }
    return true;
  }

  size_t Offset(const char* base) const { return static_cast<size_t>(p_ - base); }

 private:
  uint64_t Varint() {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) throw std::runtime_error("truncated varint");
      auto b = static_cast<uint8_t>(*p_++);
      result |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (b < 0x80) return result;
    }
    throw std::runtime_error("varint too long");
  }
  void Skip(size_t n) {
    if (n > static_cast<size_t>(end_ - p_)) throw std::runtime_error("truncated fixed field");
    p_ += n;
  }

  const char* p_;
  const char* end_;
};

void PutVarint(std::string* out, uint64_t n) {
  while (n >= 0x80) {
    out->push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out->push_back(static_cast<char>(n));
}

void PutField(std::string* out, uint32_t number, std::string_view value) {
  PutVarint(out, (static_cast<uint64_t>(number) << 3) | 2);
  PutVarint(out, value.size());
  out->append(value);
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// --- what a proxy needs from the resources ----------------------------------------------------------------

// One resource's name and what it references or holds (field numbers from the envoy v3 protos).
struct Info {
  int id = -1;                     // the interned name
  std::string name;
  int eds = -1;                    // CDS: the EDS service name (id) when type is EDS and the name is not empty
  std::vector<int> routes;         // LDS: route configuration names (ids, sorted, unique)
  std::vector<std::string> addrs;  // EDS: every lb endpoint's socket address (sorted, unique)
};

// The resource names referenced by a response's resources (CDS: EDS names, LDS: RDS names), with their
// encoding as DiscoveryRequest.resource_names (sorted by name, like the Python driver), built once.
struct Wanted {
  std::vector<int> ids;  // sorted: the identity of the set
  std::string field;
};

struct Content {
  std::vector<const Info*> items;  // by name, the last resource of a name wins (a dict in Python)
  std::shared_ptr<const Wanted> wanted;

  const Info* Find(std::string_view name) const {
    for (const Info* i : items)
      if (i->name == name) return i;
    return nullptr;
  }
};

bool SameWanted(const std::shared_ptr<const Wanted>& a, const std::shared_ptr<const Wanted>& b) {
  if (a == b) return true;
  size_t na = a ? a->ids.size() : 0, nb = b ? b->ids.size() : 0;
  if (na != nb) return false;
  return na == 0 || a->ids == b->ids;
}

class ContentCache {
 public:
  // The content of a response's resources region (see ScanResponse) for its type.
  std::shared_ptr<const Content> Get(const std::string& type_url, std::string_view region) {
    std::shared_ptr<const Region> last;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = last_.find(type_url);
      if (it != last_.end()) last = it->second;
    }
    if (last && last->bytes == region) return last->content;  // compared outside the lock
    std::lock_guard<std::mutex> lock(mu_);
    auto it = last_.find(type_url);
    if (it != last_.end() && it->second != last && it->second->bytes == region) return it->second->content;
    ++parsed_regions_;
    auto content = std::make_shared<Content>();
    std::unordered_map<int, const Info*> by_name;
    std::vector<int> order;
    Walker w(region);
    Field f;
    while (w.Next(&f)) {
      if (f.number != 2 || f.wire != 2) continue;  // DiscoveryResponse.resources (Any)
      std::string_view value;
      Walker any(f.data);
      Field g;
      while (any.Next(&g))
        if (g.number == 2 && g.wire == 2) value = g.data;  // Any.value
      const Info* info = Resource(type_url, value);
      if (by_name.emplace(info->id, info).second) {
        order.push_back(info->id);
      } else {
        by_name[info->id] = info;
      }
    }
    for (int id : order) content->items.push_back(by_name[id]);
    std::vector<int> wanted;
    if (type_url == kCds) {
      for (const Info* i : content->items)
        if (i->eds >= 0) wanted.push_back(i->eds);
    } else if (type_url == kLds) {
      for (const Info* i : content->items) wanted.insert(wanted.end(), i->routes.begin(), i->routes.end());
    }
    content->wanted = MakeWanted(std::move(wanted));
    auto region_copy = std::make_shared<Region>();
    region_copy->bytes.assign(region);
    region_copy->content = content;
    last_[type_url] = region_copy;
    return content;
  }

  long parsed_regions() {
    std::lock_guard<std::mutex> lock(mu_);
    return parsed_regions_;
  }

 private:
  struct Region {
    std::string bytes;
    std::shared_ptr<const Content> content;
  };

  int Intern(std::string_view name) {
    auto it = ids_.find(std::string(name));
    if (it != ids_.end()) return it->second;
    int id = static_cast<int>(names_.size());
    names_.emplace_back(name);
    ids_.emplace(std::string(name), id);
    return id;
  }

  std::shared_ptr<const Wanted> MakeWanted(std::vector<int> ids) {
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    auto out = std::make_shared<Wanted>();
    std::vector<const std::string*> names;
    for (int id : ids) names.push_back(&names_[id]);
    std::sort(names.begin(), names.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
    for (const std::string* n : names) PutField(&out->field, 3, *n);
    out->ids = std::move(ids);
    return out;
  }

  const Info* Resource(const std::string& type_url, std::string_view value) {
    std::string key(value);
    auto it = resources_.find(key);
    if (it != resources_.end()) return it->second.get();
    auto info = std::make_unique<Info>();
    if (type_url == kCds) {
      ParseCluster(value, info.get());
    } else if (type_url == kLds) {
      ParseListener(value, info.get());
    } else if (type_url == kRds) {
      ParseNameOnly(value, info.get());
    } else if (type_url == kEds) {
      ParseAssignment(value, info.get());
    } else {
      throw std::runtime_error("unexpected type_url " + type_url);
    }
    info->id = Intern(info->name);
    const Info* out = info.get();
    resources_.emplace(std::move(key), std::move(info));
    return out;
  }

  // Cluster: name 1, type 2 (EDS = 3; oneof cluster_discovery_type with cluster_type 38),
  // eds_cluster_config 3 -> service_name 2. EDS name: service_name or the cluster's name.
  void ParseCluster(std::string_view value, Info* info) {
    Walker w(value);
    Field f;
    uint64_t type = 0;
    std::string_view service;
    while (w.Next(&f)) {
      if (f.number == 1 && f.wire == 2) {
        info->name.assign(f.data);
      } else if (f.number == 2 && f.wire == 0) {
        type = f.varint;
      } else if (f.number == 38 && f.wire == 2) {
        type = 0;  // the oneof now holds cluster_type
      } else if (f.number == 3 && f.wire == 2) {
        Walker e(f.data);
        Field g;
        while (e.Next(&g))
          if (g.number == 2 && g.wire == 2) service = g.data;
      }
    }
    if (type == 3) {
      std::string eds(service.empty() ? std::string_view(info->name) : service);
      if (!eds.empty()) info->eds = Intern(eds);
    }
  }

  // Listener: name 1, filter_chains 3, default_filter_chain 25; FilterChain: filters 3; Filter: typed_config 4
  // (Any: type_url 1, value 2; oneof with config_discovery 5); HttpConnectionManager: rds 3 (oneof
  // route_specifier with route_config 4, scoped_routes 31) -> route_config_name 2.
  void ParseListener(std::string_view value, Info* info) {
    Walker w(value);
    Field f;
    std::vector<int> routes;
    while (w.Next(&f)) {
      if (f.number == 1 && f.wire == 2) {
        info->name.assign(f.data);
      } else if ((f.number == 3 || f.number == 25) && f.wire == 2) {
        Walker chain(f.data);
        Field g;
        while (chain.Next(&g))
          if (g.number == 3 && g.wire == 2) FilterRoutes(g.data, &routes);
      }
    }
    std::sort(routes.begin(), routes.end());
    routes.erase(std::unique(routes.begin(), routes.end()), routes.end());
    info->routes = std::move(routes);
  }

  void FilterRoutes(std::string_view filter, std::vector<int>* routes) {
    Walker w(filter);
    Field f;
    std::string_view any;
    bool typed = false;
    while (w.Next(&f)) {
      if (f.number == 4 && f.wire == 2) {
        any = f.data;
        typed = true;
      } else if (f.number == 5 && f.wire == 2) {
        typed = false;
      }
    }
    if (!typed) return;
    std::string_view type_url, config;
    Walker a(any);
    while (a.Next(&f)) {
      if (f.number == 1 && f.wire == 2) type_url = f.data;
      if (f.number == 2 && f.wire == 2) config = f.data;
    }
    if (!EndsWith(type_url, "HttpConnectionManager")) return;
    bool rds = false;
    std::string_view name;
    Walker h(config);
    while (h.Next(&f)) {
      if (f.number == 3 && f.wire == 2) {
        rds = true;
        Walker r(f.data);
        Field g;
        while (r.Next(&g))
          if (g.number == 2 && g.wire == 2) name = g.data;
      } else if ((f.number == 4 || f.number == 31) && f.wire == 2) {
        rds = false;
        name = {};
      }
    }
    if (rds) routes->push_back(Intern(name));
  }

  void ParseNameOnly(std::string_view value, Info* info) {  // RouteConfiguration: name 1
    Walker w(value);
    Field f;
    while (w.Next(&f))
      if (f.number == 1 && f.wire == 2) info->name.assign(f.data);
  }

  // ClusterLoadAssignment: cluster_name 1, endpoints 2; LocalityLbEndpoints: lb_endpoints 2; LbEndpoint:
  // endpoint 1 (oneof with endpoint_name 5); Endpoint: address 1; Address: socket_address 1 (oneof with pipe 2,
  // envoy_internal_address 3); SocketAddress: address 2.
  void ParseAssignment(std::string_view value, Info* info) {
    Walker w(value);
    Field f;
    while (w.Next(&f)) {
      if (f.number == 1 && f.wire == 2) {
        info->name.assign(f.data);
      } else if (f.number == 2 && f.wire == 2) {
        Walker locality(f.data);
        Field g;
        while (locality.Next(&g))
          if (g.number == 2 && g.wire == 2) info->addrs.emplace_back(EndpointAddress(g.data));
      }
    }
    std::sort(info->addrs.begin(), info->addrs.end());
    info->addrs.erase(std::unique(info->addrs.begin(), info->addrs.end()), info->addrs.end());
  }

  static std::string_view LastString(std::string_view msg, uint32_t number) {
    std::string_view out;
    Walker w(msg);
    Field f;
    while (w.Next(&f))
      if (f.number == number && f.wire == 2) out = f.data;
    return out;
  }

  static std::string EndpointAddress(std::string_view lb_endpoint) {
    // Sub-messages that occur more than once are merged by protobuf; for these singular strings the last
    // occurrence wins, which is what walking every occurrence in order gives.
    std::string address;
    Walker w(lb_endpoint);
    Field f;
    while (w.Next(&f)) {
      if (f.number == 1 && f.wire == 2) {
        Walker e(f.data);
        Field g;
        while (e.Next(&g)) {
          if (g.number == 1 && g.wire == 2) {
            Walker a(g.data);
            Field h;
            while (a.Next(&h)) {
              if (h.number == 1 && h.wire == 2) {
                std::string_view s = LastString(h.data, 2);
                if (!s.empty()) address.assign(s);
              } else if ((h.number == 2 || h.number == 3) && h.wire == 2) {
                address.clear();
              }
            }
          }
        }
      } else if (f.number == 5 && f.wire == 2) {
        address.clear();
      }
    }
    return address;
  }

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Region>> last_;
  std::unordered_map<std::string, std::unique_ptr<Info>> resources_;
  std::unordered_map<std::string, int> ids_;
  std::vector<std::string> names_;
  long parsed_regions_ = 0;
};

struct Response {
  std::string version, type_url, nonce;
  std::string_view region;  // every resources field (tags included) and whatever lies between them
};

// DiscoveryResponse: version_info 1, resources 2, type_url 4, nonce 5.
Response ScanResponse(std::string_view data) {
  Response r;
  Walker w(data);
  Field f;
  size_t start = 0, end = 0;
  bool any = false;
  size_t before = 0;
  while (w.Next(&f)) {
    size_t after = w.Offset(data.data());
    if (f.wire == 2) {
      if (f.number == 2) {
        if (!any) start = before;
        any = true;
        end = after;
      } else if (f.number == 1) {
        r.version.assign(f.data);
      } else if (f.number == 4) {
        r.type_url.assign(f.data);
      } else if (f.number == 5) {
        r.nonce.assign(f.data);
      }
    }
    before = after;
  }
  r.region = data.substr(start, end - start);
  return r;
}

// An encoded DiscoveryRequest (field order as Envoy writes it: version, node, names, type, nonce).
std::string Request(const std::string& type_url, const std::string& version = "", const std::string& nonce = "",
                    const Wanted* names = nullptr, const std::string& node = "") {
  std::string out;
  if (!version.empty()) PutField(&out, 1, version);
  out += node;
  if (names != nullptr) out += names->field;
  PutField(&out, 4, type_url);
  if (!nonce.empty()) PutField(&out, 5, nonce);
  return out;
}

std::string NodeId(int k) {
  std::ostringstream ip;
  ip << "127." << 10 + k / 62500 << "." << (k / 250) % 250 << "." << k % 250 + 1;
  return "sidecar~" + ip.str() + "~client-" + std::to_string(k) + "." + kNs + "~" + kNs + ".svc.cluster.local";
}

// --- proxies ----------------------------------------------------------------------------------------------

struct Watch {
  int gen;
  std::string cluster, address;
};

struct Shared {
  ContentCache cache;
  std::atomic<const Watch*> watch{nullptr};
  std::atomic<int> incomplete{0};
  std::atomic<int> unhit{0};
  std::atomic<bool> quitting{false};
  std::mutex mu;
  std::condition_variable cv;
  int first = 0;

  void Notify() {
    std::lock_guard<std::mutex> lock(mu);
    cv.notify_all();
  }
  void WaitZero(const std::atomic<int>& counter) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return counter.load() == 0; });
  }
};

class Proxy;

struct Tag {
  enum Kind { kStart, kRead, kWrite, kFinish };
  Proxy* proxy;
  Kind kind;
};

class Proxy {
 public:
  Proxy(int k, Shared* shared) : k_(k), shared_(shared) {}

  double complete_at() const { return complete_at_; }
  double watch_at() const { return watch_at_; }
  grpc::ClientContext* context() { return &ctx_; }

  void Start(grpc::GenericStub* stub, grpc::CompletionQueue* cq) {  // main thread, before any event
    call_ = stub->PrepareCall(&ctx_, kMethod, cq);
    if (!call_) Die("proxy " + std::to_string(k_) + ": could not prepare the call");
    call_->StartCall(&start_tag_);
  }

  // Worker thread only from here on.
  void Handle(Tag::Kind kind, bool ok) {
    switch (kind) {
      case Tag::kStart:
        if (!ok) return Finish();
        {
          std::string node;
          PutField(&node, 1, NodeId(k_));
          PutField(&node, 2, "client-" + std::to_string(k_) + "." + kNs);
          std::string field;
          PutField(&field, 2, node);
          Send(Request(kCds, "", "", nullptr, field));
        }
        Send(Request(kLds));
        call_->Read(&in_, &read_tag_);
        return;
      case Tag::kRead:
        if (!ok) return Finish();
        OnResponse();
        call_->Read(&in_, &read_tag_);
        return;
      case Tag::kWrite:
        writing_ = false;
        if (!ok) {
          out_.clear();  // the stream is gone; the pending read reports it
          return;
        }
        Flush();
        return;
      case Tag::kFinish:
        if (!shared_->quitting.load()) {
          Die("driver " + std::to_string(shared_->first) + ": proxy " + std::to_string(k_) +
              " failed: stream ended with status " + std::to_string(status_.error_code()) + " " +
              status_.error_message());
        }
        return;
    }
  }

 private:
  void Finish() {
    if (finishing_) return;
    finishing_ = true;
    call_->Finish(&status_, &finish_tag_);
  }

  void Send(std::string bytes) {
    out_.push_back(std::move(bytes));
    Flush();
  }

  void Flush() {
    if (writing_ || out_.empty()) return;
    grpc::Slice slice(out_.front());
    out_.pop_front();
    grpc::ByteBuffer buf(&slice, 1);
    writing_ = true;
    call_->Write(buf, &write_tag_);
  }

  void OnResponse() {
    static thread_local std::string data;
    static thread_local std::vector<grpc::Slice> slices;
    slices.clear();
    if (!in_.Dump(&slices).ok()) Die("could not read a response's bytes");
    data.clear();
    for (const grpc::Slice& s : slices) data.append(reinterpret_cast<const char*>(s.begin()), s.size());
    in_.Clear();

    Response r = ScanResponse(data);
    std::shared_ptr<const Content> content = shared_->cache.Get(r.type_url, r.region);
    const std::string& t = r.type_url;
    if (t == kCds) got_cds_ = true;
    if (t == kLds) got_lds_ = true;
    std::string extra;
    const Wanted* names = nullptr;
    if (t == kCds) {
      if (!SameWanted(content->wanted, eds_wanted_)) {
        bool first = !eds_wanted_ || eds_wanted_->ids.empty();
        eds_wanted_ = content->wanted;
        if (first) extra = Request(kEds, "", "", eds_wanted_.get());
      }
    } else if (t == kLds) {
      if (!SameWanted(content->wanted, rds_wanted_)) {
        bool first = !rds_wanted_ || rds_wanted_->ids.empty();
        rds_wanted_ = content->wanted;
        if (first) extra = Request(kRds, "", "", rds_wanted_.get());
      }
    } else if (t == kEds) {
      names = eds_wanted_.get();
      if (complete_at_ == 0.0)
        for (const Info* i : content->items) Mark(&eds_, i->id);
      const Watch* w = shared_->watch.load();
      if (w != nullptr && hit_gen_ != w->gen) {
        const Info* cla = nullptr;
        for (const Info* i : content->items)
          if (i->name == w->cluster) cla = i;
        if (cla != nullptr && std::binary_search(cla->addrs.begin(), cla->addrs.end(), w->address)) {
          watch_at_ = Now();
          hit_gen_ = w->gen;
          if (shared_->unhit.fetch_sub(1) == 1) shared_->Notify();
        }
      }
    } else if (t == kRds) {
      names = rds_wanted_.get();
      if (complete_at_ == 0.0)
        for (const Info* i : content->items) Mark(&rds_, i->id);
    }
    Send(Request(t, r.version, r.nonce, names));
    if (!extra.empty()) Send(std::move(extra));
    if (complete_at_ == 0.0 && Complete()) {
      complete_at_ = Now();
      if (shared_->incomplete.fetch_sub(1) == 1) shared_->Notify();
    }
  }

  static void Mark(std::vector<char>* set, int id) {
    if (static_cast<size_t>(id) >= set->size()) set->resize(id + 1);
    (*set)[id] = 1;
  }

  static bool Holds(const std::vector<char>& set, const std::shared_ptr<const Wanted>& wanted) {
    if (wanted)
      for (int id : wanted->ids)
        if (static_cast<size_t>(id) >= set.size() || !set[id]) return false;
    return true;
  }

  bool Complete() const { return got_cds_ && got_lds_ && Holds(eds_, eds_wanted_) && Holds(rds_, rds_wanted_); }

  const int k_;
  Shared* const shared_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::ByteBuffer in_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool finishing_ = false;
  grpc::Status status_;
  std::shared_ptr<const Wanted> eds_wanted_, rds_wanted_;
  std::vector<char> eds_, rds_;  // names received before completion, by interned id
  bool got_cds_ = false, got_lds_ = false;
  double complete_at_ = 0.0;
  double watch_at_ = 0.0;
  int hit_gen_ = 0;
  Tag start_tag_{this, Tag::kStart}, read_tag_{this, Tag::kRead}, write_tag_{this, Tag::kWrite},
      finish_tag_{this, Tag::kFinish};
};

void Work(grpc::CompletionQueue* cq) {
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) {
    auto* t = static_cast<Tag*>(tag);
    try {
      t->proxy->Handle(t->kind, ok);
    } catch (const std::exception& e) {
      Die(std::string("malformed response: ") + e.what());
    }
  }
}

// --- the process ------------------------------------------------------------------------------------------

void Reply(const std::string& json) {
  std::fwrite(json.data(), 1, json.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string Times(const char* key, const std::vector<double>& ts) {
  std::string out = "{\"";
  out += key;
  out += "\": [";
  char buf[64];
  for (size_t i = 0; i < ts.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s%.9f", i ? ", " : "", ts[i]);
    out += buf;
  }
  return out + "]}";
}

double PeakRssMb() {  // VmHWM, like the Python driver's _peak_rss_mb
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

std::string Usage(long parsed_regions) {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  char buf[160];
  std::snprintf(buf, sizeof buf, "{\"cpu_s\": %.6f, \"peak_rss_mb\": %.3f, \"parsed_regions\": %ld}", cpu,
                PeakRssMb(), parsed_regions);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil checks every mutex acquisition for lock-order cycles (a debug aid, ~2 % of this process).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  int port = 0, first = 0, count = 0, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (a == "--port") {
      port = v;
    } else if (a == "--first") {
      first = v;
    } else if (a == "--count") {
      count = v;
    } else if (a == "--threads") {
      threads = std::max(1, v);
    } else {
      Die("unknown flag " + a);
    }
  }
  if (port <= 0) Die("--port is required");

  Shared shared;
  shared.first = first;
  std::vector<std::unique_ptr<Proxy>> proxies;
  for (int k = first; k < first + count; ++k) proxies.push_back(std::make_unique<Proxy>(k, &shared));
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int c = 0; c < std::max(1, (count + 99) / 100); ++c) {  // at most 100 proxies per channel, like the Python
    // driver (count / 100 put up to 199 on one)
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(1 << 27);
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    args.SetInt("grpc.channel_id", first + c);
    stubs.push_back(std::make_unique<grpc::GenericStub>(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<std::unique_ptr<grpc::CompletionQueue>> cqs;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    cqs.push_back(std::make_unique<grpc::CompletionQueue>());
    workers.emplace_back(Work, cqs.back().get());
  }
  std::vector<std::unique_ptr<Watch>> watches;  // every watch armed stays alive (proxies may still read one)

  Reply("{\"ready\": true}");
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::vector<std::string> cmd;
    for (std::string w; words >> w;) cmd.push_back(w);
    if (cmd.empty() || cmd[0] == "quit") break;
    if (cmd[0] == "start") {
      shared.incomplete.store(static_cast<int>(proxies.size()));
      for (size_t i = 0; i < proxies.size(); ++i)
        proxies[i]->Start(stubs[i % stubs.size()].get(), cqs[i % cqs.size()].get());
      shared.WaitZero(shared.incomplete);
      std::vector<double> ts;
      for (auto& p : proxies) ts.push_back(p->complete_at());
      Reply(Times("complete", ts));
    } else if (cmd[0] == "watch" && cmd.size() >= 3) {
      watches.push_back(std::make_unique<Watch>(
          Watch{static_cast<int>(watches.size()) + 1, cmd[1], cmd[2]}));
      shared.unhit.store(static_cast<int>(proxies.size()));
      shared.watch.store(watches.back().get());
      Reply("{\"armed\": true}");
      shared.WaitZero(shared.unhit);
      std::vector<double> ts;
      for (auto& p : proxies) ts.push_back(p->watch_at());
      Reply(Times("hits", ts));
    }
  }
  shared.quitting.store(true);
  for (auto& p : proxies) p->context()->TryCancel();
  Reply(Usage(shared.cache.parsed_regions()));
  _exit(0);  // no orderly teardown of gRPC: the streams are cancelled and nothing remains to report
}
