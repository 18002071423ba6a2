// The /ops dashboard: polls POST /graphql and draws the tables and the SVG charts.
// Hand-written, no dependencies, no build step. Served by the query service from the binary.
"use strict";

const QUERY = `query OpsDashboard {
  consumerGroups {
    group status members lag maxLag lagSeconds uncommittedPartitions
    consumeRate produceRate drainSeconds sampledAt
    partitions {
      topic partition committedOffset logStartOffset logEndOffset
      lag lagSeconds lagSecondsInterpolated status
    }
  }
  projections { projection behind lastAppliedPosition stalenessSeconds }
  relay { backlog oldestAgeSeconds publishedThrough }
  deadLetters { topic depth }
  sagaCounts { state count }
  opsHistory { at relayBacklog groups { group lag lagSeconds status } }
  lagMonitor { up error lastGoodAt failingSince }
}`;

const SAGA_STATES = ["RUNNING", "COMPENSATING", "CONFIRMED", "CANCELLED", "STUCK"];
const SEVERITY = { OK: 0, WARN: 1, REWIND: 2, STALL: 3, STOP: 4 };
// Okabe–Ito colours (distinguishable with colour-vision deficiencies), yellow left out.
const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#332288", "#000000"];
const WINDOW_MS = 15 * 60 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

const refreshSeconds = (() => {
  const value = Number(new URLSearchParams(location.search).get("refresh"));
  return Number.isFinite(value) && value >= 1 ? value : 5;
})();

const state = {
  data: null, // the last good answer
  lastGood: null, // Date of the last good answer
  expanded: new Set(), // groups whose partitions are shown
};

// ---- DOM helpers -------------------------------------------------------------------------

/** Creates an HTML element: `el("td", { class: "num", title: "…" }, "text", child)`. */
function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Creates an SVG element; attributes as for `el`. */
function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

// ---- Formatting --------------------------------------------------------------------------

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

const fmtInt = (n) => (n === null || n === undefined ? "—" : integer.format(n));

/** 0.4 s, 42 s, 3 min, 2 h 5 min, 3 d 4 h; "—" for null. */
function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (!Number.isFinite(seconds)) return "never";
  const s = Math.max(0, seconds);
  if (s < 10) return `${oneDecimal.format(s)} s`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  const hours = Math.floor(s / 3600);
  if (hours < 48) {
    const minutes = Math.round((s - hours * 3600) / 60);
    return minutes && hours < 10 ? `${hours} h ${minutes} min` : `${hours} h`;
  }
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** Time to drain: "—" when caught up, "never" when the backlog grows. */
function fmtDrain(group) {
  if (group.lag === 0) return "—";
  if (group.consumeRate === null || group.consumeRate === undefined) return "…";
  if (group.drainSeconds === null || group.drainSeconds === undefined) return "never";
  if (group.drainSeconds < 1) return "< 1 s";
  return fmtDuration(group.drainSeconds);
}

// Null before the monitor has two samples.
const fmtRate = (r) =>
  r === null || r === undefined ? "—" : `${r < 10 ? oneDecimal.format(r) : integer.format(r)}/s`;

const fmtClock = (date, seconds = true) =>
  date.toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}), hour12: false,
  });

/** Parses an RFC 3339 timestamp (any number of fraction digits) into epoch milliseconds. */
function parseTime(text) {
  return Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
}

function fmtAgo(text) {
  const seconds = (Date.now() - parseTime(text)) / 1000;
  if (!Number.isFinite(seconds)) return "—";
  return seconds < 1 ? "now" : `${fmtDuration(Math.round(seconds))} ago`;
}

function statusBadge(status) {
  return el("span", { class: `badge status-${String(status).toLowerCase()}` }, status);
}

const worst = (statuses) =>
  statuses.reduce((a, b) => ((SEVERITY[b] ?? 0) > (SEVERITY[a] ?? 0) ? b : a), "OK");

const byName = (key) => (a, b) => String(a[key]).localeCompare(String(b[key]));

// ---- Fetching ----------------------------------------------------------------------------

class OpsError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

// The admin token GraphQL needs: given once in the form the page shows when it is refused,
// or as /ops#token=<JWT> (taken off the address bar at once), and kept in localStorage.
const TOKEN_KEY = "orderflow.token";
const AUTH_CODES = new Set(["UNAUTHENTICATED", "TOKEN_EXPIRED", "FORBIDDEN"]);

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage disabled
  }
}

function saveToken(value) {
  try {
    localStorage.setItem(TOKEN_KEY, value.trim().replace(/^Bearer\s+/i, ""));
  } catch {
    // storage disabled: the token lasts until the page is left
  }
}

function tokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  saveToken(decodeURIComponent(match[1]));
  history.replaceState(null, "", window.location.pathname + window.location.search);
}

// While the page waits for a token, it does not poll: a refresh would redraw the banner
// under the user's typing. One loop at most: a token given while a refresh is in flight
// lets that refresh schedule the next.
let awaitingToken = false;
let inFlight = false;
let timer = null;

function tokenForm() {
  const input = el("input", { type: "password", id: "token-input", placeholder: "admin token (JWT)", autocomplete: "off", "aria-label": "Admin token" });
  const form = el("form", { id: "token-form", class: "token-form" }, input, " ", el("button", { type: "submit" }, "Use token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    saveToken(input.value);
    awaitingToken = false;
    if (!inFlight) refresh();
  });
  return form;
}

async function fetchOps() {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const abort = new AbortController();
  const timeout = Math.max(10, refreshSeconds * 2);
  const timer = setTimeout(() => abort.abort(), timeout * 1000);
  let response;
  let text;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers,
      body: JSON.stringify({ query: QUERY, operationName: "OpsDashboard" }),
      cache: "no-store",
      signal: abort.signal,
    });
    text = await response.text();
  } catch (error) {
    throw abort.signal.aborted
      ? new OpsError(`no answer from /graphql within ${timeout} s`, "CLIENT_TIMEOUT")
      : new OpsError(`cannot reach /graphql (${error.message})`, "NETWORK");
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: reported below by status
  }
  if (body && Array.isArray(body.errors) && body.errors.length > 0) {
    const first = body.errors[0];
    const more = body.errors.length > 1 ? ` (and ${body.errors.length - 1} more)` : "";
    const error = new OpsError(`${first.message ?? "unknown error"}${more}`, first.extensions?.code ?? null);
    // Fields that could not be read are null; the others (the lag figures need no
    // database) are still worth showing.
    if (response.ok && body.data && typeof body.data === "object") return { data: body.data, partial: error };
    throw error;
  }
  if (!response.ok) throw new OpsError(`HTTP ${response.status} ${response.statusText}`.trim(), `HTTP_${response.status}`);
  if (!body || typeof body.data !== "object" || body.data === null) {
    throw new OpsError("the answer from /graphql has no data", "BAD_RESPONSE");
  }
  return { data: body.data, partial: null };
}

// ---- Refresh loop ------------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  inFlight = true;
  try {
    const { data, partial } = await fetchOps();
    // A field that failed this time keeps what it showed before.
    for (const [field, value] of Object.entries(data)) {
      if (value === null && state.data && state.data[field] !== null) data[field] = state.data[field];
    }
    state.data = data;
    state.lastGood = new Date();
    showError(partial);
    render();
  } catch (error) {
    if (!(error instanceof OpsError)) throw error; // our own bug: let it surface
    showError(error);
  } finally {
    inFlight = false;
    if (!awaitingToken) timer = setTimeout(refresh, refreshSeconds * 1000);
  }
}

function showError(error) {
  const banner = $("#error-banner");
  const dot = $("#refresh-dot");
  if (!error) {
    banner.hidden = true;
    banner.replaceChildren();
    dot.className = "dot ok";
    delete document.body.dataset.error;
    $("#last-refresh").textContent = `Updated ${fmtClock(state.lastGood)}`;
    return;
  }
  const now = new Date();
  banner.replaceChildren(
    el("strong", {}, `Refresh failed at ${fmtClock(now)}:`), " ",
    error.message, " ",
    error.code ? el("code", { class: "code", title: "error code" }, error.code) : null, " ",
    el("span", { class: "keep" },
      state.lastGood
        ? `Showing the data from ${fmtClock(state.lastGood)}; retrying every ${refreshSeconds} s.`
        : `No data yet; retrying every ${refreshSeconds} s.`),
  );
  if (AUTH_CODES.has(error.code)) {
    awaitingToken = true;
    banner.append(tokenForm());
  }
  banner.hidden = false;
  dot.className = "dot failed";
  document.body.dataset.error = error.code ?? "ERROR";
  $("#last-refresh").textContent = state.lastGood
    ? `Updated ${fmtClock(state.lastGood)} (stale)`
    : "No data yet";
}

// ---- Rendering ---------------------------------------------------------------------------

function render() {
  const data = state.data;
  const groups = [...(data.consumerGroups ?? [])].sort(byName("group"));
  const history = data.opsHistory ?? [];
  const colours = groupColours(groups, history);
  renderSummary(data, groups);
  renderMonitor(data.lagMonitor);
  renderGroups(groups, colours);
  const drawn = [
    drawChart("#chart-lag", groupSeries(history, colours, "lag"), { yFormat: fmtInt }),
    drawChart("#chart-lag-seconds", groupSeries(history, colours, "lagSeconds"), {
      yFormat: fmtDuration, durations: true,
    }),
    drawChart("#chart-relay", relaySeries(history), { yFormat: fmtInt }),
  ];
  renderRelay(data.relay);
  renderProjections(data.projections ?? []);
  renderDeadLetters(data.deadLetters ?? []);
  renderSagas(data.sagaCounts ?? []);
  document.body.dataset.charts = String(drawn.filter(Boolean).length);
  document.body.dataset.rendered = "true";
}

/** Says when the lag figures are not fresh: the monitor cannot read (all of) the broker. */
function renderMonitor(monitor) {
  const banner = $("#monitor-banner");
  if (!monitor || (monitor.up && !monitor.error)) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const since = monitor.failingSince ? ` since ${fmtClock(new Date(monitor.failingSince))}` : "";
  const good = monitor.lastGoodAt
    ? `Lag figures are from ${fmtClock(new Date(monitor.lastGoodAt))}; groups turn STALL, then STOP, while this lasts.`
    : "No lag figures yet.";
  banner.replaceChildren(
    el("strong", {}, monitor.up ? "Some offsets could not be read:" : `The lag monitor cannot read the broker${since}:`),
    " ", monitor.error ?? "", " ",
    monitor.up ? null : el("span", { class: "keep" }, good),
  );
  banner.hidden = false;
}

function renderSummary(data, groups) {
  const statuses = groups.map((g) => g.status);
  const counts = Object.keys(SEVERITY)
    .reverse()
    .map((s) => [s, statuses.filter((x) => x === s).length])
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`);
  const groupWorst = worst(statuses);
  const totalLag = groups.reduce((sum, g) => sum + g.lag, 0);
  const maxLagSeconds = groups.reduce((max, g) => Math.max(max, g.lagSeconds), 0);
  const dead = (data.deadLetters ?? []).reduce((sum, d) => sum + d.depth, 0);
  const sagas = Object.fromEntries((data.sagaCounts ?? []).map((s) => [s.state, s.count]));
  const staleness = (data.projections ?? []).reduce((max, p) => Math.max(max, p.stalenessSeconds), 0);
  const relay = data.relay ?? { backlog: 0, oldestAgeSeconds: 0 };

  const tile = (label, value, detail, tone) =>
    el("div", { class: `tile ${tone ?? ""}` },
      el("dt", {}, label), el("dd", {}, value), el("dd", { class: "detail", title: detail }, detail));
  $("#summary").replaceChildren(
    tile("Consumer groups", String(groups.length), counts.join(" · ") || "none", `tone-${groupWorst.toLowerCase()}`),
    tile("Total lag", fmtInt(totalLag), `records; worst ${fmtDuration(maxLagSeconds)} behind`, null),
    tile("Relay backlog", fmtInt(relay.backlog), `events; oldest ${fmtDuration(relay.oldestAgeSeconds)}`,
      relay.backlog > 0 && relay.oldestAgeSeconds >= 60 ? "tone-warn" : null),
    tile("Projections", (data.projections ?? []).length ? fmtDuration(staleness) : "—", "worst staleness",
      staleness >= 60 ? "tone-warn" : null),
    tile("Dead letters", fmtInt(dead), dead > 0 ? "records waiting in .dlq topics" : "none", dead > 0 ? "tone-stop" : null),
    tile("Sagas stuck", fmtInt(sagas.STUCK ?? 0), `${fmtInt(sagas.RUNNING ?? 0)} running, ${fmtInt(sagas.COMPENSATING ?? 0)} compensating`,
      (sagas.STUCK ?? 0) > 0 ? "tone-stop" : null),
  );
}

function renderGroups(groups, colours) {
  const tbody = $("#groups tbody");
  const focused = document.activeElement?.dataset?.group;
  const rows = [];
  if (groups.length === 0) {
    rows.push(el("tr", {}, el("td", { colspan: 11, class: "empty" }, "No consumer groups reported yet.")));
  }
  for (const g of groups) {
    const open = state.expanded.has(g.group);
    const detailId = `partitions-${cssId(g.group)}`;
    // The group's lag seconds is its worst partition's: labelled when that one is an estimate.
    const slowest = g.partitions.reduce((a, p) => ((p.lagSeconds ?? -1) > (a?.lagSeconds ?? -1) ? p : a), null);
    const interpolated = Boolean(slowest?.lagSecondsInterpolated && slowest.lagSeconds > 0);
    rows.push(el("tr", { class: `group-row status-row-${g.status.toLowerCase()}`, "data-group": g.group },
      el("th", { scope: "row" },
        el("button", {
          type: "button", class: "toggle", "aria-expanded": String(open), "aria-controls": open ? detailId : null,
          "data-group": g.group, title: `Show the partitions of ${g.group}`,
        },
        el("span", { class: "chevron", "aria-hidden": "true" }, open ? "▾" : "▸"),
        swatch(colours.get(g.group)),
        g.group)),
      el("td", {}, statusBadge(g.status)),
      el("td", { class: "num", title: g.members === null ? "the broker did not say" : null }, fmtInt(g.members)),
      el("td", { class: "num strong" }, fmtInt(g.lag)),
      el("td", { class: "num" }, fmtInt(g.maxLag)),
      el("td", { class: "num" }, fmtDuration(g.lagSeconds), interpolated ? estMarker() : null),
      el("td", { class: "num" },
        g.uncommittedPartitions > 0
          ? el("span", { class: "pill warn", title: "partitions with no committed offset; not counted in the lag" }, g.uncommittedPartitions)
          : el("span", { class: "muted" }, "0")),
      el("td", { class: "num" }, fmtRate(g.consumeRate)),
      el("td", { class: "num" }, fmtRate(g.produceRate)),
      el("td", { class: `num ${fmtDrain(g) === "never" ? "never" : ""}` }, fmtDrain(g)),
      el("td", { class: "num muted", title: g.sampledAt }, fmtAgo(g.sampledAt)),
    ));
    if (open) {
      rows.push(el("tr", { class: "detail", id: detailId },
        el("td", { colspan: 11 }, partitionsTable(g))));
    }
  }
  tbody.replaceChildren(...rows);
  if (focused) tbody.querySelector(`button[data-group="${CSS.escape(focused)}"]`)?.focus();
}

function partitionsTable(group) {
  const partitions = [...group.partitions].sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
  return el("table", { class: "partitions", "aria-label": `Partitions of ${group.group}` },
    el("thead", {}, el("tr", {},
      ["Topic", "Partition", "Committed offset", "Log start", "Log end", "Lag", "Lag (seconds)", "Status"].map((h, i) =>
        el("th", { scope: "col", class: i === 0 || i === 7 ? null : "num" }, h)))),
    el("tbody", {}, partitions.length === 0
      ? el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No partitions assigned."))
      : partitions.map((p) => el("tr", {},
        el("td", {}, p.topic),
        el("td", { class: "num" }, p.partition),
        el("td", { class: "num" }, p.committedOffset === null ? el("span", { class: "pill warn" }, "no commit") : fmtInt(p.committedOffset)),
        el("td", { class: "num" }, fmtInt(p.logStartOffset)),
        el("td", { class: "num" }, fmtInt(p.logEndOffset)),
        el("td", { class: "num strong" }, fmtInt(p.lag)),
        el("td", { class: "num" }, fmtDuration(p.lagSeconds), p.lagSecondsInterpolated ? estMarker() : null),
        el("td", {}, statusBadge(p.status)),
      ))));
}

function estMarker() {
  return el("abbr", {
    class: "est",
    title: "Interpolated estimate: the timestamp of the first unconsumed record was not available",
  }, "est.");
}

function cssId(text) {
  return text.replace(/[^A-Za-z0-9_-]/g, "_");
}

function toggleGroup(name) {
  if (state.expanded.has(name)) state.expanded.delete(name);
  else state.expanded.add(name);
  if (state.data) render();
}

function renderRelay(relay) {
  if (!relay) return;
  $("#relay").replaceChildren(
    el("dt", {}, "Backlog"), el("dd", { class: relay.backlog > 0 ? "strong" : null }, `${fmtInt(relay.backlog)} events`),
    el("dt", {}, "Oldest unpublished"), el("dd", { class: relay.oldestAgeSeconds >= 60 ? "warn-text" : null },
      relay.backlog > 0 ? fmtDuration(relay.oldestAgeSeconds) : "—"),
    el("dt", {}, "Published through"),
    el("dd", { title: "event store position of the last published event" }, fmtInt(relay.publishedThrough)),
  );
}

function renderProjections(projections) {
  $("#projections tbody").replaceChildren(...(projections.length === 0
    ? [el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No projections."))]
    : [...projections].sort(byName("projection")).map((p) => el("tr", {},
      el("td", {}, p.projection),
      el("td", { class: `num ${p.behind > 0 ? "strong" : "muted"}` }, fmtInt(p.behind)),
      el("td", { class: "num" }, fmtInt(p.lastAppliedPosition)),
      el("td", { class: `num ${p.stalenessSeconds >= 60 ? "warn-text" : ""}` },
        p.stalenessSeconds === 0 ? el("span", { class: "ok-text" }, "caught up") : fmtDuration(p.stalenessSeconds)),
    ))));
}

function renderDeadLetters(deadLetters) {
  $("#dead-letters tbody").replaceChildren(...(deadLetters.length === 0
    ? [el("tr", {}, el("td", { colspan: 2, class: "empty" }, "No dead-letter topics."))]
    : [...deadLetters].sort(byName("topic")).map((d) => el("tr", { class: d.depth > 0 ? "alarm" : null },
      el("td", {}, d.topic),
      el("td", { class: "num" }, d.depth > 0 ? el("span", { class: "pill stop" }, fmtInt(d.depth)) : el("span", { class: "muted" }, "0")),
    ))));
}

function renderSagas(sagaCounts) {
  const counts = Object.fromEntries(sagaCounts.map((s) => [s.state, s.count]));
  const states = [...SAGA_STATES, ...Object.keys(counts).filter((s) => !SAGA_STATES.includes(s))];
  $("#sagas tbody").replaceChildren(...states.map((s) => {
    const n = counts[s] ?? 0;
    const tone = n > 0 && s === "STUCK" ? "alarm" : n > 0 && s === "COMPENSATING" ? "caution" : null;
    return el("tr", { class: tone },
      el("td", {}, s.charAt(0) + s.slice(1).toLowerCase()),
      el("td", { class: "num" }, tone === "alarm" ? el("span", { class: "pill stop" }, fmtInt(n)) : fmtInt(n)));
  }));
}

// ---- Charts ------------------------------------------------------------------------------

function groupColours(groups, history) {
  const names = new Set(groups.map((g) => g.group));
  for (const sample of history) for (const g of sample.groups) names.add(g.group);
  return new Map([...names].sort().map((name, i) => [name, PALETTE[i % PALETTE.length]]));
}

/** A small square of the series colour (set through CSSOM, so no inline style attribute). */
function swatch(colourValue) {
  const box = el("span", { class: "swatch-box", "aria-hidden": "true" });
  box.style.backgroundColor = colourValue ?? "#888";
  return box;
}

/** One series per group: `{ name, colour, points: [[ms, value or null], …] }`. */
function groupSeries(history, colours, field) {
  const times = history.map((s) => parseTime(s.at));
  return [...colours.keys()].map((name) => ({
    name,
    colour: colours.get(name),
    points: history.map((sample, i) => {
      const g = sample.groups.find((x) => x.group === name);
      return [times[i], g ? g[field] : null];
    }),
  })).filter((series) => series.points.some(([, v]) => v !== null));
}

function relaySeries(history) {
  if (history.length === 0) return [];
  return [{
    name: "relay backlog",
    colour: PALETTE[0],
    points: history.map((s) => [parseTime(s.at), s.relayBacklog]),
  }];
}

/** A tick step of 1, 2 or 5 × 10^k giving about `count` ticks up to `max`. */
function niceStep(max, count) {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return Math.max(step, 1);
}

/** A tick step in seconds that reads well as a duration. */
function durationStep(max, count) {
  const raw = max / count;
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];
  return steps.find((s) => s >= raw) ?? Math.ceil(raw / 86400) * 86400;
}

/**
 * Draws a line chart into the figure `selector`; returns whether it had at least one series
 * with data. Each sample time gets a hover column whose <title> lists every series' value.
 */
function drawChart(selector, series, { yFormat, durations = false }) {
  const figure = $(selector);
  for (const old of figure.querySelectorAll("svg, .legend, .empty-chart")) old.remove();
  const values = series.flatMap((s) => s.points.map(([, v]) => v)).filter((v) => v !== null);
  if (series.length === 0 || values.length === 0) {
    figure.append(el("p", { class: "empty-chart" }, "No samples yet."));
    return false;
  }

  // Drawn at the figure's own width so that text keeps its CSS size.
  const W = Math.max(300, Math.round(figure.clientWidth - 22) || 640), H = 200;
  const left = 58, right = 12, top = 10, bottom = 24;
  const times = [...new Set(series.flatMap((s) => s.points.map(([t]) => t)))].sort((a, b) => a - b);
  const end = times[times.length - 1];
  const start = Math.min(end - 60_000, Math.max(times[0], end - WINDOW_MS));
  const x = (t) => left + ((t - start) / (end - start)) * (W - left - right);

  const maxValue = Math.max(...values);
  const step = durations ? durationStep(maxValue || 1, 4) : niceStep(maxValue || 1, 4);
  const yMax = Math.max(step, Math.ceil(maxValue / step) * step);
  const y = (v) => top + (1 - v / yMax) * (H - top - bottom);

  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "data-series": series.length,
    "aria-label": `${figure.querySelector("figcaption").textContent}: ${series.length} series`,
  });

  // Y grid and labels.
  for (let v = 0; v <= yMax + step / 2; v += step) {
    chart.append(
      svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, yFormat(v)),
    );
  }

  // X ticks on round times.
  const span = end - start;
  const xStep = [15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3].find((s) => span / s <= 6) ?? 1800e3;
  for (let t = Math.ceil(start / xStep) * xStep; t <= end; t += xStep) {
    chart.append(
      svg("line", { x1: x(t), x2: x(t), y1: top, y2: H - bottom, class: "grid" }),
      svg("text", { x: x(t), y: H - bottom + 16, class: "tick", "text-anchor": "middle" }, fmtClock(new Date(t), xStep < 60e3)),
    );
  }

  // One line per series; a gap where a sample lacks the series; dots for lone points.
  for (const s of series) {
    const visible = s.points.filter(([t]) => t >= start);
    let d = "";
    visible.forEach(([t, v], i) => {
      if (v === null) return;
      const previous = visible[i - 1];
      d += `${previous && previous[1] !== null ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      const next = visible[i + 1];
      if ((!previous || previous[1] === null) && (!next || next[1] === null)) {
        chart.append(svg("circle", { cx: x(t), cy: y(v), r: 2.5, fill: s.colour }));
      }
    });
    chart.append(svg("path", { d, class: "line", stroke: s.colour }, svg("title", {}, s.name)));
  }

  // Hover columns with every series' value at that sample.
  const visibleTimes = times.filter((t) => t >= start);
  visibleTimes.forEach((t, i) => {
    const from = i === 0 ? x(t) : (x(visibleTimes[i - 1]) + x(t)) / 2;
    const to = i === visibleTimes.length - 1 ? x(t) : (x(t) + x(visibleTimes[i + 1])) / 2;
    const lines = series.map((s) => {
      const point = s.points.find(([pt]) => pt === t);
      return `${s.name}: ${point && point[1] !== null ? yFormat(point[1]) : "—"}`;
    });
    chart.append(svg("rect", {
      x: from - (i === 0 ? 3 : 0), y: top, width: Math.max(to - from, 0) + (i === 0 || i === visibleTimes.length - 1 ? 3 : 0),
      height: H - top - bottom, class: "hover",
    }, svg("title", {}, [fmtClock(new Date(t)), ...lines].join("\n"))));
  });

  const legend = el("ul", { class: "legend" }, series.map((s) => {
    const last = [...s.points].reverse().find(([, v]) => v !== null);
    return el("li", {}, swatch(s.colour), el("span", { class: "name" }, s.name),
      el("span", { class: "value" }, last ? yFormat(last[1]) : "—"));
  }));
  figure.append(chart, legend);
  return true;
}

// ---- Start -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  tokenFromFragment();
  $("#refresh-every").textContent = `· every ${refreshSeconds} s`;
  $("#groups tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr.group-row");
    if (row) toggleGroup(row.dataset.group);
  });
  let resizing;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => state.data && render(), 150);
  });
  refresh();
});
