// The search page: plain JavaScript, no build step, no third-party code. It talks to the same API as any client:
// POST /search, POST /classify, GET /subjects, GET /papers/{id}, with the API key (if any) as a Bearer token.
"use strict";

const KEY_STORAGE = "arxiv-embed-api-key";
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.errorType = body && body.error_type;
    this.retryAfter = retryAfter;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, { error: e.message, error_type: "network" });
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers.get("Retry-After"));
  return data;
}

// What a reader should see for an error in the API's shape {"error": ..., "error_type": ...}.
function describeError(err) {
  if (typeof err === "string") return err;
  if (!(err instanceof ApiError)) return `Something went wrong: ${err.message}`;
  const reason = err.message;
  switch (err.status) {
    case 0:
      return `The server could not be reached: ${reason}.`;
    case 401:
      return `This server needs an API key: enter it under "API key" (${reason}).`;
    case 404:
      return `Not found: ${reason}.`;
    case 413:
      return `The query is too large: ${reason}. Shorten it and search again.`;
    case 422:
      return `The request was not accepted: ${reason}.`;
    case 429: {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again in a moment.";
      return `The server is busy (${reason}).${wait}`;
    }
    case 503:
      return `Not available right now: ${reason}.`;
    default:
      return `The server answered ${err.status}: ${reason}.`;
  }
}

function showError(err) {
  const box = $("error");
  box.textContent = describeError(err);
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) $("key-box").open = true;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function selected(select) {
  return Array.from(select.selectedOptions, (option) => option.value);
}

function filters() {
  const result = { match: matchMode() };
  const include = selected($("include-subjects"));
  const exclude = selected($("exclude-subjects"));
  if (include.length) result.subjects = include;
  if (exclude.length) result.exclude_subjects = exclude;
  if ($("date-from").value) result.date_from = $("date-from").value;
  if ($("date-to").value) result.date_to = $("date-to").value;
  return result;
}

function updateFilterSummary() {
  const include = selected($("include-subjects"));
  const exclude = selected($("exclude-subjects"));
  const parts = [];
  if (include.length) parts.push(`only ${include.join(", ")}`);
  if (exclude.length) parts.push(`not ${exclude.join(", ")}`);
  $("filter-summary").textContent = parts.length ? `(${parts.join("; ")})` : "";
}

// GET /subjects: {"papers": n, "subjects": [{"subject", "primary", "any"}]}, sorted by name.
let subjects = [];

function matchMode() {
  return document.querySelector('input[name="match"]:checked').value;
}

// The options of both subject lists, each with its count of papers under the chosen match mode.
function renderSubjectOptions() {
  const mode = matchMode();
  for (const select of [$("include-subjects"), $("exclude-subjects")]) {
    const keep = new Set(selected(select));
    select.replaceChildren(
      ...subjects.map((item) => {
        const option = new Option(`${item.subject} (${item[mode]})`, item.subject);
        option.selected = keep.has(item.subject);
        return option;
      }),
    );
  }
}

async function loadSubjects() {
  let data;
  try {
    data = await api("GET", "/subjects");
  } catch (err) {
    showError(err);
    return;
  }
  subjects = data.subjects;
  renderSubjectOptions();
  $("filter-hint").textContent = `${data.papers} papers in the index.`;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function authorsText(authors) {
  if (!authors || !authors.length) return "";
  return authors.length > 8 ? `${authors.slice(0, 8).join(", ")} et al.` : authors.join(", ");
}

function subjectChips(paper) {
  const subjects = paper.subjects && paper.subjects.length ? paper.subjects : [paper.subject];
  return el(
    "ul",
    { className: "chips", "aria-label": "Subjects" },
    ...subjects.map((subject) =>
      el("li", { className: subject === paper.subject ? "chip primary" : "chip", title: subject === paper.subject ? "primary subject" : "category" }, subject),
    ),
  );
}

function renderResult(paper) {
  const abs = paper.url;
  const title = el("h3", { className: "title" }, el("a", { href: abs, rel: "noopener" }, paper.title));
  const meta = el("p", { className: "meta" });
  const authors = authorsText(paper.authors);
  if (authors) meta.append(el("span", { className: "authors" }, authors));
  const date = paper.published || paper.update_date;
  if (date) meta.append(el("time", { datetime: date, className: "date" }, date));
  meta.append(el("span", { className: "arxiv-id" }, `arXiv:${paper.id}`));
  meta.append(el("span", { className: "score", title: "cosine similarity to the query" }, `score ${Number(paper.score).toFixed(3)}`));
  const links = el("div", { className: "links" });
  if (paper.pdf_url) links.append(el("a", { href: paper.pdf_url, className: "pdf", rel: "noopener" }, "PDF"));
  const similar = el("button", { type: "button", className: "similar", "data-id": paper.id }, "Similar papers");
  similar.addEventListener("click", () => searchByPaper(paper));
  links.append(similar);
  const item = el("li", { className: "result", "data-id": paper.id }, title, meta, subjectChips(paper));
  if (paper.abstract) {
    // Closed: "Abstract" and its first lines; open: the whole abstract.
    const summary = el("summary", {}, el("span", { className: "label" }, "Abstract"), " ");
    if (paper.snippet) summary.append(el("span", { className: "snippet" }, paper.snippet));
    item.append(el("details", { className: "abstract" }, summary, el("p", {}, paper.abstract)));
  }
  item.append(links);
  return item;
}

function renderResults(results) {
  $("results").replaceChildren(...results.map(renderResult));
}

function percent(probability) {
  return probability < 0.005 ? "<1%" : `${(probability * 100).toFixed(0)}%`;
}

function renderPredicted(top) {
  const list = $("predicted-list");
  list.replaceChildren(
    ...top.map(({ subject, probability }) => {
      const button = el("button", { type: "button", className: "chip", title: `search only in ${subject}` }, `${subject} ${percent(probability)}`);
      button.addEventListener("click", () => {
        const include = $("include-subjects");
        if (!Array.from(include.options).some((option) => option.value === subject)) {
          include.append(new Option(`${subject} (0)`, subject)); // a subject of the classifier, none indexed
        }
        for (const option of include.options) option.selected = option.value === subject;
        updateFilterSummary();
        $("search-form").requestSubmit();
      });
      return el("li", {}, button);
    }),
  );
  $("predicted").hidden = top.length === 0;
}

let lastText = "";
let generation = 0; // a newer search makes the answers of an older one stale

async function runSearch(body, describe) {
  const mine = ++generation;
  clearError();
  setStatus("Searching…");
  $("search-button").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  try {
    const data = await api("POST", "/search", body);
    if (mine !== generation) return;
    renderResults(data.results);
    const n = data.results.length;
    const of = `of ${data.matched} matching ${data.matched === 1 ? "paper" : "papers"}`;
    // An approximate index (IVF, HNSW) may return fewer than k papers under a narrow filter.
    const approximate = data.exact ? "" : " (approximate index)";
    setStatus(n ? `${n} ${of}, ${describe}${approximate}.` : "No paper passes the filter.");
  } catch (err) {
    if (mine !== generation) return;
    renderResults([]);
    setStatus("");
    showError(err);
  } finally {
    if (mine === generation) {
      $("search-button").disabled = false;
      $("results").setAttribute("aria-busy", "false");
      $("results").dataset.answers = Number($("results").dataset.answers || 0) + 1; // searches answered
    }
  }
}

async function classify(text) {
  const mine = generation;
  try {
    const data = await api("POST", "/classify", { text, top_n: 3 });
    if (mine === generation) renderPredicted(data.top);
  } catch (err) {
    // Search reports the errors of the query itself; a missing classifier only hides the prediction.
    if (mine === generation) renderPredicted([]);
  }
}

function searchByText(event, push = true) {
  if (event) event.preventDefault();
  const text = $("query").value;
  if (!text.trim()) {
    setStatus("");
    showError("Type a title or an abstract first.");
    $("query").focus();
    return;
  }
  lastText = text;
  $("similar-to").hidden = true;
  const query = { text, k: Number($("k").value) || 10, filters: filters() };
  if (push) remember(query);
  const search = runSearch(query, "closest to the query");
  classify(text);
  return search;
}

function searchByPaper(paper, push = true) {
  $("similar-title").textContent = paper.title;
  $("similar-title").href = paper.url;
  $("similar-to").hidden = false;
  $("predicted").hidden = true;
  const query = { paper_id: paper.id, k: Number($("k").value) || 10, filters: filters() };
  if (push) remember(query);
  // The clicked button goes with the old results: move the focus to the first new result.
  return runSearch(query, `similar to arXiv:${paper.id}`).then(() => {
    const first = document.querySelector("#results .title a");
    (first || $("similar-title")).focus();
  });
}

// The search in the address bar (?q=text or ?like=paper id, with k and the filters): a search can be bookmarked
// or shared, and the browser's Back button returns to the one before.
function urlOf(query) {
  const params = new URLSearchParams();
  if (query.paper_id !== undefined) params.set("like", query.paper_id);
  else params.set("q", query.text);
  params.set("k", query.k);
  const f = query.filters;
  if (f.subjects) params.set("subjects", f.subjects.join(","));
  if (f.exclude_subjects) params.set("exclude", f.exclude_subjects.join(","));
  if (f.match !== "primary") params.set("match", f.match);
  if (f.date_from) params.set("from", f.date_from);
  if (f.date_to) params.set("to", f.date_to);
  return `?${params}`;
}

function remember(query) {
  const url = urlOf(query);
  if (url !== location.search) history.pushState(null, "", url);
}

function setSelected(select, values) {
  const wanted = new Set(values);
  for (const value of wanted) {
    if (!Array.from(select.options).some((option) => option.value === value)) select.append(new Option(value, value));
  }
  for (const option of select.options) option.selected = wanted.has(option.value);
}

// The form from the address bar, then its search (on load, and on Back and Forward: a popstate event).
async function restore(event) {
  const params = new URLSearchParams(location.search);
  const list = (name) => (params.get(name) || "").split(",").filter(Boolean);
  $("k").value = params.get("k") || 10;
  const match = params.get("match") === "any" ? "any" : "primary";
  document.querySelector(`input[name="match"][value="${match}"]`).checked = true;
  renderSubjectOptions();
  setSelected($("include-subjects"), list("subjects"));
  setSelected($("exclude-subjects"), list("exclude"));
  updateFilterSummary();
  $("date-from").value = params.get("from") || "";
  $("date-to").value = params.get("to") || "";
  if (params.has("like")) {
    // GET /papers/{id}: an old-style id keeps its slash (hep-th/9901001).
    const path = params.get("like").split("/").map(encodeURIComponent).join("/");
    try {
      await searchByPaper(await api("GET", `/papers/${path}`), false);
    } catch (err) {
      showError(err);
    }
  } else if (params.has("q")) {
    $("query").value = params.get("q");
    await searchByText(null, false);
  } else if (event) {
    // Back to the page before any search.
    generation++;
    $("query").value = "";
    renderResults([]);
    setStatus("");
    clearError();
    $("predicted").hidden = true;
    $("similar-to").hidden = true;
  }
}

function saveKey() {
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  clearError();
  setStatus(key ? "API key set for this tab." : "API key cleared.");
  loadSubjects();
}

function start() {
  $("api-key").value = apiKey();
  $("search-form").addEventListener("submit", (event) => searchByText(event));
  $("query").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("search-form").requestSubmit();
    }
  });
  $("save-key").addEventListener("click", saveKey);
  $("api-key").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      saveKey();
    }
  });
  for (const radio of document.querySelectorAll('input[name="match"]')) {
    radio.addEventListener("change", renderSubjectOptions);
  }
  $("include-subjects").addEventListener("change", updateFilterSummary);
  $("exclude-subjects").addEventListener("change", updateFilterSummary);
  $("clear-subjects").addEventListener("click", () => {
    for (const select of [$("include-subjects"), $("exclude-subjects")]) {
      for (const option of select.options) option.selected = false;
    }
    updateFilterSummary();
  });
  $("back-to-text").addEventListener("click", () => {
    $("query").value = lastText;
    $("search-form").requestSubmit();
  });
  window.addEventListener("popstate", restore);
  loadSubjects().then(() => restore(null));
}

document.addEventListener("DOMContentLoaded", start);
