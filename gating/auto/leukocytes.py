"""CD45 vs SSC populations (blasts, lymphocytes, monocytes, granulocytes) and lineage refinement.

Populations are found relative to each other, never at fixed positions: a Gaussian
mixture is fitted on (CD45, SSC), the lymphocyte component is the one that is most
CD45-bright and SSC-low, and every other component is labelled by how far it sits
from the lymphocytes in units of their pooled spread (a separation index, so the
rules hold on any scale or transform).
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.stats import chi2
from sklearn.mixture import GaussianMixture
from sklearn.utils._param_validation import Interval, StrOptions

from ..errors import GatingError
from ..gates import BooleanGate, EllipsoidGate, GateReference, PolygonGate, RectangleGate
from ._base import AutoGate, ColumnSource, ParameterError, convex_hull, mahalanobis_sq, renamed, subsample
from .thresholds import DensityThreshold

POPULATIONS = ("blasts", "lymphocytes", "monocytes", "granulocytes", "cd45_negative")


class CD45SSCPopulations(AutoGate):
    """Leukocyte populations on CD45 (transformed) vs SSC (transformed or linear).

    Component labelling, with dc / ds the separation from the lymphocyte component
    on CD45 / SSC ((mean_k - mean_L) / sqrt(var_k + var_L)):

    * lymphocytes: the component maximising CD45 - SSC (robustly scaled), plus any
      component with ``dc >= -dim_gap`` and ``ds < mono_ssc_gap``;
    * monocytes: ``dc >= -dim_gap`` and ``ds >= mono_ssc_gap`` (CD45-bright, SSC above lymphocytes);
    * granulocytes: ``dc < -dim_gap`` and ``ds >= gran_ssc_gap``, except that such a cluster
      lying ``mono_ssc_gap`` below the highest-SSC one on SSC and ``dim_gap`` above it on
      CD45 is monocytes (monocytes are often slightly CD45-dimmer than lymphocytes);
    * CD45-dim SSC-low (``ds < gran_ssc_gap`` and ``dc < -dim_gap``): grouped from the
      brightest down while neighbours are within ``negative_merge_gap`` on CD45; the
      brightest group is the blasts, any group separated below it is cd45_negative
      (erythroid cells, debris), never called blasts.
    * a CD45-dim cluster is blasts (or cd45_negative) only when it is a separate mode from
      the lymphocytes: along the segment joining the two clusters' means, the density of
      their components must dip below ``blast_valley_ratio`` x the lower end density. A
      dim cluster with no such valley is the lymphocytes' dim tail (a mixture spends
      components on a skewed population, and complete linkage may leave one unmerged)
      and is named lymphocytes, unless it is denser at its centre than the lymphocytes
      at theirs (then they are its shoulder); ``blast_valley_`` holds each dim cluster's ratio (at most 1).
      ``blast_valley_ratio`` 0 names every dim cluster a tail; above 1 the test is off.

    Components that form one mode are merged first (see ``_merge_components``), and dc /
    ds are computed between the merged clusters. Components below ``min_weight`` are
    left unlabelled, and so are background components (scattered debris, doublets and
    outliers): CD45 SD above ``background_sd_ratio`` x the median component's, or both SDs
    above ``background_sd_ratio / 1.6`` x the median's (2.5x by default).
    Each population's gate is the
    convex hull of its events that lie within the ``coverage`` Mahalanobis ellipse of
    their own component.

    ``population`` picks what ``predict`` and ``gate_`` return; ``population_gates_`` holds
    every population found (polygons named by population) and ``predict_populations``
    gives all masks. When ``population`` is not found, ``fit`` raises GatingError, or with
    ``require_population=False`` leaves ``gate_`` None and ``predict`` all False (an answer
    of "none", e.g. no blasts). In a gating tree (:meth:`tree_gates`) every population found
    is its own node and the gate's own population is the union of all but cd45_negative.
    """

    n_dims = 2
    gate_id_default = "blasts"
    min_fit_events = 100
    _parameter_constraints = {
        **AutoGate._parameter_constraints,
        "population": [StrOptions(set(POPULATIONS))],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "coverage": [Interval(Real, 0, 1, closed="neither")],
        "dim_gap": [Interval(Real, 0, None, closed="left")],
        "mono_ssc_gap": [Interval(Real, 0, None, closed="left")],
        "gran_ssc_gap": [Interval(Real, 0, None, closed="left")],
        "negative_merge_gap": [Interval(Real, 0, None, closed="left")],
        "merge_ratio": [Interval(Real, 0, 1, closed="both")],
        "blast_valley_ratio": [Interval(Real, 0, None, closed="left")],
        "background_sd_ratio": [Interval(Real, 0, None, closed="neither")],
        "require_population": ["boolean"],
        "min_weight": [Interval(Real, 0, 1, closed="left")],
        "max_fit_events": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, dimensions=("CD45", "SSC-A"), population: str = "blasts", n_components: int = 8,
                 coverage: float = 0.95, dim_gap: float = 1.0, mono_ssc_gap: float = 1.5,
                 gran_ssc_gap: float = 3.0, negative_merge_gap: float = 3.0, merge_ratio: float = 0.8,
                 blast_valley_ratio: float = 0.8,
                 background_sd_ratio: float = 4.0, require_population: bool = True,
                 min_weight: float = 0.005,
                 max_fit_events: int | None = 40_000, random_state: int = 0, gate_id: str | None = None):
        self.dimensions = dimensions
        self.gate_id = gate_id
        self.population = population
        self.n_components = n_components
        self.coverage = coverage
        self.dim_gap = dim_gap
        self.mono_ssc_gap = mono_ssc_gap
        self.gran_ssc_gap = gran_ssc_gap
        self.negative_merge_gap = negative_merge_gap
        self.merge_ratio = merge_ratio
        self.blast_valley_ratio = blast_valley_ratio
        self.background_sd_ratio = background_sd_ratio
        self.require_population = require_population
        self.min_weight = min_weight
        self.max_fit_events = max_fit_events
        self.random_state = random_state

    def _fit(self, X: np.ndarray) -> None:
        X = subsample(X, self.max_fit_events, self.random_state)
        center = np.median(X, axis=0)
        scale = np.subtract(*np.percentile(X, [95, 5], axis=0))
        scale[scale <= 0] = 1.0
        Z = (X - center) / scale
        gmm = GaussianMixture(self.n_components, covariance_type="full", random_state=self.random_state,
                              reg_covar=1e-5, max_iter=200).fit(Z)
        self.mixture_ = gmm
        self.labels_ = self._label_components(gmm)
        comp = gmm.predict(Z)
        limit = chi2.ppf(self.coverage, 2)
        core = np.zeros(Z.shape[0], dtype=bool)
        for k in range(self.n_components):
            members = comp == k
            if members.sum() >= 3:
                core[members] = mahalanobis_sq(Z[members], gmm.means_[k], gmm.covariances_[k]) <= limit
        self.vertices_ = {}
        for pop in POPULATIONS:
            ks = [k for k, name in self.labels_.items() if name == pop]
            sel = core & np.isin(comp, ks)
            if sel.sum() >= 3:
                try:
                    self.vertices_[pop] = convex_hull(X[sel])
                except GatingError:
                    continue
        # Contamination: of the fitted events inside a population's polygon, the fraction the
        # mixture gives to each other population's components. Wide clusters (a linear SSC,
        # low-SSC myeloid cells) put granulocytes inside the blast polygon; a later gate can
        # then refine against them.
        pop_of = np.array([self.labels_.get(k, "") for k in range(self.n_components)])[comp]
        src = ColumnSource(X, self.dimensions_)
        self.contamination_ = {}
        for pop, v in self.vertices_.items():
            inside = np.asarray(PolygonGate(pop, self.dimensions_, v).contains(src), dtype=bool)
            n_in = max(int(inside.sum()), 1)
            self.contamination_[pop] = {other: float(np.count_nonzero(pop_of[inside] == other)) / n_in
                                        for other in POPULATIONS if other != pop}
        if self.population not in self.vertices_ and self.require_population:
            found = ", ".join(sorted(self.vertices_)) or "none"
            raise GatingError(
                f"CD45SSCPopulations ({self._id()}): no {self.population} population found on "
                f"{[str(d) for d in self.dimensions_]} (found: {found})"
            )

    def _merge_components(self, gmm: GaussianMixture, usable: list[int]) -> list[list[int]]:
        """Group components that together form one mode (no density dip between their means).

        A mixture often spends several components on one skewed population; splitting it
        would create spurious separations. Two components merge when the density of the
        pair along the segment joining their means never falls below ``merge_ratio`` x the
        lower of the two end densities (a unimodality check in the spirit of Hennig 2010).
        """
        one_mode = {}
        for i, a in enumerate(usable):
            for b in usable[i + 1:]:
                ratio = _valley_ratio(gmm, (a, b), gmm.means_[a], gmm.means_[b])
                one_mode[a, b] = one_mode[b, a] = bool(ratio >= self.merge_ratio)
        # Complete linkage: two groups join only when every pair across them forms one mode.
        # Chaining (single linkage) lets a broad continuum of wide populations - blasts
        # running into low-SSC granulocytes running into monocytes - collapse into one cluster.
        groups = [[k] for k in usable]
        pairs = sorted(((a, b) for (a, b), ok in one_mode.items() if ok and a < b),
                       key=lambda ab: float(np.sum((gmm.means_[ab[0]] - gmm.means_[ab[1]]) ** 2)))
        for a, b in pairs:
            ga = next(g for g in groups if a in g)
            gb = next(g for g in groups if b in g)
            if ga is gb or not all(one_mode[x, y] for x in ga for y in gb):
                continue
            ga.extend(gb)
            groups.remove(gb)
        return groups

    def _label_components(self, gmm: GaussianMixture) -> dict[int, str]:
        usable = [int(k) for k in np.flatnonzero(gmm.weights_ >= self.min_weight)]
        # A mixture fitted on real events spends a component on scattered background
        # (debris, outliers) spanning several populations; its hull would swallow them.
        sd = np.sqrt(np.stack([np.diag(c) for c in gmm.covariances_]))
        ratio = sd / np.median(sd[usable], axis=0)
        # Wide on CD45 (populations are compact there on a transformed scale), or wide on
        # both axes; granulocytes alone are wide on a linear SSC, so SSC alone is no sign.
        wide = (ratio[:, 0] > self.background_sd_ratio) | np.all(ratio > self.background_sd_ratio / 1.6, axis=1)
        self.background_components_ = [k for k in usable if wide[k]]
        usable = [k for k in usable if not wide[k]] or usable
        clusters = self._merge_components(gmm, usable)
        # Moment-matched mean and per-axis variance of each merged cluster.
        means, var = [], []
        for ks in clusters:
            w = gmm.weights_[ks] / gmm.weights_[ks].sum()
            m = (w[:, None] * gmm.means_[ks]).sum(axis=0)
            v = sum(wk * (np.diag(gmm.covariances_[k]) + (gmm.means_[k] - m) ** 2) for wk, k in zip(w, ks))
            means.append(m)
            var.append(v)
        means, var = np.array(means), np.array(var)
        n = len(clusters)
        lymph = max(range(n), key=lambda c: means[c, 0] - means[c, 1])
        names = {lymph: "lymphocytes"}
        sep = {c: (means[c] - means[lymph]) / np.sqrt(var[c] + var[lymph]) for c in range(n)}
        dim = []
        for c in range(n):
            if c == lymph:
                continue
            dc, ds = sep[c]
            if dc >= -self.dim_gap:
                names[c] = "monocytes" if ds >= self.mono_ssc_gap else "lymphocytes"
            elif ds >= self.gran_ssc_gap:
                names[c] = "granulocytes"
            else:
                dim.append(c)
        # Blasts are SSC-low (like lymphocytes). A linear SSC with a wide granulocyte spread
        # keeps the granulocytes' separation from the lymphocytes below gran_ssc_gap, so a
        # CD45-dim cluster clearly above the lymphocytes AND clearly above the lowest-SSC dim
        # cluster on SSC is myeloid (granulocytes), never the top of the blast group.
        if len(dim) > 1:
            low = min(dim, key=lambda c: means[c, 1])
            for c in list(dim):
                if c == low:
                    continue
                ds_low = (means[c, 1] - means[low, 1]) / np.sqrt(var[c, 1] + var[low, 1])
                if sep[c][1] >= self.mono_ssc_gap and ds_low >= self.mono_ssc_gap:
                    names[c] = "granulocytes"
                    dim.remove(c)
        # Monocytes are often a little dimmer than lymphocytes, so the rules above can call
        # them granulocytes; granulocytes have the highest SSC, and a "granulocyte" cluster
        # that is clearly below the top-SSC one on SSC and brighter on CD45 is monocytes.
        gran = [c for c, name in names.items() if name == "granulocytes"]
        if len(gran) > 1:
            top = max(gran, key=lambda c: means[c, 1])
            for c in gran:
                if c == top:
                    continue
                dc, ds = (means[c] - means[top]) / np.sqrt(var[c] + var[top])
                if ds <= -self.mono_ssc_gap and dc >= self.dim_gap:
                    names[c] = "monocytes"
        # Monocytes can also sit more than dim_gap below the lymphocytes on CD45 with an SSC
        # between lymphocytes and granulocytes (tight clusters make every separation large).
        # Blasts are CD45-dim, dimmer than monocytes: a cluster with SSC clearly above the
        # lymphocytes and clearly below the granulocytes that is at least as CD45-bright as the
        # granulocytes is monocytes (monocytes are CD45-brighter than granulocytes), not the
        # top of the dim (blast) group.
        gran = [c for c, name in names.items() if name == "granulocytes"]
        if gran:
            top = max(gran, key=lambda c: means[c, 1])
            for c in list(dim):
                ds_lymph = sep[c][1]
                dc_gran, ds_gran = (means[c] - means[top]) / np.sqrt(var[c] + var[top])
                if ds_lymph >= self.mono_ssc_gap and dc_gran >= 0 and ds_gran <= -self.mono_ssc_gap:
                    names[c] = "monocytes"
                    dim.remove(c)
            # SSC-low clusters brighter than the granulocytes on CD45 while another dim cluster
            # lies at or below them: the dimmer one is the blasts, the brighter a lymphocyte
            # subset (B and NK cells are a little CD45-dimmer than T cells, and tight clusters
            # separate them from the T cells by more than dim_gap).
            def brighter_than_gran(c):
                return (means[c, 0] - means[top, 0]) / np.sqrt(var[c, 0] + var[top, 0]) >= self.dim_gap

            bright = [c for c in dim if sep[c][1] < self.mono_ssc_gap and brighter_than_gran(c)]
            if any(not brighter_than_gran(c) for c in dim):
                for c in bright:
                    names[c] = "lymphocytes"
                    dim.remove(c)
        # A dim cluster with no density valley between it and the lymphocytes is their dim
        # tail, not a second population: blasts must be a separate mode (the biology of the
        # CD45/SSC blast gate), or a pre-gated lymphocyte file grows a "blast" cluster.
        # A tail is also less dense than the lymphocytes' own mode: a dim cluster denser at its
        # centre than the lymphocytes at theirs is the main population with the lymphocytes as
        # its shoulder (CD45-moderate T-ALL blasts outnumbering the T cells), not their tail.
        # The tail may take several components: brightest first, each one judged a tail joins
        # the lymphocytes the next is compared with, so a far tail component is not set
        # against the lymphocytes' core alone (with the gap between them left empty).
        self.blast_valley_ = {}
        for c in sorted(dim, key=lambda c: -means[c, 0]):
            lymph_ks = [k for l, name in names.items() if name == "lymphocytes" for k in clusters[l]]
            dens = _path_density(gmm, clusters[c] + lymph_ks, means[c], means[lymph])
            ratio = float(dens.min() / max(min(dens[0], dens[-1]), np.finfo(float).tiny))
            self.blast_valley_[tuple(clusters[c])] = ratio
            if ratio >= self.blast_valley_ratio and dens[0] < dens[-1]:
                names[c] = "lymphocytes"
                dim.remove(c)
        # CD45-dim/negative SSC-low components, brightest first, are grouped while each is
        # within negative_merge_gap (CD45 separation) of the previous one: one broad blast
        # population often takes several components. The brightest group is the blasts;
        # a group separated below it is CD45-negative (erythroid cells, debris).
        dim.sort(key=lambda c: -means[c, 0])
        group = 0
        for i, c in enumerate(dim):
            if i > 0:
                prev = dim[i - 1]
                gap = (means[prev, 0] - means[c, 0]) / np.sqrt(var[prev, 0] + var[c, 0])
                if gap >= self.negative_merge_gap:
                    group += 1
            names[c] = "blasts" if group == 0 else "cd45_negative"
        self.separation_ = {tuple(clusters[c]): (float(v[0]), float(v[1])) for c, v in sep.items()}
        return {k: names[c] for c, ks in enumerate(clusters) for k in ks}

    def _id(self) -> str:
        return self.gate_id or self.population

    def _build_gate(self) -> PolygonGate | None:
        self.population_gates_ = {pop: PolygonGate(pop, self.dimensions_, v) for pop, v in self.vertices_.items()}
        gate = self.population_gates_.get(self.population)
        return None if gate is None else renamed(gate, self._id())

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if self.gate_ is None:  # population absent and not required: nobody is in it
            return np.zeros(X.shape[0], dtype=bool)
        return super()._predict(X)

    def predict_populations(self, X) -> dict[str, np.ndarray]:
        """Masks of every population found (name -> bool mask)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        src = ColumnSource(X, self.dimensions_)
        return {pop: np.asarray(g.contains(src), dtype=bool) for pop, g in self.population_gates_.items()}

    def tree_gates(self, gate_id: str | None = None) -> list:
        """Every population found (named by population), then the leukocytes: the union of
        all of them but cd45_negative, named ``gate_id``."""
        self._check_fitted()
        gate_id = gate_id or self._id()
        pops = list(self.population_gates_.values())
        leukocytes = [g for g in pops if g.id != "cd45_negative"]
        if not leukocytes:
            raise GatingError(f"CD45SSCPopulations ({gate_id}): found no CD45+ population")
        if len(leukocytes) == 1:
            return pops + [renamed(leukocytes[0], gate_id)]
        return pops + [BooleanGate(gate_id, "or", [g.id for g in leukocytes])]


def _path_density(gmm: GaussianMixture, components, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Density of the mixture's ``components`` at 41 points along the segment start -> end."""
    from scipy.stats import multivariate_normal

    t = np.linspace(0.0, 1.0, 41)[:, None]
    path = start + t * (end - start)
    return sum(gmm.weights_[k] * multivariate_normal(gmm.means_[k], gmm.covariances_[k]).pdf(path)
               for k in components)


def _valley_ratio(gmm: GaussianMixture, components, start: np.ndarray, end: np.ndarray) -> float:
    """Lowest density of ``components`` along the segment start -> end over the lower end density.

    1 means no dip between the two points (one mode), values near 0 a deep valley
    (the ridgeline idea of Hennig 2010, on the mixture's own components).
    """
    dens = _path_density(gmm, components, start, end)
    return float(dens.min() / max(min(dens[0], dens[-1]), np.finfo(float).tiny))


def _rows_columns(X: np.ndarray, rows: np.ndarray, cols: list[int]) -> np.ndarray:
    """``X[rows][:, cols]`` as one C-ordered float64 copy (not a copy of the rows, then another)."""
    return np.ascontiguousarray(X[np.flatnonzero(rows)[:, None], np.asarray(cols, dtype=np.intp)],
                                dtype=np.float64)


class LineageGate(AutoGate):
    """Lineage refinement of blasts: positive for any (or all) of the given markers.

    Each marker's threshold is a ``percentile`` of a negative reference population
    passed to ``fit(X, reference=...)`` (e.g. B cells or lymphocytes, which lack CD34,
    CD117 and CD33), or, with no reference, the density valley on the blasts themselves.
    The marker being screened (CD7) must never be one of these: refining on it would
    select the answer.

    ``groups`` (lists of column indices, mode "any"): the blasts' lineage is the group whose
    markers cover most of the events, and only its markers refine. ``against`` (fit): normal
    cells sharing the blasts' region; a marker of the chosen group that most of them carry
    counts only above their ``against_percentile``.

    ``primary`` (column indices, e.g. CD34): when at least ``primary_fraction`` of the
    chosen group's positive events are primary-positive, ``primary_`` / ``secondary_``
    name the group's primary and other columns, and with ``shape_dimensions`` (e.g. CD45
    and SSC, given as extra trailing columns of X) secondary-only events count only inside
    the ellipsoid holding ``primary_coverage`` of the primary-positive events on the shape
    dimensions and the secondary markers (chi-square quantile of the Mahalanobis distance;
    ``shape_gate_``): CD34-negative blasts look like the CD34+ blasts there, CD33-bright
    monocytes sharing the blast gate do not.

    ``mature_markers`` (column indices, e.g. surface CD3) with ``shape_dimensions`` and
    ``fit(..., mature=...)`` (events of normal mature cells, e.g. the T/NK-cell gate of the
    CD45-bright lymphocytes): when the chosen group holds a mature marker, the mature cells
    positive for it (above its threshold) give an ellipsoid on the shape dimensions and the
    mature markers holding ``mature_coverage`` of them (``mature_gate_``), and events inside
    it are not blasts. Normal T cells are CD45-bright, surface-CD3-bright and SSC-low; T-ALL
    blasts whose CD45 overlaps theirs share CD3/CD5 (and CD7) with them, and only the joint
    position on CD45, SSC and CD3 tells them apart.

    ``gate_``: one marker's range gate (x >= threshold), a RectangleGate for ``mode="all"``,
    else a BooleanGate over ``gates_`` (one range gate per chosen marker, plus the
    ellipsoid and its boolean parts when the primary split applies); with the mature
    exclusion, ``<id>_lineage`` AND NOT ``<id>_mature_like``.
    """

    n_dims = None
    gate_id_default = "lineage"
    min_fit_events = 10
    _parameter_constraints = {
        **AutoGate._parameter_constraints,
        "mode": [StrOptions({"any", "all"})],
        "percentile": [Interval(Real, 0, 100, closed="neither")],
        "groups": ["array-like", None],
        "against_percentile": [Interval(Real, 0, 100, closed="neither")],
        "primary": ["array-like", None],
        "primary_fraction": [Interval(Real, 0, 1, closed="both")],
        "primary_coverage": [Interval(Real, 0, 1, closed="neither")],
        "shape_dimensions": ["array-like", None],
        "mature_markers": ["array-like", None],
        "mature_coverage": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(self, dimensions, mode: str = "any", percentile: float = 99.0, groups=None,
                 against_percentile: float = 99.0, primary=None, primary_fraction: float = 0.5,
                 primary_coverage: float = 0.99, shape_dimensions=None, mature_markers=None,
                 mature_coverage: float = 0.99, gate_id: str | None = None):
        self.dimensions = dimensions
        self.mode = mode
        self.percentile = percentile
        self.groups = groups
        self.against_percentile = against_percentile
        self.primary = primary
        self.primary_fraction = primary_fraction
        self.primary_coverage = primary_coverage
        self.shape_dimensions = shape_dimensions
        self.mature_markers = mature_markers
        self.mature_coverage = mature_coverage
        self.gate_id = gate_id

    # --- parameters ---------------------------------------------------------
    def _markers(self) -> list:
        return [self.dimensions] if isinstance(self.dimensions, str) else list(self.dimensions)

    def _dimension_param(self):
        return self._markers() + list(self.shape_dimensions or ())

    def _n_columns(self) -> int:
        return len(self._dimension_param())

    def _groups(self) -> list[list[int]] | None:
        if self.groups is None:
            return None
        return [sorted({int(j) for j in g}) for g in self.groups if len(g)]

    def _primary(self) -> list[int]:
        return sorted({int(j) for j in self.primary}) if self.primary else []

    def _check_params(self) -> None:
        n = len(self._markers())
        groups = self._groups()
        if groups is not None:
            if self.mode != "any":
                raise ParameterError("groups", "LineageGate: groups need mode='any'")
            if not groups or any(j < 0 or j >= n for g in groups for j in g):
                raise ParameterError("groups", f"LineageGate: groups must be non-empty lists of column indices < {n}")
        if any(j < 0 or j >= n for j in self._primary()):
            raise ParameterError("primary", f"LineageGate: primary must be column indices < {n}")
        if any(j < 0 or j >= n for j in self._mature_markers()):
            raise ParameterError("mature_markers", f"LineageGate: mature_markers must be column indices < {n}")

    def _mature_markers(self) -> list[int]:
        return sorted({int(j) for j in self.mature_markers}) if self.mature_markers else []

    # --- fitting ------------------------------------------------------------
    def fit(self, X, y=None, reference=None, against=None, mature=None) -> "LineageGate":
        """``reference``: events negative for every marker (thresholds); ``against``: normal
        cells sharing the blasts' region (e.g. granulocytes); ``mature``: normal mature cells
        (e.g. T cells) to exclude, with the same columns as X (markers, then shape
        dimensions). Others are events x markers arrays (extra trailing columns are ignored);
        none is kept."""
        return super().fit(X, y, reference=reference, against=against, mature=mature)

    def _fit(self, X: np.ndarray, reference=None, against=None, mature=None) -> None:
        n = len(self._markers())
        if reference is not None:
            reference = np.asarray(reference)  # widened to float64 a column at a time
            reference = reference[:, None] if reference.ndim == 1 else reference
        thresholds = []
        for j in range(n):
            if reference is not None:
                ref = np.asarray(reference[:, j], dtype=np.float64)
                ref = ref[np.isfinite(ref)]
                if ref.size < self.min_fit_events:
                    raise GatingError(f"LineageGate ({self._id()}): reference has only {ref.size} events")
                thresholds.append(float(np.percentile(ref, self.percentile)))
            else:
                thresholds.append(DensityThreshold(self.dimensions_[j]).fit(X[:, j]).threshold_)
        self.thresholds_ = np.array(thresholds)
        # With lineage groups (e.g. T: CD3, CD5; myeloid: CD34, CD117, CD33) the blasts' lineage
        # is the group whose markers cover most of the parent's events, and only that group
        # refines: "any marker of any lineage" would also keep the other lineage's normal cells
        # that share the CD45/SSC region (CD33-dim granulocytes under T-ALL blasts, CD3+ T cells
        # under AML blasts).
        self.selected_ = list(range(n))
        self.group_fractions_ = None
        self.primary_, self.secondary_, self.primary_share_ = [], [], None
        self.shape_mean_ = self.shape_covariance_ = None
        self.mature_mean_ = self.mature_covariance_ = None
        groups = self._groups()
        if groups is not None:
            self._fit_groups(X, groups, against)
        self._fit_mature(X, mature)

    def _fit_mature(self, X: np.ndarray, mature) -> None:
        """The ellipsoid of mature cells positive for a chosen mature marker (shape dims + mature markers)."""
        n = len(self._markers())
        markers = [j for j in self._mature_markers() if j in self.selected_]
        if mature is None or not markers or not self.shape_dimensions:
            return
        mature = np.asarray(mature)  # float32 or float64: compared, then widened, exactly
        if mature.ndim != 2 or mature.shape[1] != X.shape[1]:
            raise GatingError(f"LineageGate ({self._id()}): mature events need the {X.shape[1]} columns of X")
        cols = list(range(n, X.shape[1])) + markers
        model = _rows_columns(mature, (mature[:, markers] >= self.thresholds_[markers]).any(axis=1), cols)
        model = np.ascontiguousarray(model[np.all(np.isfinite(model), axis=1)])
        if model.shape[0] < 10 * len(cols):
            return
        cov = np.cov(model.T)
        if not np.all(np.linalg.eigvalsh(cov) > 0):
            return
        mean = model.mean(axis=0)
        # Lineage-positive blast-gate events, and the ones a two-Gaussian comparison (mature
        # cells vs these events, the mature share fitted) calls mature. The ellipsoid is the widest of the
        # candidate coverages (up to mature_coverage) whose events are >= 80% called mature:
        # where T-ALL blasts are surface-CD3+ and overlap the T cells on CD45, a fixed 99%
        # ellipsoid of the T cells would take many blasts with it.
        lineage_pos = (X[:, :n] >= self.thresholds_)[:, self.selected_].any(axis=1)
        cand = _rows_columns(X, lineage_pos, cols)
        cand = cand[np.all(np.isfinite(cand), axis=1)]
        if cand.shape[0] < 10 * len(cols):
            return
        d2_mature = mahalanobis_sq(cand, mean, cov)
        b_mean, b_cov = cand.mean(axis=0), np.cov(cand.T)
        if not np.all(np.linalg.eigvalsh(b_cov) > 0):
            return
        log_ratio = (-0.5 * d2_mature - 0.5 * np.linalg.slogdet(cov)[1]) - \
                    (-0.5 * mahalanobis_sq(cand, b_mean, b_cov) - 0.5 * np.linalg.slogdet(b_cov)[1])
        # The mature cells' share among these events (EM on the prior, both shapes fixed):
        # with equal priors, blasts in the overlap would be called mature far too often.
        share = 0.5
        for _ in range(50):
            resp = 1.0 / (1.0 + np.exp(-np.clip(log_ratio + np.log(share / (1 - share)), -50, 50)))
            share = float(np.clip(resp.mean(), 1e-4, 0.5))
        called = resp > 0.5
        self.mature_cutoff_ = None
        for coverage in np.linspace(self.mature_coverage, 0.5, 10):
            cutoff = float(chi2.ppf(coverage, len(cols)))
            inside = d2_mature <= cutoff
            if inside.any() and np.mean(called[inside]) >= 0.8:
                self.mature_cutoff_ = cutoff
                break
        if self.mature_cutoff_ is None:
            return
        self.mature_columns_ = cols
        self.mature_mean_ = mean
        self.mature_covariance_ = cov

    def _fit_groups(self, X: np.ndarray, groups: list[list[int]], against) -> None:
        n = len(self._markers())
        pos = X[:, :n] >= self.thresholds_
        self.group_fractions_ = [float(np.mean(pos[:, g].any(axis=1))) for g in groups]
        self.selected_ = groups[int(np.argmax(self.group_fractions_))]
        if against is not None:
            against = np.asarray(against)  # widened to float64 a column at a time
            against = against.reshape(-1, n) if against.ndim == 1 else against
        if against is not None and against.shape[0] >= self.min_fit_events:
            # A marker of the chosen lineage that most of the ``against`` cells carry (CD33 is
            # dim on granulocytes) still counts, but only above those cells' own percentile:
            # CD33-bright blasts stay, CD33-dim granulocytes go.
            for j in self.selected_:
                col = np.asarray(against[:, j], dtype=np.float64)
                col = col[np.isfinite(col)]
                if col.size and np.mean(col >= self.thresholds_[j]) > 0.5:
                    self.thresholds_[j] = max(self.thresholds_[j], float(np.percentile(col, self.against_percentile)))
        # A primary (immaturity) marker of the chosen lineage (CD34) that most of the
        # lineage-positive events carry splits the group: secondary-only events (CD33+CD34-)
        # count only where they resemble the primary-positive blasts (normal monocytes are
        # CD33-bright, CD34-negative).
        prim = [j for j in self.selected_ if j in self._primary()]
        if prim and len(prim) < len(self.selected_):
            pos = X[:, :n] >= self.thresholds_
            group_pos = pos[:, self.selected_].any(axis=1)
            if group_pos.any():
                self.primary_share_ = float(np.mean(pos[group_pos][:, prim].any(axis=1)))
                if self.primary_share_ >= self.primary_fraction:
                    self.primary_ = prim
                    self.secondary_ = [j for j in self.selected_ if j not in prim]
                    self._fit_shape(X, pos)

    def _fit_shape(self, X: np.ndarray, pos: np.ndarray) -> None:
        """The ellipsoid of the primary-positive events on the shape dimensions + secondary markers."""
        n = len(self._markers())
        if not self.shape_dimensions:
            return
        cols = list(range(n, X.shape[1])) + list(self.secondary_)
        # C order, as a column stack: the pairwise sums of mean/cov then match to the last bit.
        model = _rows_columns(X, pos[:, self.primary_].any(axis=1), cols)
        if model.shape[0] < 10 * len(cols):
            return
        cov = np.cov(model.T)
        if not np.all(np.linalg.eigvalsh(cov) > 0):
            return
        self.shape_mean_ = model.mean(axis=0)
        self.shape_covariance_ = cov

    def _build_gate(self):
        self.gates_ = []
        self.mature_gate_ = None
        if self.mature_mean_ is None:
            return self._build_lineage_gate(self._id())
        gid = self._id()
        lineage = self._build_lineage_gate(f"{gid}_lineage")
        dims = [self.dimensions_[j] for j in self.mature_columns_]
        self.mature_gate_ = EllipsoidGate(f"{gid}_mature_like", dims, self.mature_mean_, self.mature_covariance_,
                                          self.mature_cutoff_)
        self.gates_ = [*self.gates_, lineage, self.mature_gate_]
        return BooleanGate(gid, "and", [GateReference(lineage.id), GateReference(self.mature_gate_.id, True)])

    def _build_lineage_gate(self, gid: str):
        dims = self.dimensions_
        marker_gates = {j: RectangleGate(f"{gid}_{dims[j].channel}", [dims[j]], [self.thresholds_[j]], [None])
                        for j in self.selected_}
        self.shape_gate_ = None
        if self.shape_mean_ is not None:
            n = len(self._markers())
            shape_dims = list(dims[n:]) + [dims[j] for j in self.secondary_]
            self.shape_gate_ = EllipsoidGate(f"{gid}_like_primary", shape_dims, self.shape_mean_,
                                             self.shape_covariance_,
                                             float(chi2.ppf(self.primary_coverage, len(shape_dims))))
            secondary = BooleanGate(f"{gid}_secondary", "or", [marker_gates[j].id for j in self.secondary_])
            like = BooleanGate(f"{gid}_secondary_like_primary", "and", [secondary.id, self.shape_gate_.id])
            self.gates_ = [*marker_gates.values(), self.shape_gate_, secondary, like]
            return BooleanGate(gid, "or", [marker_gates[j].id for j in self.primary_] + [like.id])
        if len(marker_gates) == 1:
            return renamed(next(iter(marker_gates.values())), gid)
        if self.mode == "all":
            n = len(self._markers())
            return RectangleGate(gid, dims[:n], list(self.thresholds_), [None] * n)
        self.gates_ = list(marker_gates.values())
        return BooleanGate(gid, "or", [g.id for g in self.gates_])
