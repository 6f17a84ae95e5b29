// The operator's dashboard: reads the service's own readout (GET /v1/wau/…) and draws it as
// SVG, each chart with its numbers in a table beside it. Served by the service itself under a
// strict Content-Security-Policy: no other origin, no inline script or style. The read token
// lives in this tab's sessionStorage only (never a URL, a cookie or localStorage).
"use strict";

const TOKEN_KEY = "relay-telemetry-read-token";
const DIMENSIONS = [
  ["platform", "Platform"],
  ["primary_framework", "Framework"],
  ["daemon_version", "Relay version"],
  ["protocol_version", "Protocol version"],
  ["node_major", "Node.js major"],
];
/** The series shown until another span is chosen; the longest the service answers is 105. */
const DEFAULT_SERIES_WEEKS = 13;
/** Values drawn in their own colour in an adoption chart; the rest share one band, "other values". */
const BANDS = 8;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);

// ISO weeks, computed in UTC as the service computes them.
function isoWeek(date) {
  const day = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
  const weekday = day.getUTCDay() || 7;
  day.setUTCDate(day.getUTCDate() + 4 - weekday);
  const yearStart = Date.UTC(day.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((day - yearStart) / 86_400_000 + 1) / 7);
  return `${day.getUTCFullYear()}-W${String(week).padStart(2, "0")}`;
}

function weeksEndingNow(count) {
  const now = new Date();
  return Array.from({ length: count }, (_, back) => isoWeek(new Date(now - back * 7 * 86_400_000))).reverse();
}

/** What the service answered, in words a person can act on. */
function problem(response) {
  const wait = response.headers.get("retry-after");
  switch (response.status) {
    case 401:
      return token ? "That token was not accepted. Enter the read token again." : "This readout needs the read token.";
    case 404:
      return "The readout is disabled on this service: no read token is configured (WAU_READ_TOKEN), and it is not public.";
    case 429:
      return `Too many requests from this address. Try again in ${wait ?? "a few"} seconds.`;
    case 503:
      return `The service's store is unavailable right now. Try again in ${wait ?? "a few"} seconds.`;
    default:
      return `The service answered ${response.status}. Try again later.`;
  }
}

class Refused extends Error {
  constructor(response) {
    super(problem(response));
    this.status = response.status;
  }
}

async function api(path, accept = "application/json") {
  const headers = { accept };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Refused(response);
  return accept === "text/csv" ? response.text() : response.json();
}

function say(text, isProblem = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("problem", isProblem);
}

function svg(tag, attributes = {}, text) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A horizontal bar chart of `rows` ([label, value, withheld?]); the table beside it holds the numbers. */
function barChart(figure, rows, description) {
  const rowHeight = 22;
  const labelWidth = 150;
  const width = 560;
  const height = Math.max(rows.length, 1) * rowHeight + 8;
  const largest = Math.max(1, ...rows.map(([, value]) => value));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": description });
  rows.forEach(([label, value, withheld], at) => {
    const y = at * rowHeight + 4;
    const barWidth = Math.round(((width - labelWidth - 60) * value) / largest);
    chart.append(svg("text", { x: labelWidth - 8, y: y + 15, "text-anchor": "end" }, label));
    chart.append(svg("rect", { class: withheld ? "bar withheld" : "bar", x: labelWidth, y, width: barWidth, height: rowHeight - 6 }));
    chart.append(svg("text", { x: labelWidth + barWidth + 6, y: y + 15 }, String(value)));
  });
  chart.append(svg("line", { class: "axis", x1: labelWidth, x2: labelWidth, y1: 0, y2: height }));
  figure.replaceChildren(chart);
}

/** Every how many weeks a column is labelled, so that 104 of them stay readable. */
function labelEvery(weeks) {
  return Math.max(1, Math.ceil(weeks / 13));
}

/** A column chart of a series: one bar per week, oldest first. */
function columnChart(figure, weeks) {
  const width = 640;
  const height = 220;
  const bottom = 40;
  const column = width / weeks.length;
  const every = labelEvery(weeks.length);
  const largest = Math.max(1, ...weeks.map((week) => week.weekly_active_sessions));
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "Weekly-active sessions per week; the numbers are in the table beside it",
  });
  weeks.forEach((week, at) => {
    const barHeight = Math.round(((height - bottom - 20) * week.weekly_active_sessions) / largest);
    const x = at * column + 4;
    const y = height - bottom - barHeight;
    const gap = Math.min(8, column / 4);
    chart.append(svg("rect", { class: "bar", x: at * column + gap / 2, y, width: column - gap, height: barHeight }));
    if (at % every === 0 || at === weeks.length - 1) {
      if (every === 1) chart.append(svg("text", { x: x + (column - 8) / 2, y: y - 4, "text-anchor": "middle" }, String(week.weekly_active_sessions)));
      const anchor = at === 0 ? "start" : at === weeks.length - 1 ? "end" : "middle";
      const labelX = at === 0 ? 0 : at === weeks.length - 1 ? width : x + (column - 8) / 2;
      chart.append(svg("text", { x: labelX, y: height - bottom + 16, "text-anchor": anchor }, week.week.slice(5)));
    }
  });
  chart.append(svg("line", { class: "axis", x1: 0, x2: width, y1: height - bottom, y2: height - bottom }));
  figure.replaceChildren(chart);
}

function fillTable(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(
    ...rows.map(([label, value, withheld]) => {
      const row = document.createElement("tr");
      if (withheld) row.className = "withheld";
      for (const cell of [label, String(value)]) {
        const td = document.createElement("td");
        td.textContent = cell;
        row.append(td);
      }
      return row;
    }),
  );
}

/** Downloads the readout's own CSV for `path`, fetched with the token. */
async function downloadCsv(path, name) {
  try {
    const csv = await api(path, "text/csv");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (error) {
    say(error.message, true);
  }
}

/**
 * A stacked column chart of adoption: per week, one band per value (the most common values
 * across the span in their own colours, the others together), withheld sessions on top.
 */
function stackedChart(figure, legend, adoption) {
  const width = 640;
  const height = 240;
  const bottom = 40;
  const weeks = adoption.weeks;
  const column = width / weeks.length;
  const every = labelEvery(weeks.length);
  const totals = new Map();
  for (const week of weeks) {
    for (const [value, sessions] of Object.entries(week.counts)) totals.set(value, (totals.get(value) ?? 0) + sessions);
  }
  const named = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, BANDS).map(([value]) => value);
  const bandOf = (value) => (named.includes(value) ? `band-${named.indexOf(value)}` : `band-${BANDS - 1}`);
  const largest = Math.max(1, ...weeks.map((week) => week.weekly_active_sessions));
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `Sessions per week by ${adoption.by}, stacked; the numbers are in the table below`,
  });
  const scale = (height - bottom - 12) / largest;
  weeks.forEach((week, at) => {
    const gap = Math.min(8, column / 4);
    let top = height - bottom;
    const bands = Object.entries(week.counts).map(([value, sessions]) => [bandOf(value), sessions]);
    if (week.withheld_sessions > 0) bands.push(["band-withheld", week.withheld_sessions]);
    for (const [band, sessions] of bands) {
      const bandHeight = sessions * scale;
      top -= bandHeight;
      chart.append(svg("rect", { class: `band ${band}`, x: at * column + gap / 2, y: top, width: column - gap, height: bandHeight }));
    }
    if (at % every === 0 || at === weeks.length - 1) {
      const anchor = at === 0 ? "start" : at === weeks.length - 1 ? "end" : "middle";
      const labelX = at === 0 ? 0 : at === weeks.length - 1 ? width : at * column + column / 2;
      chart.append(svg("text", { x: labelX, y: height - bottom + 16, "text-anchor": anchor }, week.week.slice(5)));
    }
  });
  chart.append(svg("line", { class: "axis", x1: 0, x2: width, y1: height - bottom, y2: height - bottom }));
  figure.replaceChildren(chart);
  const overflow = totals.size > BANDS;
  const entries = named.map((value, at) => [`band-${at}`, overflow && at === BANDS - 1 ? `${value} and other values` : value]);
  if (weeks.some((week) => week.withheld_sessions > 0)) entries.push(["band-withheld", "withheld"]);
  legend.replaceChildren(
    ...entries.map(([band, label]) => {
      const item = document.createElement("div");
      const swatch = svg("svg", { viewBox: "0 0 10 10", "aria-hidden": "true" });
      swatch.append(svg("rect", { class: band, width: 10, height: 10 }));
      item.append(swatch, document.createTextNode(label));
      return item;
    }),
  );
}

function seriesWeeks() {
  return weeksEndingNow(Number($("span").value) || DEFAULT_SERIES_WEEKS);
}

function seriesPath(weeks, by) {
  return `/v1/wau?from=${weeks[0]}&to=${weeks.at(-1)}${by ? `&by=${by}` : ""}`;
}

async function showSeries(weeks) {
  const series = await api(seriesPath(weeks));
  $("series-title").textContent = `The last ${weeks.length} weeks`;
  columnChart($("series-chart"), series.weeks);
  fillTable($("series-table"), series.weeks.map((week) => [week.week, week.weekly_active_sessions]));
  const outside = series.weeks.filter((week) => week.outside_retention).length;
  $("series-note").textContent = outside
    ? `The oldest ${outside} of these weeks are past what the service keeps: their 0 means “no longer known”.`
    : "";
  const current = series.weeks.at(-1);
  $("current-week").textContent = current.week;
  $("current-count").textContent = String(current.weekly_active_sessions);
  return series;
}

async function showAdoption(weeks) {
  const by = $("adoption-by").value;
  const adoption = await api(seriesPath(weeks, by));
  const title = DIMENSIONS.find(([dimension]) => dimension === by)[1];
  $("adoption-title").textContent = `${title} over the last ${weeks.length} weeks`;
  stackedChart($("adoption-chart"), $("adoption-legend"), adoption);
  const rows = [];
  for (const week of adoption.weeks) {
    for (const [value, sessions] of Object.entries(week.counts)) rows.push([week.week, value, sessions, false]);
    if (week.withheld_sessions > 0) rows.push([week.week, "withheld", week.withheld_sessions, true]);
  }
  const body = $("adoption-table").tBodies[0];
  body.replaceChildren(
    ...rows.map(([week, value, sessions, withheld]) => {
      const row = document.createElement("tr");
      if (withheld) row.className = "withheld";
      for (const cell of [week, value, String(sessions)]) {
        const td = document.createElement("td");
        td.textContent = cell;
        row.append(td);
      }
      return row;
    }),
  );
}

async function showWeek(week) {
  const answers = await Promise.all(DIMENSIONS.map(([dimension]) => api(`/v1/wau/${week}?by=${dimension}`)));
  const count = answers[0].weekly_active_sessions;
  $("week-note").textContent =
    count === 0
      ? `No sessions were recorded in ${week}.`
      : `${count} sessions in ${week}. Values held by too few sessions to show are summed as “withheld”.`;
  const sections = answers.map((breakdown, at) => {
    const [dimension, title] = DIMENSIONS[at];
    const section = $("breakdown").content.firstElementChild.cloneNode(true);
    section.id = `by-${dimension}`;
    section.querySelector("h3").textContent = title;
    section.querySelector("caption").textContent = `Sessions in ${week} by ${title.toLowerCase()}`;
    const rows = Object.entries(breakdown.counts).map(([value, sessions]) => [value, sessions, false]);
    if (breakdown.withheld_sessions > 0) rows.push(["withheld", breakdown.withheld_sessions, true]);
    barChart(section.querySelector("figure"), rows, `Sessions in ${week} by ${title.toLowerCase()}; the numbers are in the table beside it`);
    fillTable(section.querySelector("table"), rows);
    section.querySelector("button").addEventListener("click", () =>
      downloadCsv(`/v1/wau/${week}?by=${dimension}`, `telemetry-${week}-${dimension}.csv`),
    );
    return section;
  });
  $("breakdowns").replaceChildren(...sections);
}

async function show() {
  const weeks = seriesWeeks();
  say("Loading…");
  await showSeries(weeks);
  const by = $("adoption-by");
  if (by.options.length === 0) {
    for (const [dimension, title] of DIMENSIONS) by.append(new Option(title, dimension));
    by.value = "daemon_version";
  }
  await showAdoption(weeks);
  const select = $("week");
  const chosen = select.value;
  select.replaceChildren(...[...weeks].reverse().map((week) => new Option(week, week)));
  select.value = weeks.includes(chosen) ? chosen : weeks.at(-1);
  await showWeek(select.value);
  $("numbers").hidden = false;
  say("");
}

/** Forgets the token and everything it showed, and offers the sign-in form. */
function signedOut(message, isProblem) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("numbers").hidden = true;
  for (const id of ["breakdowns", "series-chart", "adoption-chart", "adoption-legend"]) $(id).replaceChildren();
  $("series-table").tBodies[0].replaceChildren();
  $("adoption-table").tBodies[0].replaceChildren();
  $("week").replaceChildren();
  $("current-count").textContent = "–";
  $("sign-out").hidden = true;
  $("sign-in-instead").hidden = true;
  $("mode").textContent = "";
  $("sign-in").hidden = false;
  $("token").value = "";
  say(message, isProblem);
  $("token").focus();
}

async function start() {
  // A stored token can always be forgotten, whatever the service answers.
  $("sign-out").hidden = !token;
  let notice = null;
  try {
    await api(`/v1/wau/${isoWeek(new Date())}`);
  } catch (error) {
    if (error.status === 401 && token) {
      // Not (or no longer) the read token: forget it, and show the public view if there is one.
      const refused = error.message;
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("sign-out").hidden = true;
      try {
        await api(`/v1/wau/${isoWeek(new Date())}`);
      } catch {
        return signedOut(refused, true);
      }
      notice = `${refused} Showing the public view.`;
    } else if (error.status === 401) {
      return signedOut(error.message, false);
    } else {
      $("sign-in").hidden = true;
      return say(error.message, true);
    }
  }
  $("sign-in").hidden = true;
  $("sign-out").hidden = !token;
  $("sign-in-instead").hidden = Boolean(token);
  $("mode").textContent = token
    ? "Signed in with the read token."
    : "Public view: anyone can read these numbers. Rare values are shown only as “other”.";
  try {
    await show();
    if (notice) say(notice, true);
  } catch (error) {
    if (error.status === 401) return signedOut(error.message, true);
    say(error.message, true);
  }
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});
$("sign-out").addEventListener("click", () => signedOut("Signed out: the token is forgotten.", false));
$("sign-in-instead").addEventListener("click", () => signedOut("Enter the read token for the operator's view.", false));
$("week").addEventListener("change", () => showWeek($("week").value).catch((error) => say(error.message, true)));
document.querySelector('[data-csv="series"]').addEventListener("click", () => {
  const weeks = seriesWeeks();
  downloadCsv(seriesPath(weeks), `telemetry-${weeks[0]}-${weeks.at(-1)}.csv`);
});
document.querySelector('[data-csv="adoption"]').addEventListener("click", () => {
  const weeks = seriesWeeks();
  const by = $("adoption-by").value;
  downloadCsv(seriesPath(weeks, by), `telemetry-${weeks[0]}-${weeks.at(-1)}-by-${by}.csv`);
});
$("span").addEventListener("change", () => show().catch((error) => say(error.message, true)));
$("adoption-by").addEventListener("change", () => showAdoption(seriesWeeks()).catch((error) => say(error.message, true)));
start();
