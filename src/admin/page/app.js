// The hookrouter status page: three views over the /ui/ endpoints of the admin listener.
// Plain DOM, no framework and no build step. Everything shown is set with textContent, never
// parsed as HTML, so nothing from a payload or an error can run as markup.
"use strict";

const REFRESH_MS = 5000;
const state = { view: null, timer: null, dead: [], filters: { destination: "", reason: "" } };

// ---- helpers ---------------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.includes("-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function showError(message) {
  const e = $("error");
  e.textContent = message || "";
  e.hidden = !message;
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.method === "POST") {
    opts.headers["X-Hookrouter-Page"] = "1";
    opts.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, opts);
  if (response.status === 401) {
    // The login expired (or the token changed): the page itself shows the form again.
    window.location.reload();
    throw new Error("not logged in");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((body.error ? body.error + ": " : "") + (body.message || response.statusText));
  }
  return body;
}

function when(iso) {
  if (!iso) return "-";
  return iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function ms(value) {
  if (value === null || value === undefined) return "-";
  if (value < 1) return value.toFixed(2) + " ms";
  if (value < 1000) return Math.round(value) + " ms";
  return (value / 1000).toFixed(2) + " s";
}

function rate(value) {
  if (!value) return "0";
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

function bytes(n) {
  if (n === null || n === undefined) return "unknown";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function short(id) {
  return id ? id.slice(0, 8) + "…" + id.slice(-4) : "";
}

function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function dl(node, pairs) {
  clear(node);
  for (const [k, v] of pairs) {
    node.append(el("dt", { text: k }), el("dd", {}, v));
  }
}

// ---- overview --------------------------------------------------------------------------

function stateCell(d) {
  const cell = el("td", { class: "state" });
  const h = d.health;
  if (d.url === null) {
    cell.append(el("span", { class: "pill", text: "removed from config" }));
  } else if (h && h.state === "held") {
    const who = h.held_for_credentials ? "held: the token endpoint refused the credentials; fix them and reload"
      : h.held_by_operator ? "held by an operator" : "held after " + h.consecutive_failures + " failures in a row";
    cell.append(el("span", { class: "pill bad health", text: "held " + age((Date.now() - h.since_ms) / 1000), title: who + " (release: hookrouter destination release " + d.name + ")" }));
  } else if (h && h.state === "failing") {
    cell.append(el("span", { class: "pill warn health", text: "failing", title: h.consecutive_failures + " failures in a row" }));
  } else {
    cell.append(el("span", { class: "pill ok health", text: "healthy" }));
  }
  if (d.paused_for_seconds) {
    cell.append(" ", el("span", { class: "pill warn", text: "paused " + age(d.paused_for_seconds), title: "the destination asked to wait (Retry-After)" }));
  }
  return cell;
}

function renderOverview(o) {
  const body = clear($("destinations").querySelector("tbody"));
  for (const d of o.destinations) {
    const err = d.last_error;
    const failed = d.per_minute.retried + d.per_minute.dead;
    body.append(
      el(
        "tr",
        { "data-destination": d.name },
        el("td", {}, el("strong", { text: d.name }), el("div", { class: "muted small", text: d.url || "" })),
        el("td", { class: "num pending", text: d.pending }),
        el("td", { class: "num retrying", text: d.retrying }),
        el("td", { class: "num in-flight", text: d.in_flight }),
        el("td", { class: "num dead" + (d.dead ? " bad" : ""), text: d.dead }),
        el("td", { class: "num oldest", text: age(d.oldest_pending_age_seconds) }),
        stateCell(d),
        el("td", { class: "num delivered-rate", text: rate(d.per_minute.delivered) }),
        el("td", { class: "num failed-rate" + (failed ? " bad" : ""), text: rate(failed) }),
        el("td", { class: "num p50", text: ms(d.latency.p50_ms) }),
        el("td", { class: "num p99", text: ms(d.latency.p99_ms) }),
        el(
          "td",
          { class: "last-error" },
          err
            ? el("span", { title: err.at + " (" + err.job + ")" }, el("span", { class: "muted small", text: when(err.at) + " " }), err.error)
            : el("span", { class: "muted", text: "-" })
        )
      )
    );
  }
  if (!o.destinations.length) {
    body.append(el("tr", {}, el("td", { colSpan: 12, class: "muted", text: "no destinations configured" })));
  }
  $("window-note").textContent =
    "Rates and latencies: the last " + Math.round(o.window_seconds / 60) + " minutes. " +
    "State: the destination's health (healthy, failing, held) and any Retry-After pause.";

  const tally = (table, map, empty) => {
    const tb = clear($(table).querySelector("tbody"));
    const entries = Object.entries(map);
    for (const [name, t] of entries) {
      tb.append(el("tr", { "data-name": name }, el("td", { text: name }), el("td", { class: "num", text: rate(t.per_minute) }), el("td", { class: "num", text: t.since_start })));
    }
    if (!entries.length) tb.append(el("tr", {}, el("td", { colSpan: 3, class: "muted", text: empty })));
  };
  tally("ingest", o.ingest.outcomes, "no webhooks since start");
  tally("rejections", o.ingest.rejections, "none since start");

  dl($("store"), [
    ["size on disk", bytes(o.store.size_bytes)],
    ["queued", String(o.total.pending + o.total.retrying)],
    ["in the fast lane", String(o.store.fast_lane)],
    ["dead letters", String(o.total.dead)],
  ]);
  const reload = o.config.last_reload;
  const reloadText = reload
    ? el("span", { class: reload.ok ? "" : "bad" }, when(reload.at) + (reload.ok ? " applied" : " refused: " + reload.error))
    : "none since start";
  dl($("config"), [
    ["file", o.config.file],
    ["routes / destinations", o.config.routes + " / " + o.config.destinations],
    ["loaded at start", when(o.config.loaded_at)],
    ["last reload", reloadText],
  ]);
  const badge = $("dead-badge");
  badge.textContent = o.total.dead;
  badge.hidden = !o.total.dead;
  $("updated").textContent = "updated " + when(o.generated_at);
}

async function loadOverview() {
  const o = await api("/ui/overview");
  renderOverview(o);
}

// ---- dead letters ----------------------------------------------------------------------

function fillSelect(select, counts, chosen) {
  const keep = select.options[0];
  clear(select).append(keep);
  const names = Object.keys(counts);
  if (chosen && !names.includes(chosen)) names.push(chosen);
  for (const name of names) {
    const n = counts[name];
    select.append(el("option", { value: name, text: name + (n !== undefined ? " (" + n + ")" : ""), selected: name === chosen }));
  }
}

function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "muted", text: "no attempt was made" });
  const t = el("table", { class: "attempts" }, el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: "at" }), el("th", { text: "status" }), el("th", { text: "latency" }), el("th", { text: "outcome" }), el("th", { text: "error" }))));
  const tb = el("tbody");
  for (const a of attempts) {
    tb.append(el("tr", {}, el("td", { text: a.attempt }), el("td", { text: when(a.at) }), el("td", { text: a.status === null ? "-" : a.status }), el("td", { text: ms(a.latency_ms) }), el("td", { text: a.outcome }), el("td", { text: a.error || "" })));
  }
  t.append(tb);
  return t;
}

function selectedIds() {
  return Array.from(document.querySelectorAll("#dead-table tbody input.pick:checked")).map((c) => c.value);
}

function updateSelectionButtons() {
  const n = selectedIds().length;
  $("retry-selected").disabled = n === 0;
  $("drop-selected").disabled = n === 0;
}

function renderDead(page) {
  fillSelect($("filter-destination"), page.destinations, state.filters.destination);
  fillSelect($("filter-reason"), page.reasons, state.filters.reason);
  $("dead-summary").textContent =
    page.dead.length + " shown of " + page.matching + " matching; " + page.total + " dead letters in all.";
  const body = clear($("dead-table").querySelector("tbody"));
  $("select-all").checked = false;
  for (const d of page.dead) {
    const details = el(
      "details",
      {},
      el("summary", { text: "attempts and response" }),
      attemptsTable(d.attempt_history),
      el("h4", { text: "Response snippet" }),
      el("pre", { class: "snippet", text: d.response_snippet || "(no response body)" }),
      el("p", {}, el("a", { href: "#events/" + d.event_id, text: "event " + d.event_id }), " · routes: " + d.routes.join(", "))
    );
    body.append(
      el(
        "tr",
        { "data-id": d.id, class: "dead-row" },
        el("td", {}, el("input", { type: "checkbox", class: "pick", value: d.id, "aria-label": "select " + d.id })),
        el("td", {}, el("code", { text: short(d.id), title: d.id })),
        el("td", { class: "destination", text: d.destination }),
        el("td", { text: d.kind }),
        el("td", { text: when(d.dead_at) }),
        el("td", { class: "num", text: d.attempts }),
        el("td", { class: "reason" }, el("div", { text: d.error }), details),
        el(
          "td",
          { class: "row-actions" },
          el("button", { type: "button", class: "row-retry", "data-id": d.id, text: "Retry" }),
          el("button", { type: "button", class: "row-drop danger", "data-id": d.id, text: "Drop" })
        )
      )
    );
  }
  if (!page.dead.length) {
    body.append(el("tr", { id: "no-dead" }, el("td", { colSpan: 8, class: "muted", text: "no dead letters" + (page.total ? " match these filters" : "") })));
  }
  updateSelectionButtons();
}

async function loadDead() {
  const q = new URLSearchParams();
  if (state.filters.destination) q.set("destination", state.filters.destination);
  if (state.filters.reason) q.set("reason", state.filters.reason);
  const page = await api("/ui/dead?" + q.toString());
  state.dead = page.dead;
  renderDead(page);
}

function report(result, verb) {
  const done = (result.retried || result.dropped || []).length;
  const skipped = result.skipped || [];
  let text = done + (verb === "retry" ? " queued again for delivery" : " dropped");
  if (skipped.length) text += "; " + skipped.length + " left alone (" + skipped[0].reason + ")";
  const r = $("dead-result");
  r.textContent = text;
  r.hidden = false;
}

async function act(verb, selection, description) {
  const ok = await confirmAction(description);
  if (!ok) return;
  try {
    const result = await api("/ui/dead/" + verb, { method: "POST", body: JSON.stringify(selection) });
    report(result, verb);
    showError("");
  } catch (e) {
    showError(e.message);
  }
  await refresh();
}

function wireDead() {
  $("filter-destination").addEventListener("change", (e) => {
    state.filters.destination = e.target.value;
    loadDead().catch((err) => showError(err.message));
  });
  $("filter-reason").addEventListener("change", (e) => {
    state.filters.reason = e.target.value;
    loadDead().catch((err) => showError(err.message));
  });
  $("select-all").addEventListener("change", (e) => {
    for (const c of document.querySelectorAll("#dead-table tbody input.pick")) c.checked = e.target.checked;
    updateSelectionButtons();
  });
  $("dead-table").addEventListener("change", (e) => {
    if (e.target.classList.contains("pick")) updateSelectionButtons();
  });
  $("dead-table").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (!button) return;
    const id = button.getAttribute("data-id");
    if (button.classList.contains("row-retry")) {
      act("retry", { ids: [id] }, "Retry delivery " + id + " now, with a fresh attempt budget?");
    } else if (button.classList.contains("row-drop")) {
      act("drop", { ids: [id] }, "Drop delivery " + id + "? It will not be delivered; its history stays readable.");
    }
  });
  $("retry-selected").addEventListener("click", () => {
    const ids = selectedIds();
    act("retry", { ids }, "Retry the " + ids.length + " selected dead letters now?");
  });
  $("drop-selected").addEventListener("click", () => {
    const ids = selectedIds();
    act("drop", { ids }, "Drop the " + ids.length + " selected dead letters? They will not be delivered.");
  });
  const filtered = () => ({ all: true, destination: state.filters.destination || null, reason: state.filters.reason || null });
  const scope = () =>
    (state.filters.destination ? " of " + state.filters.destination : "") + (state.filters.reason ? " (" + state.filters.reason + ")" : "");
  $("retry-all").addEventListener("click", () => act("retry", filtered(), "Retry every dead letter" + scope() + " now?"));
  $("drop-all").addEventListener("click", () => act("drop", filtered(), "Drop every dead letter" + scope() + "? They will not be delivered."));
}

// ---- events ----------------------------------------------------------------------------

function jobTimeline(job, receivedAt) {
  const items = el("ol", { class: "timeline" });
  items.append(el("li", { class: "t-received" }, el("span", { class: "t-at", text: when(receivedAt) }), " received, routed here by " + (job.routes.join(", ") || "-")));
  for (const a of job.attempts) {
    const cls = a.outcome === "delivered" ? "t-ok" : "t-fail";
    items.append(
      el(
        "li",
        { class: "t-attempt " + cls },
        el("span", { class: "t-at", text: when(a.at) }),
        " attempt " + a.attempt + " · " + (a.status === null ? "no response" : "HTTP " + a.status) + " · " + ms(a.latency_ms) + " · " + a.outcome + (a.error ? " · " + a.error : "")
      )
    );
  }
  let end = job.status;
  if (job.next_attempt_at) end += ", next attempt " + when(job.next_attempt_at);
  if (job.dead_reason) end += ": " + job.dead_reason;
  items.append(el("li", { class: "t-status t-" + job.status }, el("strong", { text: end })));
  return el(
    "div",
    { class: "job", "data-job": job.id, "data-destination": job.destination, "data-status": job.status },
    el("h4", {}, job.destination || "(purged)", " ", el("span", { class: "pill status-" + job.status, text: job.status }), " ", el("code", { class: "muted small", text: job.id })),
    items
  );
}

function renderEvent(found) {
  const e = found.event;
  const out = clear($("event-result"));
  const others = found.matches.filter((m) => m !== e.id);
  out.append(
    el("div", { class: "card", id: "event-card", "data-event": e.id },
      el("h3", {}, "Event ", el("code", { text: e.id }), " ", el("span", { class: "pill", text: e.kind })),
      el("p", { class: "muted" }, "received " + when(e.received_at) + " · matched " + (e.routes.join(", ") || "no route") + " · found by " + found.matched_by.replace("_", " ")),
      others.length
        ? el("p", {}, "Other events with this Mindstamp id: ", ...others.map((m) => el("a", { href: "#events/" + m, text: short(m) + " " })))
        : null,
      el("h4", { text: "Timeline" }),
      ...e.jobs.map((j) => jobTimeline(j, e.received_at)),
      el("h4", { text: "Why these routes (route --explain, under the config in force now)" }),
      el("pre", { class: "explain", text: e.explanation }),
      el("h4", { text: "Payload" }),
      el("pre", { class: "payload", text: JSON.stringify(e.body, null, 2) })
    )
  );
}

async function loadEvent(q) {
  $("event-q").value = q;
  if (!q) {
    clear($("event-result"));
    return;
  }
  try {
    renderEvent(await api("/ui/event?q=" + encodeURIComponent(q)));
    showError("");
  } catch (e) {
    clear($("event-result")).append(el("p", { class: "error", id: "event-missing", text: e.message }));
  }
}

// ---- navigation ------------------------------------------------------------------------

function route() {
  const hash = window.location.hash.replace(/^#/, "") || "overview";
  const [view, ...rest] = hash.split("/");
  const name = ["overview", "dead", "events"].includes(view) ? view : "overview";
  state.view = name;
  for (const v of ["overview", "dead", "events"]) {
    $("view-" + v).hidden = v !== name;
    $("nav-" + v).classList.toggle("active", v === name);
  }
  if (name === "events") loadEvent(decodeURIComponent(rest.join("/")));
  refresh();
}

async function refresh() {
  try {
    // The overview also feeds the dead-letter badge, so it is read on every view.
    await loadOverview();
    if (state.view === "dead") await loadDead();
    showError("");
  } catch (e) {
    showError("Could not refresh: " + e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wireDead();
  $("event-search").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("event-q").value.trim();
    const target = "#events/" + encodeURIComponent(q);
    if (window.location.hash === target) loadEvent(q);
    else window.location.hash = target;
  });
  window.addEventListener("hashchange", route);
  route();
  // The overview refreshes itself; the dead-letter list only on demand (a refresh under
  // the operator's cursor would move the row they are about to click).
  state.timer = setInterval(() => {
    if (state.view === "overview" && !document.hidden) refresh();
    else loadOverview().catch(() => {});
  }, REFRESH_MS);
});
