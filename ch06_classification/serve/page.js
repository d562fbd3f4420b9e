// The page of `gpt-spam serve`: classify what is typed, show why, and show the run's card.
// Everything it loads comes from this server (relative URLs); text from the user or the
// run is only ever set as textContent, never parsed as HTML.
"use strict";

const state = { card: null, labels: [], threshold: null, results: [] };
const $ = (id) => document.getElementById(id);

// An element with attributes and children (strings become text nodes).
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

const twoClasses = () => state.labels.length === 2;
const probabilityKey = () => (twoClasses() ? `${state.labels[1]}_probability` : "probability");

// The label at the page's threshold: the server's rule (class 1 when its probability is at
// least the threshold) for two classes; the server's label for more.
function currentLabel(result) {
  if (!twoClasses()) return result.label;
  return result[probabilityKey()] >= state.threshold ? state.labels[1] : state.labels[0];
}

// --- Classifying ------------------------------------------------------------------------

async function classify() {
  const texts = $("messages").value.split(/\r?\n/).filter((line) => line.trim());
  if (texts.length === 0) {
    setStatus("Type or paste a message first.", true);
    return;
  }
  // Explaining costs a classification per token: the server explains so many at a time.
  const explain = texts.length <= state.card.limits.max_explained;
  $("classify").disabled = true;
  setStatus(texts.length === 1 ? "Classifying…" : `Classifying ${texts.length} messages…`);
  try {
    const body = await getJSON("classify", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts, explain }),
    });
    state.results = body.results;
    renderResults();
    setStatus(explain ? "" : `Why is shown for up to ${state.card.limits.max_explained} messages at a time.`);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    $("classify").disabled = false;
  }
}

function renderResults() {
  $("results").replaceChildren(...state.results.map(renderResult));
  $("legend").hidden = !state.results.some((result) => result.explanation);
}

function renderResult(result) {
  const label = currentLabel(result);
  const probability = result[probabilityKey()];
  const class1 = twoClasses() ? label === state.labels[1] : false;
  const fill = el("div", { class: "fill" + (twoClasses() ? " class1" : "") });
  fill.style.width = `${(100 * probability).toFixed(1)}%`;
  const bar = el("div", { class: "bar", title: `${probabilityKey()} ${probability.toFixed(3)}` });
  bar.append(fill);
  if (twoClasses()) {
    const tick = el("div", { class: "tick", title: `threshold ${state.threshold}` });
    tick.style.left = `calc(${(100 * state.threshold).toFixed(1)}% - 1px)`;
    bar.append(tick);
  }
  return el(
    "li",
    { class: "result" },
    el(
      "div",
      { class: "answer" },
      el("span", { class: "label" + (class1 ? " class1" : "") }, label),
      el("span", { class: "probability", title: probabilityKey() },
        `${twoClasses() ? state.labels[1] : "p"} ${probability.toFixed(3)}`),
      bar,
    ),
    ...renderExplanation(result, label),
  );
}

// The message with each token shaded by its weight, and a line naming the strongest.
// The weights are towards the label the server gave; with two classes, the probability of
// the other label is 1 minus it, so towards that one each weight is exactly negated.
function renderExplanation(result, label) {
  const explanation = result.explanation;
  if (!explanation) return [el("p", { class: "message" }, result.text)];
  const sign = label === explanation.label ? 1 : -1;
  const tokens = explanation.tokens;
  const largest = Math.max(1e-9, ...tokens.map((token) => Math.abs(token.weight)));
  const strongest = new Set(explanation.strongest);
  const message = el("p", { class: "message" });
  tokens.forEach((token, i) => {
    const weight = sign * token.weight;
    const span = el("span", {
      class: "token" + (strongest.has(i) ? " strong" : ""),
      title: `${weight >= 0 ? "+" : ""}${weight.toFixed(3)}`,
      "data-weight": String(weight),
    }, token.text);
    const shade = Math.abs(weight) / largest;
    const rgb = weight >= 0 ? "var(--towards)" : "var(--against)";
    span.style.backgroundColor = `rgba(${rgb}, ${(0.6 * shade).toFixed(3)})`;
    message.append(span);
  });
  // What the model did not read (past max_length tokens); offsets count code points.
  const read = tokens.length ? tokens[tokens.length - 1].end : 0;
  const rest = Array.from(result.text).slice(read).join("");
  if (rest) message.append(el("span", { class: "unread", title: "not read by the model" }, rest));
  const why = el("p", { class: "why" }, "Moved most: ");
  explanation.strongest.forEach((i, n) => {
    const weight = sign * tokens[i].weight;
    if (n) why.append(", ");
    why.append(el("code", {}, JSON.stringify(tokens[i].text)), ` ${weight >= 0 ? "+" : ""}${weight.toFixed(3)}`);
  });
  if (explanation.strongest.length === 0) why.append("no token changed the probability");
  return [message, why];
}

// --- The run's card ---------------------------------------------------------------------

const number = (value) => (typeof value === "number" ? value.toLocaleString("en", { maximumFractionDigits: 3 }) : value);

// A table of [name, value, ...] rows; numbers shown to 3 decimals, right-aligned in
// tables with a header (of metrics).
function table(rows, header) {
  const cell = (value) => el("td", { class: header && typeof value === "number" ? "number" : "" },
    value === null || value === undefined ? "–" : String(number(value)));
  const body = rows.map(([name, ...values]) => el("tr", {}, el("th", {}, String(name)), ...values.map(cell)));
  const head = header ? [el("thead", {}, el("tr", {}, ...header.map((name) => el("th", {}, name))))] : [];
  return el("table", { class: header ? "metrics" : "facts" }, ...head, el("tbody", {}, ...body));
}

function show(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "object") return JSON.stringify(value);
  return value;
}

// The columns of a metrics table: those of two classes, and the macro averages of more.
const METRICS = ["accuracy", "precision", "recall", "f1", "roc_auc"];

function metricsTable(sets) {
  const names = Object.keys(sets || {});
  if (names.length === 0) return el("p", { class: "note" }, "no metrics");
  const columns = METRICS.filter((key) => names.some((name) => key in sets[name]));
  return table(names.map((name) => [name, ...columns.map((key) => sets[name][key] ?? null)]), ["set", ...columns]);
}

function renderCard(card) {
  const model = card.model;
  const base = model.base
    ? `${model.base.kind} ${model.base.preset}` + (model.base.seed !== undefined ? ` (seed ${model.base.seed})` : "") +
      `, sha256 ${model.base.sha256.slice(0, 12)}…`
    : `${model.weights} (stored in full)`;
  // A model resized from its preset says so: it is not the preset's size.
  const resized = Object.entries(model.config_overrides).map(([key, value]) => `${key} ${value}`);
  const name = model.preset + (resized.length ? ` (resized: ${resized.join(", ")})` : "");
  $("summary").textContent =
    `${model.preset}${resized.length ? " (resized)" : ""} from ${model.weights} weights, ` +
    `${model.trainable_layers} trained; ` +
    `classes ${card.labels.join(", ")}`;
  const parts = [
    el("h3", {}, "Model"),
    table([
      ["run", card.run],
      ["model", name],
      ["base weights", base],
      ["classes", card.labels.join(", ")],
      ["trained", model.trainable_layers + (model.lora ? ` (LoRA rank ${model.lora.rank})` : "")],
      ["classified token", model.average_embeddings ? "average of all" : model.token_position],
      ["tokens read", model.max_length],
      ["precision", card.precision],
      ["threshold", card.threshold ?? "most probable class"],
    ]),
  ];
  for (const evaluation of card.evaluations) {
    const at = evaluation.threshold === null || evaluation.threshold === undefined ? "" : `, threshold ${evaluation.threshold}`;
    parts.push(el("h3", {}, `Evaluation on ${evaluation.data_dir}${at}`), metricsTable(evaluation.sets));
  }
  if (card.metrics) parts.push(el("h3", {}, "Metrics at the end of training"), metricsTable(card.metrics));
  if (card.plots.length) {
    parts.push(el("h3", {}, "Plots"));
    for (const plot of card.plots) parts.push(el("img", { src: plot.url, alt: plot.name, title: plot.name }));
  }
  if (card.training) {
    const { settings, ...facts } = card.training;
    parts.push(
      el("h3", {}, "Training"),
      table(Object.entries(facts).map(([key, value]) => [key, show(value)])),
      el("details", {}, el("summary", {}, "Training settings"),
        table(Object.entries(settings).map(([key, value]) => [key, show(value)]))),
    );
  }
  for (const note of card.notes) parts.push(el("p", { class: "note" }, note));
  $("card-body").replaceChildren(...parts);
}

// --- Start ------------------------------------------------------------------------------

function setThreshold(value) {
  state.threshold = value;
  $("threshold").value = String(value);
  $("threshold-value").textContent = value.toFixed(2);
}

async function start() {
  $("classify").addEventListener("click", classify);
  $("messages").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classify();
  });
  $("threshold").addEventListener("input", (event) => {
    setThreshold(Number(event.target.value));
    renderResults();
  });
  try {
    state.card = await getJSON("model");
  } catch (error) {
    $("summary").textContent = `The run's card could not be loaded: ${error.message}`;
    return;
  }
  state.labels = state.card.labels;
  if (twoClasses()) {
    setThreshold(state.card.threshold);
    $("threshold-control").hidden = false;
  }
  renderCard(state.card);
  document.body.dataset.ready = "true"; // for whoever waits for the page (a browser test)
}

start();
