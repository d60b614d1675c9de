"""The server's page (``GET /``): paste or upload a document, see its label, the probabilities as bars
and the evidence marked in the text.

One self-contained HTML file (no script or style from elsewhere: the server may have no internet).
The page calls ``POST /predict`` like any client; ``markText`` writes the markup of
``evidence.marked_text`` (the ``evidence_html`` page), with its style.
"""

from __future__ import annotations

import html

from .evidence import EVIDENCE_CSS

PAGE_CSS = ("textarea{width:100%;height:14em;font:inherit}.controls{margin:.5em 0}"
            "#probs .prob{display:flex;align-items:center;gap:.5em;margin:.2em 0}"
            "#probs .name{width:12em;text-align:right;overflow:hidden;text-overflow:ellipsis}"
            "#probs .track{flex:1;background:#eee;height:1em}#probs .bar{background:#1976d2;height:1em}"
            "#error{color:#b71c1c}")

SCRIPT = """
const $ = (id) => document.getElementById(id);
function markText(text, spans) {
  // the markup of evidence.marked_text: spans in text order, each marked with its rank by score
  const ranked = spans.map((s, i) => [i + 1, s]).sort((a, b) => a[1].start - b[1].start);
  const parts = [];
  let cursor = 0;
  for (const [rank, s] of ranked) {
    parts.push(document.createTextNode(text.slice(cursor, s.start)));
    const mark = document.createElement('mark');
    mark.className = 'evidence';
    mark.dataset.rank = String(rank);
    mark.title = 'score ' + Number(s.score).toPrecision(4);
    mark.textContent = text.slice(s.start, s.end);
    parts.push(mark);
    cursor = s.end;
  }
  parts.push(document.createTextNode(text.slice(cursor)));
  return parts;
}
function headline(p) {
  if ('label' in p) return p.label + ' (' + Number(p.score).toFixed(3) + ')';
  if ('labels' in p) return p.labels || '(no label over the threshold)';
  if ('prediction' in p) return String(p.prediction);
  if ('entities' in p) return p.entities.length + ' entities';
  return JSON.stringify(p);
}
function show(text, p) {
  $('label').textContent = headline(p);
  const probs = $('probs');
  probs.replaceChildren();
  for (const [name, value] of Object.entries(p.probs || {})) {
    const row = document.createElement('div'); row.className = 'prob'; row.dataset.label = name;
    const label = document.createElement('span'); label.className = 'name'; label.textContent = name;
    const track = document.createElement('div'); track.className = 'track';
    const bar = document.createElement('div'); bar.className = 'bar';
    bar.style.width = (100 * value).toFixed(1) + '%';
    track.appendChild(bar);
    const number = document.createElement('span'); number.className = 'value'; number.textContent = value.toFixed(3);
    row.append(label, track, number);
    probs.appendChild(row);
  }
  $('document').replaceChildren(...markText(text, p.evidence || []));
  $('result').hidden = false;
}
async function submit(event) {
  event.preventDefault();
  const text = $('text').value;
  $('error').textContent = '';
  $('status').textContent = 'predicting…';
  try {
    const response = await fetch('/predict', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({text: text, evidence: Number($('evidence').value)})});
    const answer = await response.json();
    if (!response.ok) { $('error').textContent = answer.error || response.statusText; $('result').hidden = true; }
    else show(text, answer);
  } catch (err) { $('error').textContent = String(err); }
  $('status').textContent = '';
}
$('form').addEventListener('submit', submit);
$('file').addEventListener('change', async () => {
  const file = $('file').files[0];
  if (file) $('text').value = await file.text();
});
"""


def render_page(task_name: str, labels: list[str], default_evidence: int, evidence_available: bool) -> str:
    """The page for this model: its task and labels in the title line, the evidence field where it works."""
    shown = ", ".join(labels) if len(labels) > 1 else ""  # one output (regression): nothing to list
    evidence_field = (f"<label>evidence spans <input id='evidence' type='number' min='0' max='32' "
                      f"value='{max(default_evidence, 3) if evidence_available else 0}' style='width:4em'></label>"
                      if evidence_available else "<input id='evidence' type='hidden' value='0'>")
    return "".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>bigbird_ft</title><style>", EVIDENCE_CSS, PAGE_CSS,
        "</style></head><body><h1>bigbird_ft</h1>",
        f"<p class='model'>{html.escape(task_name.replace('_', ' '))}"
        f"{': ' + html.escape(shown) if shown else ''}</p>",
        "<form id='form'><textarea id='text' name='text' placeholder='Paste a document'></textarea>",
        "<div class='controls'><input id='file' type='file' accept='.txt,text/plain'> ", evidence_field,
        " <button id='submit' type='submit'>Predict</button> <span id='status'></span></div></form>",
        "<div id='error' role='alert'></div>",
        "<section id='result' hidden><h2 id='label'></h2><div id='probs'></div><p id='document'></p></section>",
        f"<script>{SCRIPT}</script></body></html>",
    ])
