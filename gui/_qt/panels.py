"""Side panels observing the model: sample list, population tree, statistics table."""
from __future__ import annotations

import math

from PySide6 import QtCore, QtGui, QtWidgets

from cd7flow.errors import CD7FlowError
from cd7flow.viewer import ViewerModel, format_number, path_str

from .workers import LatestWins

PATH_ROLE = QtCore.Qt.ItemDataRole.UserRole


def _pct(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.2f}"


class SampleList(QtWidgets.QListWidget):
    """One row per opened sample; choosing a row makes it current."""

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
        self._updating = False
        model.events.samples.connect(self.refresh)
        model.events.current.connect(self._sync_current)
        self.currentRowChanged.connect(self._row_changed)

    def refresh(self, *_):
        self._updating = True
        try:
            self.clear()
            for s in self.model.samples:
                item = QtWidgets.QListWidgetItem(f"{s.name}  ({s.n_events:,} events)")
                item.setToolTip(s.path or s.name)
                self.addItem(item)
            self.setCurrentRow(self.model.current_index)
        finally:
            self._updating = False

    def _sync_current(self, *_):
        if self.currentRow() != self.model.current_index:
            self._updating = True
            self.setCurrentRow(self.model.current_index)
            self._updating = False

    def _row_changed(self, row: int):
        if not self._updating and row >= 0 and row != self.model.current_index:
            self.model.set_current(row)


class PopulationTree(QtWidgets.QTreeWidget):
    """The gating hierarchy with live counts; selecting a population shows only its events.

    Names are elided in the middle when the pane is narrow (the full path is the
    tooltip); double-click or F2 renames. Automated gates carry "(auto)", adjusted
    ones "(auto, manually adjusted)"; a population the sample cannot evaluate shows
    a dash with the reason as tooltip.
    """

    COLUMNS = ("Population", "Events", "% parent", "% total")
    sigError = QtCore.Signal(str)

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
        self._updating = False
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(list(self.COLUMNS))
        self.header().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.header().setStretchLastSection(False)
        self.header().setMinimumSectionSize(40)
        self.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.setIndentation(14)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.DoubleClicked
                             | QtWidgets.QAbstractItemView.EditTrigger.EditKeyPressed)
        self.remove_requested = self.remove_selected  # the window replaces it with a confirming one
        self.itemChanged.connect(self._item_renamed)
        self.items: dict[tuple[str, ...], QtWidgets.QTreeWidgetItem] = {}
        for signal in (model.events.current, model.events.gates):
            signal.connect(self.refresh)
        model.events.selection.connect(self._sync_selection)
        self.itemSelectionChanged.connect(self._selection_changed)

    def refresh(self, *_):
        self._updating = True
        try:
            self.clear()
            self.items.clear()
            try:
                rows = self.model.populations()
            except CD7FlowError as exc:
                self.sigError.emit(str(exc))
                rows = []
            for row in rows:
                parent = self.items.get(row.path[:-1]) if row.path else None
                count = "\u2014" if row.count is None else f"{row.count:,}"
                cells = [row.name, count, _pct(row.percent_of_parent), _pct(row.percent_of_total)]
                item = QtWidgets.QTreeWidgetItem(cells)
                item.setData(0, PATH_ROLE, row.path)
                for col in (1, 2, 3):
                    item.setTextAlignment(col, QtCore.Qt.AlignmentFlag.AlignRight)
                tip = path_str(row.path) if row.path else "All events"
                if row.gate is not None:
                    tip += f"\n{type(row.gate).__name__}: {', '.join(map(str, row.gate.dimensions))}"
                    item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsEditable)
                if row.automated:
                    tip += "\nautomated gate" + (", manually adjusted" if row.adjusted else "")
                    item.setForeground(0, QtGui.QBrush(QtGui.QColor(160, 80, 0) if row.adjusted
                                                       else QtGui.QColor(0, 90, 160)))
                if row.blank_reason:
                    tip += f"\ncannot be evaluated: {row.blank_reason}"
                    item.setToolTip(1, row.blank_reason)
                item.setToolTip(0, tip)
                if parent is None:
                    self.addTopLevelItem(item)
                else:
                    parent.addChild(item)
                self.items[row.path] = item
            self.expandAll()
            for col in (1, 2, 3):
                self.resizeColumnToContents(col)
            self._select_item(self.model.selected)
        finally:
            self._updating = False

    def count_text(self, path: tuple[str, ...]) -> str:
        """The count shown for a population (digits only, no separators)."""
        return self.items[tuple(path)].text(1).replace(",", "")

    def _select_item(self, path) -> None:
        item = self.items.get(tuple(path))
        if item is not None:
            self.setCurrentItem(item)

    def _sync_selection(self, *_):
        self._updating = True
        try:
            self._select_item(self.model.selected)
        finally:
            self._updating = False

    def _selection_changed(self):
        if self._updating:
            return
        items = self.selectedItems()
        if items:
            path = tuple(items[0].data(0, PATH_ROLE) or ())
            if path != self.model.selected:
                self.model.select(path)

    def keyPressEvent(self, ev: QtGui.QKeyEvent):
        if ev.key() in (QtCore.Qt.Key.Key_Delete, QtCore.Qt.Key.Key_Backspace) and self.state() != self.State.EditingState:
            self.remove_requested()
        else:
            super().keyPressEvent(ev)

    def _item_renamed(self, item: QtWidgets.QTreeWidgetItem, column: int) -> None:
        if self._updating or column != 0:
            return
        path = tuple(item.data(0, PATH_ROLE) or ())
        if path and item.text(0) != path[-1]:
            try:
                self.model.rename_gate(path, item.text(0))
            except CD7FlowError as exc:
                self.sigError.emit(str(exc))
                self.refresh()

    def start_naming(self, path) -> None:
        """Open the name of a gate just drawn for typing (Enter keeps it, Esc keeps the default)."""
        item = self.items.get(tuple(path))
        if item is not None:
            self.scrollToItem(item)
            self.editItem(item, 0)

    def show_counts(self, counts: dict) -> None:
        """Live counts while a gate is dragged ({path: (count | None, % parent)}), before it is committed."""
        self._updating = True
        try:
            for path, (count, pct) in counts.items():
                item = self.items.get(tuple(path))
                if item is not None:
                    item.setText(1, "\u2014" if count is None else f"{count:,}")
                    item.setText(2, _pct(pct))
        finally:
            self._updating = False

    def remove_selected(self):
        if self.model.selected:
            try:
                self.model.remove_population(self.model.selected)
            except CD7FlowError as exc:
                self.sigError.emit(str(exc))


class StatsTable(QtWidgets.QTableWidget):
    """Per-channel statistics of the selected population (from ViewerModel.statistics)."""

    COLUMNS = ("channel", "marker", "median", "mean", "sd", "geometric_mean", "geometric_mean_n", "cv", "robust_cv")
    HEADERS = ("Channel", "Marker", "Median", "Mean", "SD", "Geo. mean (>0)", "n > 0", "CV %", "rCV %")

    def __init__(self, model: ViewerModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.setColumnCount(len(self.COLUMNS))
        self.setHorizontalHeaderLabels(list(self.HEADERS))
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.caption = QtWidgets.QLabel()
        self.horizontalHeaderItem(5).setToolTip("Geometric mean of the events > 0 (undefined at or below 0); "
                                                "'n > 0' says how many events that was")
        # axes and transforms never change statistics (channel units): the view signal is not observed
        for signal in (model.events.sample_changed, model.events.gates_changed, model.events.selection):
            signal.connect(self.refresh)
        self._shown_key = None
        self._previewing = False
        self.worker = LatestWins(self)
        self.worker.sigPart.connect(self._computed)
        self.worker.sigError.connect(lambda _key, text: self.caption.setText(f"statistics unavailable: {text}"))
        model.events.view.connect(self._view_changed)

    def _view_changed(self, *_):
        if self.model.sample is not None and self._shown_key != (id(self.model.sample), self.model.compensated):
            self.refresh()  # compensation toggled: compensated statistics

    def refresh(self, *_):
        """Show the selected population's statistics: at once when cached, else computed on a
        worker thread (14 channels of a million events take about a second) while the
        window stays usable; a newer request supersedes an older one."""
        m = self.model
        self._previewing = False
        if m.sample is None:
            self._shown_key = None
            self.show_rows([])
            return
        self._shown_key = (id(m.sample), m.compensated)
        try:
            rows = m.cached_statistics()
            if rows is None:
                key = m.statistics_key()
                result = m.result()  # counts on the UI thread (cheap, cached); statistics off it
                columns = m.stat_columns()
                if key[1] and result.is_blank(key[1]):
                    rows = []
        except CD7FlowError as exc:
            self.caption.setText(f"statistics unavailable: {exc}")
            self.show_rows([])
            return
        if rows is not None:
            self.show_rows(rows)
            return
        self.caption.setText(f"<b>{path_str(key[1])}</b>: computing statistics\u2026")
        if self.worker.running_tag != key:
            self.worker.submit(key, lambda: iter([m.statistics_for(result, key[1], key[2], columns())]))

    def _computed(self, key, _index, rows) -> None:
        self.model.store_statistics(key, rows)
        m = self.model
        if m.sample is not None and m.statistics_key() == key and not self._previewing:
            self.show_rows(rows)

    def show_preview(self, rows) -> None:
        """A dragged gate's live statistics; they stay until the drag is committed or the view changes
        (an older computation of the undragged gate finishing meanwhile does not replace them)."""
        self._previewing = True
        self.show_rows(rows)

    def show_rows(self, rows) -> None:
        """Fill the table (also called with a dragged gate's live statistics)."""
        m = self.model
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(self.COLUMNS):
                value = row[key]
                item = QtWidgets.QTableWidgetItem(format_number(value))
                if not isinstance(value, str):
                    item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
                self.setItem(r, c, item)
        if rows:
            first = rows[0]
            self.caption.setText(
                f"<b>{first['population']}</b>: {format_number(first['count'])} events, "
                f"{_pct(first['percent_of_parent'])}% of parent, {_pct(first['percent_of_total'])}% of total"
                + (" (compensated)" if m.compensated else "")
            )
        elif m.sample is None:
            self.caption.setText("")
        self.resizeColumnsToContents()
