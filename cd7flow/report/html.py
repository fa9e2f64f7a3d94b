"""The batch report as one self-contained HTML page: inline CSS, images as base64 data URIs, no links out."""
from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment

STATUS_COLOURS = {"PASS": "#d9f2d9", "WARN": "#fff1c2", "FAIL": "#f8c9c4", "ERROR": "#f8c9c4"}

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ m.title }}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { border-bottom: 1px solid #999; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
td, th { border: 1px solid #bbb; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; }
{% for s, c in colours.items() %}tr.{{ s }} td.status, span.{{ s }} { background: {{ c }}; font-weight: bold; }
{% endfor %}
img { max-width: 46%; margin: 4px; border: 1px solid #ddd; }
.small { font-size: 0.8em; color: #555; word-break: break-all; }
</style></head><body>
<h1>{{ m.title }}</h1>
<h2>Run summary</h2>
<table>{% for k, v in m.summary %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% if m.errors %}<h2>Files and steps with errors</h2>
<table id="errors"><tr><th>file</th><th>stage</th><th>reason</th></tr>
{% for f, s, r in m.errors %}<tr class="FAIL"><td>{{ f }}</td><td class="status">{{ s }}</td><td>{{ r }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Quality control (failed files first)</h2>
<table id="qc"><tr>{% for c in m.qc_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in m.qc_rows %}<tr class="{{ r.status }}">{% for c in r.cells %}<td{% if loop.index == 2 %} class="status"{% endif %}>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
<h2>CD7 screening</h2>
{% for s in m.screening %}<h3>{{ s.file }} (patient {{ s.patient }})</h3>
<p>CD7+ % of blasts <b>{{ s.estimate }}</b> (95% CI {{ s.interval }}), verdict <b>{{ s.verdict }}</b>{% if s.reason %}: {{ s.reason }}{% endif %};
blasts {{ s.blasts }} ({{ s.blast_pct }}% of CD45+), intensity {{ s.intensity }}; QC <span class="{{ s.qc_status }}">{{ s.qc_status }}</span>. <span class="small">{{ s.rule }}</span></p>
{% for p in s.images %}<img alt="{{ p.name }}" src="data:image/png;base64,{{ p.data }}">{% endfor %}
{% else %}<p>No screening tubes.</p>{% endfor %}
<h2>CAR-T kinetics</h2>
{% for p in m.patients %}<h3>Patient {{ p.patient }}</h3>
{% for i in p.images %}<img alt="{{ i.name }}" src="data:image/png;base64,{{ i.data }}">{% endfor %}
<table>{% for k, v in p.kinetics %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
<table><tr>{% for c in p.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in p.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for e in p.errors %}<p><span class="FAIL">error</span> {{ e }}</p>{% endfor %}
{% for q in p.problems %}<p class="small">{{ q }}</p>{% endfor %}
{% else %}<p>No patient timelines (no car / mrd tubes with a study day).</p>{% endfor %}
<h2>Provenance</h2>
<table>{% for k, v in m.provenance %}<tr><th>{{ k }}</th><td class="small">{{ v }}</td></tr>{% endfor %}</table>
<table><tr><th>input</th><th>sha256</th></tr>{% for f, h in m.inputs %}<tr><td>{{ f }}</td><td class="small">{{ h or "unreadable" }}</td></tr>{% endfor %}</table>
</body></html>
"""


def _images(paths: list[Path]) -> list[dict[str, str]]:
    return [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode("ascii")} for p in paths]


def render_html(model: dict) -> str:
    """The report page (see the module doc) as text."""
    env = Environment(autoescape=True, trim_blocks=False)
    m = dict(model)
    m["screening"] = [{**s, "images": _images(s["plots"])} for s in model["screening"]]
    m["patients"] = [{**p, "images": _images(p["plots"])} for p in model["patients"]]
    return env.from_string(TEMPLATE).render(m=m, colours=STATUS_COLOURS)
