// The agreement page: annotator progress, inter-annotator agreement, agreement with the model.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const fmt = (x, digits = 2) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
const pct = (x) => (x === null || x === undefined ? "—" : `${(100 * x).toFixed(1)}%`);

function cell(row, text, numeric = false) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.appendChild(td);
}

function stat(value, name) {
  const div = document.createElement("div");
  div.className = "stat";
  const v = document.createElement("div");
  v.className = "value";
  v.textContent = value;
  const n = document.createElement("div");
  n.className = "name";
  n.textContent = name;
  div.append(v, n);
  return div;
}

async function start() {
  if (token) {
    const q = `?token=${encodeURIComponent(token)}`;
    document.getElementById("back").href = `/${q}`;
    document.getElementById("export-json").href = `/api/export${q}&format=json`;
    document.getElementById("export-csv").href = `/api/export${q}&format=csv`;
  }
  const response = await fetch("/api/agreement", { headers: token ? { "X-Annotator-Token": token } : {} });
  const report = await response.json();
  if (!response.ok) {
    document.getElementById("summary").appendChild(stat("—", report.detail || response.statusText));
    return;
  }
  const labels = Object.values(report.annotators).reduce((s, a) => s + a.labels, 0);
  const summary = document.getElementById("summary");
  summary.append(
    stat(String(labels), "labels"),
    stat(String(report.overlapping_queries), "queries with 2+ annotators"),
    stat(pct(report.percent_agreement), "percent agreement"),
    stat(fmt(report.fleiss_kappa), "Fleiss' κ"),
  );
  const body = document.querySelector("#annotators tbody");
  for (const [name, s] of Object.entries(report.annotators)) {
    const row = document.createElement("tr");
    cell(row, name);
    for (const key of ["labels", "left", "right", "equal", "cannot_tell", "skip", "ranking"]) cell(row, String(s[key] || 0), true);
    const m = report.model && report.model[name];
    cell(row, m ? `${pct(m.agreement)} of ${m.n}` : "—", true);
    body.appendChild(row);
  }
  const reliability = report.reliability;
  const rows = document.querySelector("#reliability tbody");
  for (const a of reliability.annotators) {
    const row = document.createElement("tr");
    cell(row, a.annotator);
    cell(row, String(a.n_labels), true);
    cell(row, String(a.n_evidence), true);
    cell(row, a.flip_rate === null ? "—" : `${pct(a.flip_rate)} ± ${pct(a.flip_std)}`, true);
    cell(row, a.interval === null ? "—" : `${pct(a.interval[0])}–${pct(a.interval[1])}`, true);
    cell(row, a.model_agreement === null ? "—" : pct(a.model_agreement), true);
    rows.appendChild(row);
  }
  document.getElementById("reliability-note").textContent =
    "The chance that a person's left/right answer is the opposite of the true preference (one-coin Dawid–Skene), " +
    (reliability.model ? "from overlap queries and the reward model's probabilities." :
      `from the ${reliability.overlapping_queries} queries answered by two or more people (no reward model yet).`) +
    " `train-reward --annotator-model reliability` trains on the labels with these rates.";
  const pairs = document.querySelector("#pairs tbody");
  for (const p of report.pairs) {
    const row = document.createElement("tr");
    cell(row, p.annotators.join(" · "));
    cell(row, String(p.n), true);
    cell(row, pct(p.percent_agreement), true);
    cell(row, fmt(p.cohen_kappa), true);
    pairs.appendChild(row);
  }
  const r = report.retraining;
  document.getElementById("model-note").textContent = report.model === null
    ? "No reward model yet (start the server with a checkpoint or with retraining every N labels)."
    : `Reward model: ${r.fits} background fit(s)` + (r.validation_accuracy === null ? "" : `, validation accuracy ${pct(r.validation_accuracy)}`) + ".";
}

start();
