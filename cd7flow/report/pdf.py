"""The batch report as PDF, drawn with fpdf2 (pure Python: no system libraries), same content as the HTML."""
from __future__ import annotations

from fpdf import FPDF
from fpdf.fonts import FontFace

STATUS_RGB = {"PASS": (217, 242, 217), "WARN": (255, 241, 194), "FAIL": (248, 201, 196), "ERROR": (248, 201, 196)}


def _t(text) -> str:
    """Core PDF fonts cover Latin-1 only: anything else becomes '?'."""
    return str(text).replace("\u2013", "-").replace("\u2014", "-").encode("latin-1", "replace").decode("latin-1")


class _Report(FPDF):
    def __init__(self, title: str):
        super().__init__(orientation="L", unit="mm", format="A4")
        self.report_title = title
        self.set_auto_page_break(True, margin=12)
        self.set_margins(10, 10, 10)

    def footer(self) -> None:
        self.set_y(-9)
        self.set_font("Helvetica", size=7)
        self.cell(0, 5, _t(f"{self.report_title} - page {self.page_no()}"), align="C")

    def heading(self, text: str, size: int = 13) -> None:
        self.set_font("Helvetica", "B", size)
        self.multi_cell(0, 7, _t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_font("Helvetica", size=8)

    def keep_room(self, mm: float) -> None:
        """A new page unless ``mm`` millimetres are left on this one."""
        if self.get_y() + mm > self.h - 14:
            self.add_page()

    def para(self, text: str) -> None:
        self.set_font("Helvetica", size=8)
        self.multi_cell(0, 4.5, _t(text), new_x="LMARGIN", new_y="NEXT")

    def grid(self, header: list[str] | None, rows: list[list[str]], widths=None, status_col: int | None = None,
             statuses: list[str] | None = None) -> None:
        self.set_font("Helvetica", size=7)
        with self.table(col_widths=widths, first_row_as_headings=header is not None, line_height=4,
                        text_align="LEFT", headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235))) as table:
            if header is not None:
                row = table.row()
                for h in header:
                    row.cell(_t(h))
            for k, cells in enumerate(rows):
                row = table.row()
                for j, c in enumerate(cells):
                    style = None
                    if statuses is not None and (status_col is None or j == status_col):
                        style = FontFace(fill_color=STATUS_RGB.get(statuses[k]))
                    row.cell(_t(c), style=style)
        self.ln(2)

    def images(self, paths, width: float = 125) -> None:
        """Images two per row, ``width`` mm wide each, their height from their own aspect ratio."""
        from PIL import Image

        paths = list(paths)
        for k in range(0, len(paths), 2):
            pair = paths[k:k + 2]
            heights = []
            for p in pair:
                with Image.open(p) as im:
                    heights.append(width * im.height / im.width)
            if self.get_y() + max(heights) > self.h - 14:
                self.add_page()
            y = self.get_y()
            for j, p in enumerate(pair):
                self.image(str(p), x=self.l_margin + j * (width + 5), y=y, w=width)
            self.set_y(y + max(heights) + 2)


def render_pdf(model: dict) -> bytes:
    """The report (see :func:`cd7flow.report.model.report_model`) as PDF bytes."""
    pdf = _Report(model["title"])
    pdf.add_page()
    pdf.heading(model["title"], 14)
    pdf.heading("Run summary", 11)
    pdf.grid(None, [[k, v] for k, v in model["summary"]], widths=(60, 200))
    if model["errors"]:
        pdf.heading("Files and steps with errors", 11)
        pdf.grid(["file", "stage", "reason"], [list(e) for e in model["errors"]], widths=(70, 40, 167),
                 statuses=["FAIL"] * len(model["errors"]), status_col=1)
    pdf.heading("Quality control (failed files first)", 11)
    pdf.grid(model["qc_columns"], [r["cells"] for r in model["qc_rows"]],
             widths=(45, 13, 15, 15, 14, 14, 15, 14, 12, 120), status_col=1, statuses=[r["status"] for r in model["qc_rows"]])
    pdf.add_page()
    pdf.heading("CD7 screening", 11)
    for s in model["screening"]:
        pdf.keep_room(110)  # a heading and its text stay with their plots
        pdf.heading(f"{s['file']} (patient {s['patient']})", 10)
        pdf.para(f"CD7+ % of blasts {s['estimate']} (95% CI {s['interval']}), verdict {s['verdict']}"
                 + (f": {s['reason']}" if s["reason"] else "") + f"; blasts {s['blasts']} ({s['blast_pct']}% of CD45+), "
                 f"intensity {s['intensity']}; QC {s['qc_status']}. {s['rule']}")
        pdf.images(s["plots"])
    if not model["screening"]:
        pdf.para("No screening tubes.")
    pdf.add_page()
    pdf.heading("CAR-T kinetics", 11)
    for p in model["patients"]:
        pdf.keep_room(130)
        pdf.heading(f"Patient {p['patient']}", 10)
        pdf.images(p["plots"], width=150)
        pdf.grid(None, [[k, v] for k, v in p["kinetics"]], widths=(50, 80))
        pdf.grid(p["columns"], p["rows"])
        for e in p["errors"]:
            pdf.para(f"error: {e}")
        for q in p["problems"]:
            pdf.para(q)
    if not model["patients"]:
        pdf.para("No patient timelines (no car / mrd tubes with a study day).")
    pdf.add_page()
    pdf.heading("Provenance", 11)
    pdf.grid(None, [[k, v] for k, v in model["provenance"]], widths=(40, 237))
    pdf.grid(["input", "sha256"], [[f, h or "unreadable"] for f, h in model["inputs"]], widths=(80, 197))
    return bytes(pdf.output())
