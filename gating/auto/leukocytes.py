"""CD45 vs SSC populations (blasts, lymphocytes, monocytes, granulocytes) and lineage refinement.

Populations are found relative to each other, never at fixed positions: a Gaussian
mixture is fitted on (CD45, SSC), the lymphocyte component is the one that is most
CD45-bright and SSC-low, and every other component is labelled by how far it sits
from the lymphocytes in units of their pooled spread (a separation index, so the
rules hold on any scale or transform).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import chi2
from sklearn.mixture import GaussianMixture

from ..errors import GatingError
from ..gates import BooleanGate, PolygonGate, RectangleGate
from ._base import AutoGate, ColumnSource, convex_hull, mahalanobis_sq, subsample
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

    Components that form one mode are merged first (see ``_merge_components``), and dc /
    ds are computed between the merged clusters. Components below ``min_weight`` are
    left unlabelled, and so are background components (scattered debris, doublets and
    outliers): CD45 SD above ``background_sd_ratio`` x the median component's, or both SDs
    above ``background_sd_ratio / 1.6`` x the median's (2.5x by default).
    Each population's gate is the
    convex hull of its events that lie within the ``coverage`` Mahalanobis ellipse of
    their own component.

    ``population`` picks what ``predict`` and ``gate_`` return; ``gates_`` holds every
    population found and ``predict_populations`` gives all masks. When ``population`` is
    not found, ``fit`` raises GatingError, or with ``require_population=False`` leaves
    ``gate_`` None and ``predict`` all False (an answer of "none", e.g. no blasts).
    """

    n_dims = 2
    gate_id_default = "blasts"
    min_fit_events = 100

    def __init__(self, dimensions=("CD45", "SSC-A"), population: str = "blasts", n_components: int = 8,
                 coverage: float = 0.95, dim_gap: float = 1.0, mono_ssc_gap: float = 1.5,
                 gran_ssc_gap: float = 3.0, negative_merge_gap: float = 3.0, merge_ratio: float = 0.8,
                 background_sd_ratio: float = 4.0, require_population: bool = True,
                 min_weight: float = 0.005,
                 max_fit_events: int | None = 40_000, random_state: int = 0, gate_id: str | None = None):
        super().__init__(dimensions, gate_id or population)
        if population not in POPULATIONS:
            raise GatingError(f"CD45SSCPopulations: population must be one of {POPULATIONS}, got {population!r}")
        self.population = population
        self.n_components = n_components
        self.coverage = coverage
        self.dim_gap = dim_gap
        self.mono_ssc_gap = mono_ssc_gap
        self.gran_ssc_gap = gran_ssc_gap
        self.negative_merge_gap = negative_merge_gap
        self.merge_ratio = merge_ratio
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
        src = ColumnSource(X, self.dimensions)
        self.contamination_ = {}
        for pop, v in self.vertices_.items():
            inside = np.asarray(PolygonGate(pop, self.dimensions, v).contains(src), dtype=bool)
            n_in = max(int(inside.sum()), 1)
            self.contamination_[pop] = {other: float(np.count_nonzero(pop_of[inside] == other)) / n_in
                                        for other in POPULATIONS if other != pop}
        if self.population not in self.vertices_ and self.require_population:
            found = ", ".join(sorted(self.vertices_)) or "none"
            raise GatingError(
                f"CD45SSCPopulations ({self.gate_id}): no {self.population} population found on "
                f"{[str(d) for d in self.dimensions]} (found: {found})"
            )

    def _merge_components(self, gmm: GaussianMixture, usable: list[int]) -> list[list[int]]:
        """Group components that together form one mode (no density dip between their means).

        A mixture often spends several components on one skewed population; splitting it
        would create spurious separations. Two components merge when the density of the
        pair along the segment joining their means never falls below ``merge_ratio`` x the
        lower of the two end densities (a unimodality check in the spirit of Hennig 2010).
        """
        from scipy.stats import multivariate_normal

        t = np.linspace(0.0, 1.0, 41)[:, None]
        one_mode = {}
        for i, a in enumerate(usable):
            for b in usable[i + 1:]:
                path = gmm.means_[a] + t * (gmm.means_[b] - gmm.means_[a])
                dens = sum(gmm.weights_[k] * multivariate_normal(gmm.means_[k], gmm.covariances_[k]).pdf(path)
                           for k in (a, b))
                one_mode[a, b] = one_mode[b, a] = bool(dens.min() >= self.merge_ratio * min(dens[0], dens[-1]))
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

    def _build_gate(self) -> PolygonGate:
        self.gates_ = {
            pop: PolygonGate(self.gate_id if pop == self.population else pop, self.dimensions, v)
            for pop, v in self.vertices_.items()
        }
        return self.gates_.get(self.population)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if self._gate is None:  # population absent and not required: nobody is in it
            return np.zeros(X.shape[0], dtype=bool)
        return super()._predict(X)

    def predict_populations(self, X) -> dict[str, np.ndarray]:
        """Masks of every population found (name -> bool mask)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        src = ColumnSource(X, self.dimensions)
        return {pop: np.asarray(g.contains(src), dtype=bool) for pop, g in self.gates_.items()}


class LineageGate(AutoGate):
    """Lineage refinement of blasts: positive for any (or all) of the given markers.

    Each marker's threshold is a ``percentile`` of a negative reference population
    passed to ``fit(X, reference=...)`` (e.g. B cells or lymphocytes, which lack CD34,
    CD117 and CD33), or, with no reference, the density valley on the blasts themselves.
    The marker being screened (CD7) must never be one of these: refining on it would
    select the answer.

    ``gates_`` holds one range gate per marker (x >= threshold); ``gate_`` is that gate
    when there is one marker, a RectangleGate for ``mode="all"``, and for ``mode="any"``
    a BooleanGate 'or' over ``gates_`` (add ``gates_`` to the tree with it).

    ``primary`` (column indices, e.g. CD34): when at least ``primary_fraction`` of the
    chosen group's positive events are primary-positive, ``primary_`` / ``secondary_``
    name the group's primary and other columns. The gate itself still keeps any marker;
    the caller may keep secondary-only events only inside an ellipsoid holding
    ``primary_coverage`` of the primary-positive events (cd7flow's protocol gating does).
    """

    gate_id_default = "lineage"
    min_fit_events = 10

    def __init__(self, dimensions, mode: str = "any", percentile: float = 99.0, groups=None,
                 against_percentile: float = 99.0, primary=None, primary_fraction: float = 0.5,
                 primary_coverage: float = 0.99,
                 gate_id: str | None = None):
        dims = [dimensions] if isinstance(dimensions, str) else list(dimensions)
        self.n_dims = len(dims)
        super().__init__(dims, gate_id)
        if mode not in ("any", "all"):
            raise GatingError(f"LineageGate: mode must be 'any' or 'all', got {mode!r}")
        self.mode = mode
        self.percentile = percentile
        self.against_percentile = against_percentile
        self.groups = None if groups is None else [sorted({int(j) for j in g}) for g in groups if len(g)]
        self.primary = sorted({int(j) for j in primary}) if primary else []
        self.primary_fraction = float(primary_fraction)
        self.primary_coverage = float(primary_coverage)
        if self.groups is not None:
            if mode != "any":
                raise GatingError("LineageGate: groups need mode='any'")
            if not self.groups or any(j < 0 or j >= self.n_dims for g in self.groups for j in g):
                raise GatingError(f"LineageGate: groups must be non-empty lists of column indices < {self.n_dims}")

    def fit(self, X, y=None, reference=None, against=None) -> "LineageGate":
        """``reference``: events negative for every marker (thresholds); ``against``: normal
        cells sharing the blasts' region (e.g. granulocytes) - with ``groups``, a marker of the
        chosen group that most of them carry has its threshold raised to their
        ``against_percentile``."""
        self._reference = None if reference is None else np.asarray(reference, dtype=np.float64)
        if self._reference is not None and self._reference.ndim == 1:
            self._reference = self._reference[:, None]
        self._against = None if against is None else np.asarray(against, dtype=np.float64).reshape(-1, self.n_dims)
        return super().fit(X, y)

    def _fit(self, X: np.ndarray) -> None:
        thresholds = []
        for j in range(self.n_dims):
            if self._reference is not None:
                ref = self._reference[:, j]
                ref = ref[np.isfinite(ref)]
                if ref.size < self.min_fit_events:
                    raise GatingError(f"LineageGate ({self.gate_id}): reference has only {ref.size} events")
                thresholds.append(float(np.percentile(ref, self.percentile)))
            else:
                thresholds.append(DensityThreshold(self.dimensions[j]).fit(X[:, j]).threshold_)
        self.thresholds_ = np.array(thresholds)
        # With lineage groups (e.g. T: CD3, CD5; myeloid: CD34, CD117, CD33) the blasts' lineage
        # is the group whose markers cover most of the parent's events, and only that group
        # refines: "any marker of any lineage" would also keep the other lineage's normal cells
        # that share the CD45/SSC region (CD33-dim granulocytes under T-ALL blasts, CD3+ T cells
        # under AML blasts).
        self.selected_ = list(range(self.n_dims))
        self.group_fractions_ = None
        self.primary_, self.secondary_, self.primary_share_ = [], [], None
        if self.groups is not None:
            pos = X >= self.thresholds_
            self.group_fractions_ = [float(np.mean(pos[:, g].any(axis=1))) for g in self.groups]
            self.selected_ = self.groups[int(np.argmax(self.group_fractions_))]
            against = getattr(self, "_against", None)
            if against is not None and against.shape[0] >= self.min_fit_events:
                # A marker of the chosen lineage that most of the ``against`` cells carry (CD33 is
                # dim on granulocytes) still counts, but only above those cells' own percentile:
                # CD33-bright blasts stay, CD33-dim granulocytes go.
                for j in self.selected_:
                    col = against[:, j][np.isfinite(against[:, j])]
                    if col.size and np.mean(col >= self.thresholds_[j]) > 0.5:
                        self.thresholds_[j] = max(self.thresholds_[j], float(np.percentile(col, self.against_percentile)))
            # A primary (immaturity) marker of the chosen lineage (CD34) that most of the
            # lineage-positive events carry: ``primary_`` / ``secondary_`` split the group so the
            # caller can keep secondary-only events (CD33+CD34-) only where they resemble the
            # primary-positive blasts (normal monocytes are CD33-bright, CD34-negative).
            prim = [j for j in self.selected_ if j in self.primary]
            if prim and len(prim) < len(self.selected_):
                pos = X >= self.thresholds_
                group_pos = pos[:, self.selected_].any(axis=1)
                if group_pos.any():
                    self.primary_share_ = float(np.mean(pos[group_pos][:, prim].any(axis=1)))
                    if self.primary_share_ >= self.primary_fraction:
                        self.primary_ = prim
                        self.secondary_ = [j for j in self.selected_ if j not in prim]

    def _build_gate(self):
        self.gates_ = [
            RectangleGate(f"{self.gate_id}_{self.dimensions[j].channel}", [self.dimensions[j]],
                          [self.thresholds_[j]], [None])
            for j in self.selected_
        ]
        if len(self.gates_) == 1:
            return self.gates_[0]
        if self.mode == "all":
            return RectangleGate(self.gate_id, self.dimensions, list(self.thresholds_), [None] * self.n_dims)
        return BooleanGate(self.gate_id, "or", [g.id for g in self.gates_])

    def _predict(self, X: np.ndarray) -> np.ndarray:
        pos = (X >= self.thresholds_)[:, self.selected_]
        return pos.any(axis=1) if self.mode == "any" else pos.all(axis=1)
