// kuberaft's web view: draws the cluster from the protocol events of
// GET /ui/events (server-sent events, one JSON object each). No library, no
// network access beyond the page's own origin.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const LOG_TAIL = 14;
const STALE_MS = 2000;
const MAX_DOTS = 80;

const state = {
  config: { mode: "?", actions: [] },
  members: new Map(), // id -> member
  terms: new Map(), // term -> {term, startedBy, startedAt, why, leader, leaderAt, end, endWhy}
  dots: [],
  dropped: 0,
  connected: false,
};

// A member's role, term and log are what its STATUS events say; until the
// first one arrives (hasStatus) the page knows none of them and draws none.
function member(id) {
  let m = state.members.get(id);
  if (!m) {
    m = {
      id, name: "member " + id, hasStatus: false, role: "follower", term: 0, votedFor: 0, leaderId: 0,
      commit: 0, applied: 0, last: 0, isolated: false, down: false, downWhy: "",
      lastSeen: 0, deadline: 0, timeout: 0, log: new Map(), fresh: new Set(), paused: false,
    };
    state.members.set(id, m);
    layout();
  }
  return m;
}

function now() { return performance.now(); }
function clock(ms) {
  const d = ms ? new Date(ms) : new Date();
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function nameOf(id) { const m = state.members.get(id); return m ? m.name : (id ? "member " + id : "nobody"); }

// ------------------------------------------------------------- events in

function onEvent(ev) {
  const k = ev.kind;
  if (k === "members") {
    for (const x of ev.members) { const m = member(x.id); m.name = x.name || m.name; }
    dirty = true;
    return;
  }
  const m = member(ev.member_id);
  if (k === "member_unreachable") {
    if (!m.down) note(`${m.name} is unreachable: ${ev.reason}`, "warn");
    m.down = true; m.downWhy = ev.reason || "unreachable";
    dirty = true;
    return;
  }
  if (k === "member_reachable") {
    if (m.down) note(`${m.name} is reachable again`, "role");
    m.down = false; m.downWhy = "";
    dirty = true;
    return;
  }
  // Events before a member's first status tell of changes to a state the
  // page does not know yet: drawn, they would show one that never existed.
  if (k !== "status" && !m.hasStatus) return;
  m.lastSeen = now();
  if (m.down) { m.down = false; m.downWhy = ""; }
  if (ev.dropped) { state.dropped += ev.dropped; }
  if (ev.term && (k === "role_changed" || k === "leader_known")) m.term = ev.term;
  if (ev.role) m.role = ev.role;
  if (ev.leader_id !== undefined) m.leaderId = ev.leader_id;
  switch (k) {
    case "status":
      if (ev.name) m.name = ev.name;
      m.hasStatus = true;
      m.term = ev.term; m.votedFor = ev.voted_for || 0;
      m.commit = ev.commit_index || 0; m.applied = ev.applied_index || 0;
      m.last = ev.last_index || 0; m.isolated = !!ev.isolated;
      // The status carries the terms of its log's tail: the whole log as
      // far as the page draws it.
      setLog(m, ev.index || m.last + 1, ev.entry_terms || [], false);
      for (const i of [...m.log.keys()]) if (i > m.last) m.log.delete(i);
      if (m.role !== "leader" && ev.timeout_ms) setTimer(m, ev.timeout_ms, ev.elapsed_ms || 0);
      if (m.role === "leader") noteLeader(ev.term, m.id, ev.unix_ms, "");
      break;
    case "role_changed":
      m.term = ev.term; m.votedFor = ev.voted_for || 0;
      onRoleChanged(m, ev);
      break;
    case "leader_known":
      if (ev.leader_id) note(`${m.name} follows ${nameOf(ev.leader_id)} in term ${ev.term}`);
      else note(`${m.name} lost its leader in term ${ev.term}`, "warn");
      break;
    case "election_timer":
      setTimer(m, ev.timeout_ms, ev.elapsed_ms || 0);
      break;
    case "vote_requested":
      dot(m.id, ev.peer_id, "vote", 6, 500);
      if (m._lastAsk !== ev.term + (ev.pre_vote ? "p" : "")) {
        m._lastAsk = ev.term + (ev.pre_vote ? "p" : "");
        note(`${m.name} asks for ${ev.pre_vote ? "pre-votes" : "votes"} in term ${ev.term}`);
      }
      break;
    case "vote_granted":
    case "vote_denied": {
      const yes = k === "vote_granted";
      dot(m.id, ev.peer_id, yes ? "granted" : "denied", 6, 500);
      if (!ev.pre_vote && yes) m.votedFor = ev.peer_id;
      note(`${m.name} ${yes ? "grants" : "denies"} ${nameOf(ev.peer_id)} its ${ev.pre_vote ? "pre-vote" : "vote"} (term ${ev.term})`);
      break;
    }
    case "heartbeat_sent": dot(m.id, ev.peer_id, "heartbeat", 4, 350); break;
    case "heartbeat_acked": dot(m.id, ev.peer_id, "ack", 3, 350); break;
    case "append_sent": dot(m.id, ev.peer_id, "append", 7, 450); break;
    case "append_acked": dot(m.id, ev.peer_id, ev.success ? "ack" : "denied", 4, 400); break;
    case "snapshot_sent":
      dot(m.id, ev.peer_id, "snapshot", 9, 900);
      note(`${m.name} sends its snapshot at index ${ev.index} to ${nameOf(ev.peer_id)}`);
      break;
    case "timeout_now_sent":
      dot(m.id, ev.peer_id, "vote", 9, 500);
      note(`${m.name} hands leadership to ${nameOf(ev.peer_id)} (TimeoutNow)`, "role");
      break;
    case "snapshot_installed":
      note(`${m.name} installed a snapshot at index ${ev.index}`);
      // Its log is the snapshot now: no entry the page could draw.
      m.log.clear();
      m.last = ev.index;
      break;
    case "entries_appended": {
      const terms = ev.entry_terms || [];
      setLog(m, ev.index, terms, true);
      m.last = Math.max(ev.last_index || ev.index, ev.index + terms.length - 1);
      if (m.role === "leader" && terms.length <= 3) note(`${m.name} appends entry ${ev.index}${ev.last_index > ev.index ? "–" + ev.last_index : ""} (term ${terms[terms.length - 1]})`);
      break;
    }
    case "committed":
      m.commit = Math.max(m.commit, ev.index);
      if (m.role === "leader") note(`${m.name} commits up to ${ev.index}: a majority has it`);
      break;
    case "applied":
      m.applied = Math.max(m.applied, ev.index);
      break;
    case "isolation":
      m.isolated = !!ev.isolated;
      note(`${m.name} is ${ev.isolated ? "cut off from its peers" : "connected again"}`, ev.isolated ? "warn" : "role");
      break;
  }
  dirty = true;
}

// Entries index, index+1, … of `terms` replace what the log had from index
// on (a follower's conflicting suffix is overwritten). Entries far behind
// the tail the page draws are forgotten.
function setLog(m, index, terms, fresh) {
  for (const i of [...m.log.keys()]) if (i >= index || i <= index + terms.length - 4 * LOG_TAIL) m.log.delete(i);
  terms.forEach((t, j) => { m.log.set(index + j, t); if (fresh) m.fresh.add(index + j); });
}

function setTimer(m, timeout, elapsed) {
  m.timeout = timeout;
  m.deadline = now() + (timeout - elapsed);
}

function onRoleChanged(m, ev) {
  const why = ev.reason || "";
  note(`${m.name} → ${ev.role} (term ${ev.term}): ${why}`, "role");
  const t = term(ev.term);
  if (ev.role === "candidate" && !t.startedBy) { t.startedBy = m.id; t.startedAt = ev.unix_ms; t.why = why; }
  if (ev.role === "leader") noteLeader(ev.term, m.id, ev.unix_ms, why);
  if (ev.role === "follower" && ev.term > 0) {
    // A leader that steps down in its own term ends that term's leadership.
    if (t.leader === m.id && !t.end) { t.end = ev.unix_ms; t.endWhy = why; }
  }
  // A new term ends every earlier one.
  for (const [n, x] of state.terms) if (n < ev.term && !x.end) { x.end = ev.unix_ms; x.endWhy = x.endWhy || `term ${ev.term} began: ${why}`; }
}

function term(n) {
  let t = state.terms.get(n);
  if (!t) { t = { term: n }; state.terms.set(n, t); }
  return t;
}

function noteLeader(n, id, at, why) {
  const t = term(n);
  if (t.leader === id) return;
  t.leader = id; t.leaderAt = at || Date.now(); if (why) t.leaderWhy = why;
  if (!t.startedAt) t.startedAt = t.leaderAt;
  renderTimeline();
}

// ------------------------------------------------------------- drawing

const pos = new Map();
let dirty = true;

// Places every member the page knows of on a circle, those not drawn yet
// too, so that a member keeps its place when its first status arrives.
function layout() {
  const ids = [...state.members.keys()].sort((a, b) => a - b);
  const n = ids.length, cx = 300, cy = 230, r = n <= 1 ? 0 : 160;
  ids.forEach((id, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    pos.set(id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  dirty = true;
}

function el(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

function isDown(m, t) { return m.down || (m.lastSeen > 0 && t - m.lastSeen > STALE_MS); }

// What the page shows, taken once per drawing: header, graph and cards are
// all drawn from it, so they always agree on leader and term. A member is in
// it from its first status on; before that only while it cannot be reached,
// greyed and with nothing about its Raft state (which the page does not know).
function picture() {
  const t = now();
  const shown = [];
  for (const id of [...state.members.keys()].sort((a, b) => a - b)) {
    const m = state.members.get(id);
    if (!m.hasStatus && !m.down) continue;
    const down = isDown(m, t);
    shown.push({ m, down, known: m.hasStatus, role: down ? "down" : m.role });
  }
  return { shown, leaders: shown.filter((s) => s.role === "leader") };
}

function render() {
  const p = picture();
  renderHeader(p);
  renderGraph(p);
  renderCards(p);
  dirty = false;
}

function renderHeader(p) {
  const { shown, leaders } = p;
  document.getElementById("summary").textContent = !shown.some((s) => s.known)
    ? "waiting for the members' status…"
    : leaders.length
      ? `leader ${leaders.map((s) => s.m.name).join(", ")} · term ${Math.max(...leaders.map((s) => s.m.term))}`
      : "no leader";
  document.getElementById("dropped").textContent = state.dropped ? `(${state.dropped} chatty events sampled away)` : "";
}

function renderGraph(p) {
  const nodes = document.getElementById("nodes");
  const ids = new Set(p.shown.map((s) => s.m.id));
  for (const g of [...nodes.children]) if (!ids.has(Number(g.dataset.id))) g.remove();
  for (const s of p.shown) {
    const g = nodes.querySelector(`.member[data-id="${s.m.id}"]`) || nodes.appendChild(memberNode(s.m.id));
    drawNode(g, s);
  }
  const links = document.getElementById("links");
  links.textContent = "";
  p.shown.forEach((x, i) => p.shown.slice(i + 1).forEach((y) => {
    const a = pos.get(x.m.id), b = pos.get(y.m.id);
    const l = el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link" });
    l.classList.toggle("cut", x.m.isolated || y.m.isolated);
    links.appendChild(l);
  }));
}

function memberNode(id) {
  const g = el("g", { class: "member", "data-id": id });
  g.appendChild(el("circle", { r: 62, class: "timer-bg" }));
  g.appendChild(el("circle", { r: 62, class: "timer", transform: "rotate(-90)" }));
  g.appendChild(el("circle", { r: 52, class: "body" }));
  g.appendChild(el("text", { y: -70, class: "crown" }));
  g.appendChild(el("text", { y: -22, class: "name" }));
  g.appendChild(el("text", { y: -4, class: "role" }));
  g.appendChild(el("text", { y: 14, class: "small term" }));
  g.appendChild(el("text", { y: 30, class: "small vote" }));
  g.appendChild(el("text", { y: 84, class: "status-tag" }));
  return g;
}

function drawNode(g, s) {
  const m = s.m, at = pos.get(m.id);
  g.setAttribute("transform", `translate(${at.x},${at.y})`);
  g.setAttribute("data-role", s.known ? m.role : "unknown");
  g.setAttribute("data-term", m.term);
  g.setAttribute("data-down", s.down);
  g.setAttribute("data-isolated", m.isolated);
  g.querySelector(".name").textContent = m.name;
  g.querySelector(".role").textContent = s.role;
  g.querySelector(".term").textContent = s.known ? "term " + m.term : "";
  g.querySelector(".vote").textContent = s.known ? "voted " + (m.votedFor ? nameOf(m.votedFor) : "—") : "";
  g.querySelector(".crown").textContent = s.role === "leader" ? "♛" : "";
  g.querySelector(".status-tag").textContent = m.paused ? "paused" : m.isolated ? "cut off" : s.down ? (m.downWhy.split(":")[0] || "silent") : "";
}

// Every frame: the election timers run down. A ring is shown for what the
// graph shows (its data-role, data-down), never ahead of it.
function drawTimers() {
  const t = now(), c = 2 * Math.PI * 62;
  for (const g of document.querySelectorAll("#nodes .member")) {
    const m = state.members.get(Number(g.dataset.id));
    let frac = 0;
    const running = m && g.dataset.down === "false" && g.dataset.role !== "leader" && g.dataset.role !== "unknown";
    if (running && m.timeout > 0) frac = Math.max(0, Math.min(1, (m.deadline - t) / m.timeout));
    g.querySelector(".timer").setAttribute("stroke-dasharray", `${c * frac} ${c}`);
  }
}

function drawn(id) { return !!document.querySelector(`#nodes .member[data-id="${id}"]`); }

function dot(from, to, cls, r, ms) {
  const a = pos.get(from), b = pos.get(to);
  if (!a || !b || state.dots.length > MAX_DOTS || !drawn(from) || !drawn(to)) return;
  const c = el("circle", { r, class: "msg " + cls, fill: getComputedStyle(document.querySelector(".legend ." + cls)).backgroundColor });
  document.getElementById("dots").appendChild(c);
  state.dots.push({ c, a, b, start: now(), ms });
}

function drawDots() {
  const t = now();
  state.dots = state.dots.filter((d) => {
    const f = (t - d.start) / d.ms;
    if (f >= 1) { d.c.remove(); return false; }
    d.c.setAttribute("cx", d.a.x + (d.b.x - d.a.x) * f);
    d.c.setAttribute("cy", d.a.y + (d.b.y - d.a.y) * f);
    return true;
  });
}

function renderCards(p) {
  const box = document.getElementById("members");
  const ids = new Set(p.shown.map((s) => s.m.id));
  for (const c of [...box.children]) if (!ids.has(Number(c.dataset.id))) c.remove();
  for (const s of p.shown) drawCard(cardFor(box, s.m.id), s);
}

// A member's card, made the first time it is drawn, in the order of ids.
function cardFor(box, id) {
  let card = box.querySelector(`.card[data-id="${id}"]`);
  if (card) return card;
  card = document.createElement("div");
  card.className = "card"; card.dataset.id = id;
  card.innerHTML = `<div class="head"><b></b><span class="meta"></span></div><div class="log"></div><div class="buttons"></div>`;
  const next = [...box.children].find((c) => Number(c.dataset.id) > id);
  box.insertBefore(card, next || null);
  buttonsFor(card.querySelector(".buttons"), id);
  return card;
}

function drawCard(card, s) {
  const m = s.m;
  card.className = "card " + (s.down ? "down" : m.role);
  const log = card.querySelector(".log");
  log.textContent = "";
  if (!s.known) {
    card.querySelector("b").textContent = `${m.name} · down`;
    card.querySelector(".meta").textContent = m.downWhy;
    return;
  }
  card.querySelector("b").textContent = `${m.name} · ${s.role} · term ${m.term}`;
  card.querySelector(".meta").textContent =
    `leader ${m.leaderId ? nameOf(m.leaderId) : "—"} · commit ${m.commit} · applied ${m.applied} · last ${m.last}` + (m.isolated ? " · CUT OFF" : "");
  for (let i = Math.max(1, m.last - LOG_TAIL + 1); i <= m.last; i++) {
    const t = m.log.get(i);
    // Only entries whose term is known: a cell never guesses.
    if (!t) continue;
    const e = document.createElement("div");
    e.className = "entry" + (i <= m.commit ? " committed" : "") + (i <= m.applied ? " applied" : "") + (m.fresh.has(i) ? " fresh" : "");
    e.style.background = termColor(t);
    e.innerHTML = `<span class="t">t${t}</span>${i}`;
    e.title = `index ${i}, term ${t}${i <= m.commit ? ", committed" : ""}${i <= m.applied ? ", applied" : ""}`;
    log.appendChild(e);
  }
  m.fresh.clear();
}

function termColor(t) { return `hsl(${(t * 67) % 360} 45% 32%)`; }

function renderTimeline() {
  const ol = document.getElementById("timeline");
  ol.textContent = "";
  const terms = [...state.terms.values()].sort((a, b) => b.term - a.term).slice(0, 30);
  const longest = Math.max(1, ...terms.map((t) => ((t.end || Date.now()) - (t.leaderAt || t.startedAt || Date.now()))));
  for (const t of terms) {
    const li = document.createElement("li");
    li.value = t.term;
    const from = t.leaderAt || t.startedAt;
    const until = t.end ? clock(t.end) : "now";
    const len = from ? (((t.end || Date.now()) - from) / 1000).toFixed(1) + " s" : "";
    const w = from ? Math.max(4, 160 * (((t.end || Date.now()) - from) / longest)) : 4;
    li.innerHTML = `<span class="bar ${t.leader ? "" : "none"}" style="width:${w}px"></span>` +
      `<b>term ${t.term}</b>: ${t.leader ? "led by " + nameOf(t.leader) : "no leader"} ` +
      `${from ? "from " + clock(from) + " to " + until + " (" + len + ")" : ""}` +
      `<span class="why">${esc(t.why || t.leaderWhy || "")}${t.endWhy ? " · ended: " + esc(t.endWhy) : ""}</span>`;
    ol.appendChild(li);
  }
}

function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

const events = [];
function note(text, cls) {
  const ol = document.getElementById("events");
  const li = document.createElement("li");
  li.textContent = `${clock()}  ${text}`;
  if (cls) li.className = cls;
  ol.insertBefore(li, ol.firstChild);
  while (ol.children.length > 200) ol.removeChild(ol.lastChild);
  events.push(text);
  if (events.length > 500) events.shift();
}

// ------------------------------------------------------------- actions

function can(a) { return state.config.actions.includes(a); }

function buttonsFor(box, id) {
  const acts = [["kill", "kill"], ["restart", "restart"], ["pause", "pause"], ["resume", "resume"], ["cut_off", "cut off"], ["heal", "heal"]];
  for (const [a, label] of acts) {
    if (!can(a)) continue;
    if (state.config.mode === "member" && id !== state.config.member_id) continue;
    const b = document.createElement("button");
    b.textContent = label; b.dataset.action = a; b.dataset.member = id;
    b.className = "act-" + a;
    b.addEventListener("click", () => act(a, { member: id }));
    box.appendChild(b);
  }
}

async function act(action, params) {
  const out = document.getElementById("action-result");
  const q = new URLSearchParams();
  for (const k in params) q.set(k, params[k]);
  out.className = ""; out.textContent = `${action}…`;
  if (action === "pause" || action === "resume") { const m = state.members.get(params.member); if (m) { m.paused = action === "pause"; dirty = true; } }
  try {
    const r = await fetch(`/ui/actions/${action}?${q}`, { method: "POST" });
    const body = await r.json();
    out.textContent = body.message;
    out.className = body.ok ? "" : "bad";
    note(`you: ${body.message}`, body.ok ? "role" : "warn");
  } catch (e) {
    out.textContent = `${action} failed: ${e}`; out.className = "bad";
  }
}

async function start() {
  try {
    const r = await fetch("/ui/config");
    state.config = await r.json();
  } catch (e) { /* read-only */ }
  const mode = document.getElementById("mode");
  mode.textContent = state.config.mode === "dev" ? "raftctl dev: actions on" : state.config.actions.length ? "member view: actions on" : "member view: read-only";
  if (state.config.actions.length) document.getElementById("actions").hidden = false;
  document.getElementById("kill-leader").hidden = !can("kill_leader");
  document.getElementById("transfer-leader").hidden = !can("transfer_leader");
  document.getElementById("put-form").hidden = !can("put");
  document.getElementById("put-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("put", { key: document.getElementById("put-key").value, value: document.getElementById("put-value").value });
  });
  for (const id of ["kill-leader", "transfer-leader"]) {
    const b = document.getElementById(id);
    b.addEventListener("click", () => act(b.dataset.action, {}));
  }
  connect();
  requestAnimationFrame(frame);
  // Also when no event comes: a member that falls silent turns grey.
  setInterval(() => { render(); renderTimeline(); }, 500);
}

function connect() {
  const conn = document.getElementById("connection");
  const es = new EventSource("/ui/events");
  es.onopen = () => { conn.textContent = "live"; conn.className = "badge ok"; state.connected = true; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "badge bad"; state.connected = false; };
  es.onmessage = (msg) => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    onEvent(ev);
  };
}

let lastRender = 0;
function frame() {
  if (dirty && now() - lastRender > 150) { lastRender = now(); render(); }
  drawTimers();
  drawDots();
  requestAnimationFrame(frame);
}

// For tests and the curious: what the page knows, as data (members: those
// it draws; role and term null while unknown), and what it shows, as text.
window.kuberaftView = () => ({
  connected: state.connected,
  members: picture().shown.map(({ m, down, known }) => ({
    id: m.id, name: m.name, hasStatus: known, role: known ? m.role : null, term: known ? m.term : null,
    down, isolated: m.isolated, commit: m.commit, applied: m.applied,
  })),
  terms: [...state.terms.values()],
  events: events.slice(-50),
  shown: shownOnPage(),
});

// The texts the page shows, read back from the page itself: the header, each
// member in the graph (crowned or not) and each card with its log cells.
function shownOnPage() {
  const text = (root, sel) => { const e = root.querySelector(sel); return e ? e.textContent : ""; };
  return {
    header: document.getElementById("summary").textContent,
    graph: [...document.querySelectorAll("#nodes .member")].map((g) => ({
      id: Number(g.dataset.id), name: text(g, ".name"), role: text(g, ".role"),
      term: text(g, ".term"), crowned: text(g, ".crown") !== "",
    })),
    cards: [...document.querySelectorAll("#members .card")].map((c) => ({
      id: Number(c.dataset.id), head: text(c, "b"), meta: text(c, ".meta"),
      cells: [...c.querySelectorAll(".log .entry")].map((e) => ({ title: e.title, term: text(e, ".t") })),
    })),
  };
}

start();
