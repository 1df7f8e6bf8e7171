// meshplane console: read-only views over the control plane's APIs, and the live topology graph.
// Plain JavaScript, no build step; cytoscape (static/vendor/, installed by scripts/setup) draws the graph.
"use strict";

const REFRESH_MS = 3000;
const state = { page: "topology", cy: null, topology: null, layoutKey: "", timer: null };
window.meshplaneConsole = state; // the browser test reads the graph from here

function token() { return sessionStorage.getItem("meshplane-token") || ""; }

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const resp = await fetch(path, { headers });
  if (resp.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("unauthorized: enter a token");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${body.message || ""}`);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function lock() { return el("img", { src: "/console/lock.svg", class: "lock", alt: "locked" }); }

function table(columns, rows) {
  const t = el("table", {}, el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))));
  const body = el("tbody");
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: columns.length, class: "muted" }, "none")));
  for (const r of rows) body.append(el("tr", {}, ...r.map((v) => (v instanceof Node && v.tagName === "TD") ? v : el("td", {}, v))));
  t.append(body);
  return t;
}

function age(ts) {
  if (!ts) return "";
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  return s < 90 ? `${Math.round(s)}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "bad" : "muted";
}

// ---- topology ---------------------------------------------------------------------------------------------

function fmt(n, digits) { return n == null ? "–" : Number(n).toFixed(digits); }

function edgeLabel(e) {
  const parts = [`${fmt(e.rps, 2)} rps`, `${fmt(e.errorRate * 100, 1)}% err`];
  if (e.p99Ms != null) parts.push(`p99 ${fmt(e.p99Ms, 1)} ms`);
  return (e.mtls === "mutual_tls" ? "mTLS · " : "") + parts.join(" · ");
}

function elements(topo) {
  const out = [];
  const clusters = new Set();
  const zones = new Set();
  for (const n of topo.nodes) {
    const cluster = `cluster:${n.cluster}`;
    if (!clusters.has(cluster)) {
      clusters.add(cluster);
      out.push({ group: "nodes", data: { id: cluster, label: n.cluster, type: "cluster" } });
    }
    let parent = cluster;
    if (n.zone) {
      parent = `zone:${n.cluster}/${n.zone}`;
      if (!zones.has(parent)) {
        zones.add(parent);
        out.push({ group: "nodes", data: { id: parent, parent: cluster, label: n.zone, type: "zone" } });
      }
    }
    out.push({ group: "nodes", data: { id: n.id, parent, label: `${n.workload}\n${n.namespace}`, type: n.kind } });
  }
  for (const e of topo.edges) {
    out.push({ group: "edges", data: { ...e, label: edgeLabel(e), error: e.errorRate > 0.01 ? 1 : 0 } });
  }
  return out;
}

const STYLE = [
  { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 10, "text-valign": "bottom",
    "text-margin-y": 4, width: 26, height: 26, "background-color": "#4f7fbf" } },
  { selector: 'node[type = "router"]', style: { shape: "round-rectangle", "background-color": "#7a58b8" } },
  { selector: 'node[type = "unknown"]', style: { "background-color": "#9aa3ae" } },
  { selector: 'node[type = "cluster"]', style: { "text-valign": "top", "font-size": 12, "font-weight": "bold",
    "background-color": "#eef3fa", "border-color": "#9db4d3", "border-width": 1, padding: 18 } },
  { selector: 'node[type = "zone"]', style: { "text-valign": "top", "font-size": 10, "background-color": "#f8fafc",
    "border-color": "#c7d2e0", "border-style": "dashed", "border-width": 1, padding: 12 } },
  { selector: "edge", style: { label: "data(label)", "font-size": 9, "curve-style": "bezier",
    "target-arrow-shape": "triangle", width: 2, "line-color": "#8a94a3", "target-arrow-color": "#8a94a3",
    "line-style": "dashed", "text-background-color": "#fff", "text-background-opacity": 0.85,
    "text-background-padding": 2, "text-rotation": "autorotate" } },
  { selector: 'edge[mtls = "mutual_tls"]', style: { "line-style": "solid", "line-color": "#2f7d32",
    "target-arrow-color": "#2f7d32" } },
  { selector: "edge[error = 1]", style: { "line-color": "#c62828", "target-arrow-color": "#c62828" } },
];

function drawGraph(topo) {
  const missing = document.getElementById("graph-missing");
  if (typeof window.cytoscape !== "function") {
    missing.hidden = false;
    missing.textContent = "The graph library is missing (static/vendor/cytoscape.min.js): run scripts/setup. " +
      "The edges below are live.";
    return;
  }
  const els = elements(topo);
  if (!state.cy) {
    state.cy = window.cytoscape({ container: document.getElementById("graph"), style: STYLE, elements: [],
      wheelSensitivity: 0.3 });
  }
  const cy = state.cy;
  const wanted = new Set(els.map((e) => e.data.id));
  cy.batch(() => {
    cy.elements().forEach((e) => { if (!wanted.has(e.id())) cy.remove(e); });
    for (const e of els) {
      const have = cy.getElementById(e.data.id);
      if (have.nonempty()) have.data(e.data); else cy.add(e);
    }
  });
  const key = [...wanted].sort().join("|");
  if (key !== state.layoutKey) {
    state.layoutKey = key;
    const pos = positions(topo);
    cy.layout({ name: "preset", positions: (n) => pos[n.id()], fit: true, padding: 24 }).run();
  }
}

// Left to right by call depth (callers first), clusters side by side, zones stacked inside a cluster. A workload
// without traffic takes the depth its namesake has in another cluster, so the clusters line up.
const COL_W = 270, ROW_H = 80, CLUSTER_GAP = 110, ZONE_GAP = 70;

function depths(topo) {
  const incoming = {};
  for (const e of topo.edges) (incoming[e.target] = incoming[e.target] || []).push(e.source);
  const memo = {};
  const depth = (id, seen) => {
    if (id in memo) return memo[id];
    if (seen.has(id)) return 0; // a cycle: cut it
    seen.add(id);
    const from = incoming[id] || [];
    const d = from.length ? 1 + Math.max(...from.map((s) => depth(s, seen))) : 0;
    seen.delete(id);
    return (memo[id] = d);
  };
  const byName = {};
  for (const n of topo.nodes) {
    if (incoming[n.id] || topo.edges.some((e) => e.source === n.id)) {
      const k = `${n.namespace}/${n.workload}`;
      byName[k] = Math.max(byName[k] || 0, depth(n.id, new Set()));
    }
  }
  const out = {};
  for (const n of topo.nodes) out[n.id] = n.id in memo ? memo[n.id] : (byName[`${n.namespace}/${n.workload}`] || 0);
  return out;
}

function positions(topo) {
  const d = depths(topo);
  const clusters = {};
  for (const n of topo.nodes) {
    const zones = (clusters[n.cluster] = clusters[n.cluster] || {});
    (zones[n.zone] = zones[n.zone] || []).push(n);
  }
  const pos = {};
  let x0 = 0;
  for (const cluster of Object.keys(clusters).sort()) {
    let y0 = 0, maxDepth = 0;
    for (const zone of Object.keys(clusters[cluster]).sort()) {
      const rows = {};
      const order = (a, b) => (a.kind === "router" ? 0 : 1) - (b.kind === "router" ? 0 : 1) || a.id.localeCompare(b.id);
      for (const n of clusters[cluster][zone].sort(order)) {
        const col = d[n.id];
        maxDepth = Math.max(maxDepth, col);
        rows[col] = (rows[col] || 0) + 1;
        pos[n.id] = { x: x0 + col * COL_W, y: y0 + (rows[col] - 1) * ROW_H };
      }
      y0 += Math.max(...Object.values(rows)) * ROW_H + ZONE_GAP;
    }
    x0 += maxDepth * COL_W + CLUSTER_GAP + COL_W / 2;
  }
  return pos;
}

function renderTopology(topo) {
  state.topology = topo;
  document.getElementById("window").textContent = topo.windowSeconds;
  const failed = topo.scrape.filter((s) => s.error);
  document.getElementById("topology-summary").textContent =
    `${topo.nodes.length} workloads · ${topo.edges.length} edges · ${topo.scrape.length - failed.length}/` +
    `${topo.scrape.length} proxies read · updated ${new Date().toLocaleTimeString()}`;
  drawGraph(topo);
  const byId = Object.fromEntries(topo.nodes.map((n) => [n.id, n]));
  const name = (id) => (byId[id] ? `${byId[id].workload}.${byId[id].namespace} (${byId[id].cluster})` : id);
  const edges = document.querySelector("#edges tbody");
  edges.replaceChildren(...(topo.edges.length ? topo.edges.map((e) => el("tr", { "data-edge": e.id },
    el("td", {}, name(e.source)), el("td", {}, name(e.target)), el("td", {}, (e.services || []).join(", ") || "–"),
    el("td", { class: "num" }, fmt(e.rps, 2)),
    el("td", { class: "num" + (e.errorRate > 0.01 ? " bad" : "") }, `${fmt(e.errorRate * 100, 1)}%`),
    el("td", { class: "num" }, e.p99Ms == null ? "–" : `${fmt(e.p99Ms, 1)} ms`),
    el("td", { class: e.mtls === "mutual_tls" ? "good" : "" }, ...(e.mtls === "mutual_tls" ? [lock(), " mutual TLS"] : [e.mtls]))))
    : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no requests in the window yet"))]));
  const scrapes = document.querySelector("#scrapes tbody");
  scrapes.replaceChildren(...topo.scrape.map((s) => el("tr", {}, el("td", {}, s.workload), el("td", {}, s.url || "–"),
    el("td", {}, s.lastSuccess ? `${age(s.lastSuccess)} ago` : "never"), el("td", { class: "bad" }, s.error))));
}

// ---- read-only pages ----------------------------------------------------------------------------------------

async function list(path) {
  try {
    return { items: (await api(path)).items || [] };
  } catch (err) {
    return { items: [], error: err.message };
  }
}

function section(title, result, columns, row) {
  const parts = [el("h2", {}, title)];
  if (result.error) parts.push(el("p", { class: "warning" }, result.error));
  parts.push(table(columns, result.items.map(row)));
  return parts;
}

function meta(o) { return [o.metadata.namespace || "", o.metadata.name]; }
function conditions(o) {
  return ((o.status || {}).conditions || []).map((c) => `${c.type}=${c.status}${c.reason ? " (" + c.reason + ")" : ""}`).join(", ");
}
function yaml(v) { return el("pre", {}, JSON.stringify(v, null, 1)); }

// Both trails page forward with an exclusive `since`; the console follows them and keeps the newest AUDIT_KEEP.
const AUDIT_KEEP = 300, AUDIT_PAGE = 1000;
const AUDIT = { events: { since: 0, items: [] }, changes: { since: 0, items: [] } };

async function tail(path, trail, seqOf) {
  try {
    for (let page = 0; page < 50; page++) {
      const items = (await api(`${path}?since=${trail.since}&limit=${AUDIT_PAGE}`)).items || [];
      if (items.length) trail.since = seqOf(items[items.length - 1]);
      trail.items = trail.items.concat(items).slice(-AUDIT_KEEP);
      if (items.length < AUDIT_PAGE) break;
    }
    return { items: trail.items };
  } catch (err) {
    return { items: trail.items, error: err.message };
  }
}

// One trace as a tree: each span under its parent (by start time), indented, with a bar on the trace's timeline.
function traceTree(trace) {
  const spans = trace.spans || [];
  const ids = new Set(spans.map((sp) => sp.spanId));
  const children = {};
  for (const sp of spans) {
    const parent = sp.parentSpanId && ids.has(sp.parentSpanId) ? sp.parentSpanId : "";
    (children[parent] = children[parent] || []).push(sp);
  }
  const start = Math.min(...spans.map((sp) => Number(sp.startTimeUnixNano)));
  const end = Math.max(...spans.map((sp) => Number(sp.endTimeUnixNano)));
  const total = Math.max(end - start, 1);
  const rows = [];
  const walk = (parent, depth) => {
    for (const sp of (children[parent] || []).sort((a, b) => Number(a.startTimeUnixNano) - Number(b.startTimeUnixNano))) {
      const left = (100 * (Number(sp.startTimeUnixNano) - start)) / total;
      const width = (100 * (Number(sp.endTimeUnixNano) - Number(sp.startTimeUnixNano))) / total;
      const failed = sp.status && sp.status !== "OK" && sp.status !== "UNSET";
      const bar = el("div", { class: "bar" }, el("span", { class: failed ? "bad" : "",
        style: `left:${left.toFixed(2)}%;width:${width.toFixed(2)}%` }));
      rows.push(el("tr", { "data-span": sp.spanId },
        el("td", { style: `padding-left:${0.5 + depth * 1.2}rem` }, `${depth ? "└ " : ""}${sp.service}`),
        el("td", {}, sp.name), el("td", {}, sp.kind), el("td", { class: "num" }, `${fmt(sp.durationMs, 2)} ms`),
        el("td", { class: failed ? "bad" : "" }, sp.status), el("td", {}, bar)));
      walk(sp.spanId, depth + 1);
    }
  };
  walk("", 0);
  const t = table(["service", "operation", "kind", "duration", "status", "timeline"], []);
  t.id = "trace-tree";
  t.querySelector("tbody").replaceChildren(...rows);
  return el("div", {}, el("h2", {}, `Trace ${trace.traceId}`), t);
}

const PAGES = {
  async clusters(root) {
    const [members, proxies] = await Promise.all([list("/apis/meshplane.io/v1/memberclusters"),
      list("/management/v1/proxies")]);
    const seen = {};
    for (const p of proxies.items) {
      const c = (seen[p.cluster] = seen[p.cluster] || { proxies: 0, zones: new Set() });
      c.proxies += 1;
      if (p.locality) c.zones.add(p.locality);
    }
    root.replaceChildren(
      ...section("MemberClusters", members, ["name", "spec", "status"],
        (o) => [o.metadata.name, yaml(o.spec || {}), conditions(o) || yaml(o.status || {})]),
      ...section("Clusters with connected proxies", { items: Object.entries(seen), error: proxies.error },
        ["cluster", "proxies", "localities"], ([name, c]) => [name, c.proxies, [...c.zones].sort().join(", ")]));
  },
  async workloads(root) {
    const [proxies, entries] = await Promise.all([list("/management/v1/proxies"),
      list("/apis/networking.istio.io/v1/workloadentries")]);
    root.replaceChildren(
      ...section("Proxies (xDS sync state)", proxies,
        ["workload", "namespace", "cluster", "type", "address", "locality", "state", "per type", "connected"],
        (p) => [p.workload, p.namespace, p.cluster, p.type, (p.addresses || []).join(", "), p.locality,
          el("td", { class: p.state === "SYNCED" ? "good" : "bad" }, p.state),
          Object.entries(p.types || {}).map(([t, s]) => `${t} ${s.state}${s.error ? ": " + s.error : ""}`).join("; "),
          `${age(p.connectedSince)} ago`]),
      ...section("WorkloadEntries", entries, ["namespace", "name", "address", "labels", "locality"],
        (o) => [...meta(o), (o.spec || {}).address, JSON.stringify((o.spec || {}).labels || {}),
          (o.spec || {}).locality || ""]));
  },
  async lanes(root) {
    const [groups, lanes] = await Promise.all([list("/apis/istio.alibabacloud.com/v1/asmswimlanegroups"),
      list("/apis/istio.alibabacloud.com/v1/asmswimlanes")]);
    root.replaceChildren(
      ...section("ASMSwimLaneGroups", groups, ["namespace", "name", "services", "status"],
        (o) => [...meta(o), ((o.spec || {}).services || []).map((s) => s.name || JSON.stringify(s)).join(", "),
          yaml(o.status || {})]),
      ...section("ASMSwimLanes", lanes, ["namespace", "name", "labels", "status"],
        (o) => [...meta(o), JSON.stringify((o.spec || {}).labelSelector || {}), yaml(o.status || {})]));
  },
  async security(root) {
    const kinds = [["PeerAuthentications", "peerauthentications"], ["AuthorizationPolicies", "authorizationpolicies"],
      ["RequestAuthentications", "requestauthentications"]];
    const results = await Promise.all(kinds.map(([, p]) => list(`/apis/security.istio.io/v1/${p}`)));
    root.replaceChildren(...kinds.flatMap(([title], i) => section(title, results[i],
      ["namespace", "name", "spec", "status"], (o) => [...meta(o), yaml(o.spec || {}), conditions(o)])));
  },
  async traces(root) {
    const traces = await list("/management/v1/traces?limit=12");
    const parts = section("Recent traces (the control plane's collector; click one)", traces,
      ["started", "root", "spans", "services", "duration", "errors"],
      (t) => [new Date(Number(t.startTimeUnixNano) / 1e6).toLocaleTimeString(), `${t.rootService} ${t.rootName}`,
        t.spans, (t.services || []).join(", "), `${fmt(t.durationMs, 1)} ms`,
        el("td", { class: t.errors ? "bad" : "" }, t.errors)]);
    const rows = parts[parts.length - 1].querySelectorAll("tbody tr");
    traces.items.forEach((t, i) => {
      rows[i].classList.add("pick");
      rows[i].dataset.trace = t.traceId;
      if (t.traceId === state.traceId) rows[i].classList.add("picked");
      rows[i].addEventListener("click", () => { state.traceId = t.traceId; refresh(); });
    });
    if (state.traceId) {
      try {
        parts.push(traceTree(await api(`/management/v1/traces/${state.traceId}`)));
      } catch (err) {
        parts.push(el("p", { class: "warning" }, err.message));
      }
    }
    root.replaceChildren(...parts);
  },
  async audit(root) {
    const [events, changes] = await Promise.all([
      tail("/management/v1/security/audit", AUDIT.events, (e) => e.seq),
      tail("/management/v1/audit", AUDIT.changes, (r) => Number(r.resourceVersion))]);
    const newest = (r) => ({ ...r, items: [...r.items].reverse() });
    const time = (t) => el("td", { class: "nowrap" }, t);
    root.replaceChildren(
      ...section(`Security events (the newest ${AUDIT_KEEP})`, newest(events),
        ["time", "kind", "subject", "target", "reason"],
        (e) => [time(e.timestamp), e.kind, e.subject, e.target, e.reason]),
      ...section(`Configuration changes (the newest ${AUDIT_KEEP})`, newest(changes),
        ["time", "user", "verb", "resource", "name", "generation"],
        (r) => [time(r.timestamp), r.user, r.verb, `${r.group ? r.group + "/" : ""}${r.resource}`,
          `${r.namespace ? r.namespace + "/" : ""}${r.name}`, `${r.oldGeneration ?? ""} → ${r.newGeneration ?? ""}`]));
  },
};

async function refresh() {
  try {
    if (state.page === "topology") {
      renderTopology(await api("/management/v1/console/topology"));
    } else {
      await PAGES[state.page](document.getElementById(`page-${state.page}`));
    }
    setStatus(`live · every ${REFRESH_MS / 1000}s`, false);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function show() {
  state.page = (location.hash || "#topology").slice(1);
  if (!(state.page in PAGES) && state.page !== "topology") state.page = "topology";
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== `page-${state.page}`;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === state.page);
  if (state.page === "topology" && state.cy) state.cy.resize();
  refresh();
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("meshplane-token", document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  refresh();
});
window.addEventListener("hashchange", show);
show();
state.timer = setInterval(refresh, REFRESH_MS);
