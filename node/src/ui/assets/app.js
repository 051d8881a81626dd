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

function member(id) {
  let m = state.members.get(id);
  if (!m) {
    m = {
      id, name: "member " + id, role: "follower", term: 0, votedFor: 0, leaderId: 0,
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
    renderCards();
    return;
  }
  const m = member(ev.member_id);
  if (k === "member_unreachable") {
    if (!m.down) note(`${m.name} is unreachable: ${ev.reason}`, "warn");
    m.down = true; m.downWhy = ev.reason || "unreachable";
    renderCards();
    return;
  }
  if (k === "member_reachable") {
    if (m.down) note(`${m.name} is reachable again`, "role");
    m.down = false; m.downWhy = "";
    renderCards();
    return;
  }
  m.lastSeen = now();
  if (m.down) { m.down = false; m.downWhy = ""; }
  if (ev.dropped) { state.dropped += ev.dropped; }
  if (ev.term && (k === "role_changed" || k === "leader_known")) m.term = ev.term;
  if (ev.role) m.role = ev.role;
  if (ev.leader_id !== undefined) m.leaderId = ev.leader_id;
  switch (k) {
    case "status":
      if (ev.name) m.name = ev.name;
      m.term = ev.term; m.votedFor = ev.voted_for || 0;
      m.commit = ev.commit_index || 0; m.applied = ev.applied_index || 0;
      m.last = ev.last_index || 0; m.isolated = !!ev.isolated;
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
      m.log.clear();
      break;
    case "entries_appended": {
      const terms = ev.entry_terms || [];
      for (const i of [...m.log.keys()]) if (i >= ev.index) m.log.delete(i);
      terms.forEach((t, j) => { m.log.set(ev.index + j, t); m.fresh.add(ev.index + j); });
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
  dirtyCards = true;
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

const stage = document.getElementById("stage");
const pos = new Map();

function layout() {
  const ids = [...state.members.keys()].sort((a, b) => a - b);
  const n = ids.length, cx = 300, cy = 230, r = n <= 1 ? 0 : 160;
  ids.forEach((id, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
    pos.set(id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
  });
  const links = document.getElementById("links");
  links.textContent = "";
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
    const a = pos.get(ids[i]), b = pos.get(ids[j]);
    const l = el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link", "data-a": ids[i], "data-b": ids[j] });
    links.appendChild(l);
  }
  const nodes = document.getElementById("nodes");
  nodes.textContent = "";
  for (const id of ids) {
    const p = pos.get(id);
    const g = el("g", { class: "member", "data-id": id, transform: `translate(${p.x},${p.y})` });
    g.appendChild(el("circle", { r: 62, class: "timer-bg" }));
    g.appendChild(el("circle", { r: 62, class: "timer", transform: "rotate(-90)" }));
    g.appendChild(el("circle", { r: 52, class: "body" }));
    g.appendChild(el("text", { y: -70, class: "crown" }));
    g.appendChild(el("text", { y: -22, class: "name" }));
    g.appendChild(el("text", { y: -4, class: "role" }));
    g.appendChild(el("text", { y: 14, class: "small term" }));
    g.appendChild(el("text", { y: 30, class: "small vote" }));
    g.appendChild(el("text", { y: 84, class: "status-tag" }));
    nodes.appendChild(g);
  }
  renderCards();
}

function el(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

function isDown(m) { return m.down || (m.lastSeen > 0 && now() - m.lastSeen > STALE_MS); }

function drawNodes() {
  const t = now();
  for (const g of document.querySelectorAll("#nodes .member")) {
    const m = state.members.get(Number(g.dataset.id));
    if (!m) continue;
    const down = isDown(m);
    g.setAttribute("data-role", m.role);
    g.setAttribute("data-term", m.term);
    g.setAttribute("data-down", down);
    g.setAttribute("data-isolated", m.isolated);
    g.querySelector(".name").textContent = m.name;
    g.querySelector(".role").textContent = down ? "down" : m.role;
    g.querySelector(".term").textContent = "term " + m.term;
    g.querySelector(".vote").textContent = "voted " + (m.votedFor ? nameOf(m.votedFor) : "—");
    g.querySelector(".crown").textContent = m.role === "leader" && !down ? "♛" : "";
    g.querySelector(".status-tag").textContent = m.paused ? "paused" : m.isolated ? "cut off" : down ? (m.downWhy.split(":")[0] || "silent") : "";
    const ring = g.querySelector(".timer");
    const c = 2 * Math.PI * 62;
    let frac = 0;
    if (!down && m.role !== "leader" && m.timeout > 0) frac = Math.max(0, Math.min(1, (m.deadline - t) / m.timeout));
    ring.setAttribute("stroke-dasharray", `${c * frac} ${c}`);
  }
  for (const l of document.querySelectorAll("#links .link")) {
    const a = state.members.get(Number(l.dataset.a)), b = state.members.get(Number(l.dataset.b));
    l.classList.toggle("cut", !!(a && b && (a.isolated || b.isolated)));
  }
}

function dot(from, to, cls, r, ms) {
  const a = pos.get(from), b = pos.get(to);
  if (!a || !b || state.dots.length > MAX_DOTS) return;
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

let dirtyCards = true;
function renderCards() {
  const box = document.getElementById("members");
  const ids = [...state.members.keys()].sort((a, b) => a - b);
  for (const id of ids) {
    const m = state.members.get(id);
    let card = box.querySelector(`.card[data-id="${id}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "card"; card.dataset.id = id;
      card.innerHTML = `<div class="head"><b></b><span class="meta"></span></div><div class="log"></div><div class="buttons"></div>`;
      box.appendChild(card);
      buttonsFor(card.querySelector(".buttons"), id);
    }
    const down = isDown(m);
    card.className = "card " + (down ? "down" : m.role);
    card.querySelector("b").textContent = `${m.name} · ${down ? "down" : m.role} · term ${m.term}`;
    card.querySelector(".meta").textContent =
      `leader ${m.leaderId ? nameOf(m.leaderId) : "—"} · commit ${m.commit} · applied ${m.applied} · last ${m.last}` + (m.isolated ? " · CUT OFF" : "");
    const log = card.querySelector(".log");
    log.textContent = "";
    const last = Math.max(m.last, ...m.log.keys(), 0);
    for (let i = Math.max(1, last - LOG_TAIL + 1); i <= last; i++) {
      const e = document.createElement("div");
      const t = m.log.get(i);
      e.className = "entry" + (i <= m.commit ? " committed" : "") + (i <= m.applied ? " applied" : "") + (m.fresh.has(i) ? " fresh" : "");
      e.style.background = t ? termColor(t) : "transparent";
      e.innerHTML = `<span class="t">${t ? "t" + t : "?"}</span>${i}`;
      e.title = `index ${i}${t ? ", term " + t : ""}${i <= m.commit ? ", committed" : ""}${i <= m.applied ? ", applied" : ""}`;
      log.appendChild(e);
    }
    m.fresh.clear();
  }
  const leaders = ids.map((i) => state.members.get(i)).filter((m) => m.role === "leader" && !isDown(m));
  document.getElementById("summary").textContent = leaders.length
    ? `leader ${leaders.map((m) => m.name).join(", ")} · term ${Math.max(...leaders.map((m) => m.term))}`
    : "no leader";
  document.getElementById("dropped").textContent = state.dropped ? `(${state.dropped} chatty events sampled away)` : "";
  dirtyCards = false;
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
  if (action === "pause" || action === "resume") { const m = state.members.get(params.member); if (m) m.paused = action === "pause"; }
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
  setInterval(() => { renderCards(); renderTimeline(); }, 500);
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

let lastCards = 0;
function frame() {
  drawNodes();
  drawDots();
  if (dirtyCards && now() - lastCards > 150) { lastCards = now(); renderCards(); }
  requestAnimationFrame(frame);
}

// For tests and the curious: what the page shows, as data.
window.kuberaftView = () => ({
  connected: state.connected,
  members: [...state.members.values()].map((m) => ({
    id: m.id, name: m.name, role: m.role, term: m.term, down: isDown(m), isolated: m.isolated,
    commit: m.commit, applied: m.applied,
  })),
  terms: [...state.terms.values()],
  events: events.slice(-50),
});

start();
