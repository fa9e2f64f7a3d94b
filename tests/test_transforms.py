"""Transforms vs flowutils / FlowKit, hand-computed values, inverses, dtypes, validation."""
from __future__ import annotations

import math

import flowkit
import flowutils.transforms as fut
import numpy as np
import pytest

from cd7flow.errors import TransformError
from cd7flow.transforms import (
    AsinhTransform,
    BoundedTransform,
    FlowJoAsinhTransform,
    FlowJoBiexTransform,
    FlowJoLogTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    LogTransform,
    Transform,
    transform_from_spec,
)

# negatives, zero, subnormal-to-tiny, the linear region, up to and well beyond T
GRID = np.unique(np.concatenate([
    -np.logspace(-6, 6.3, 1500),
    [0.0, 1e-300, 1e-40, 1e-30, 1e-12],
    np.logspace(-10, 8, 3000),
    np.linspace(-3000.0, 300000.0, 4001),
]))

BIEX_PARAMS = [  # (t, w, m, a)
    (262144.0, 0.5, 4.5, 0.0),
    (262144.0, 1.0, 4.5, 1.0),
    (10000.0, 0.5, 4.0, 0.5),
    (1024.0, 2.0, 4.5, -1.0),
    (262144.0, 0.25, 4.5, -0.25),
]


@pytest.mark.parametrize("t,w,m,a", BIEX_PARAMS)
@pytest.mark.parametrize("cls,ref", [(LogicleTransform, fut._logicle), (HyperlogTransform, fut._hyperlog)])
def test_logicle_hyperlog_match_flowutils(cls, ref, t, w, m, a):
    xf = cls(t=t, w=w, m=m, a=a)
    expected = ref(GRID, t=t, m=m, w=w, a=a)
    np.testing.assert_allclose(xf.apply(GRID), expected, rtol=0, atol=1e-12)
    x32 = GRID.astype(np.float32)
    y32 = xf.apply(x32)
    assert y32.dtype == np.float32
    expected32 = ref(x32.astype(np.float64), t=t, m=m, w=w, a=a)
    assert np.max(np.abs(y32 - expected32)) <= 1e-6


@pytest.mark.parametrize("t,w,m,a", BIEX_PARAMS)
@pytest.mark.parametrize(
    "cls,ref", [(LogicleTransform, fut._logicle_inverse), (HyperlogTransform, fut._hyperlog_inverse)]
)
def test_logicle_hyperlog_inverse_match_flowutils(cls, ref, t, w, m, a):
    ys = np.linspace(-0.6, 1.4, 2001)
    expected = ref(ys, t=t, m=m, w=w, a=a)
    np.testing.assert_allclose(cls(t=t, w=w, m=m, a=a).inverse(ys), expected, rtol=1e-12, atol=1e-9)


def test_flowkit_transform_classes_agree():
    x = GRID
    pairs = [
        (LogicleTransform(t=262144, w=0.5, m=4.5, a=0),
         flowkit.transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0)),
        (HyperlogTransform(t=262144, w=1, m=4.5, a=0.5),
         flowkit.transforms.HyperlogTransform(param_t=262144, param_w=1, param_m=4.5, param_a=0.5)),
        (AsinhTransform(t=262144, m=4.0, a=0.5),
         flowkit.transforms.AsinhTransform(param_t=262144, param_m=4.0, param_a=0.5)),
        (LinearTransform(t=262144, a=100),
         flowkit.transforms.LinearTransform(param_t=262144, param_a=100)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.apply(x), theirs.apply(x), rtol=1e-12, atol=1e-12, err_msg=repr(ours))
        ys = np.linspace(-0.5, 1.3, 500)
        np.testing.assert_allclose(ours.inverse(ys), theirs.inverse(ys), rtol=1e-10, atol=1e-8, err_msg=repr(ours))
    pos = x[x > 0]
    np.testing.assert_allclose(
        LogTransform(t=10000, m=5).apply(pos),
        flowkit.transforms.LogTransform(param_t=10000, param_m=5).apply(pos), rtol=1e-12, atol=1e-12,
    )
    fj = flowkit.transforms.WSPLogTransform(offset=1.0, decades=5.0)
    np.testing.assert_allclose(FlowJoLogTransform(offset=1.0, decades=5.0).apply(x), fj.apply(x),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("neg,width,pos,top", [
    (0.0, -10.0, 4.418540, 262144.0),
    (1.0, -7.943282, 4.418540, 262144.000029),
    (0.5, -100.0, 4.418540, 262144.0),
    (2.0, -1000.0, 4.5, 100000.0),
])
def test_flowjo_biex_matches_flowkit(neg, width, pos, top):
    ours = FlowJoBiexTransform(negative=neg, width=width, positive=pos, max_value=top)
    theirs = flowkit.transforms.WSPBiexTransform(negative=neg, width=width, positive=pos, max_value=top)
    x = np.concatenate([np.linspace(-5000, 300000, 5001), -np.logspace(0, 4, 200), np.logspace(-3, 6, 500)])
    np.testing.assert_allclose(ours.apply(x), theirs.apply(x), rtol=1e-9, atol=1e-6)
    ch = np.linspace(0, 4096, 1001)
    np.testing.assert_allclose(ours.inverse(ch), theirs.inverse(ch), rtol=1e-9, atol=1e-6)


def test_flowjo_biex_reproduces_flowjo_table(shared_data):
    path = shared_data / "flowkit/data/flowjo_xforms/tr_biex_l256_w-7.943282_n1.000000_m4.418540_r262144.000029.csv"
    channel, data = np.loadtxt(path, delimiter=",", skiprows=1, unpack=True)
    xf = FlowJoBiexTransform(negative=1.0, width=-7.943282, positive=4.418540, max_value=262144.000029)
    got = xf.apply(data)
    # FlowJo's exported table (data value at each of 4096 channels) vs our table construction
    pct = 100.0 * np.abs(got[1:] - channel[1:]) / channel[1:]
    assert pct.mean() < 0.01
    assert np.max(np.abs(got - channel)) < 0.5  # never half a channel off
    # and the inverse lands on FlowJo's data values (relative, values span -866..262144)
    back = xf.inverse(channel)
    assert np.median(np.abs(back - data) / np.maximum(np.abs(data), 1.0)) < 1e-3


def test_hand_computed_closed_forms():
    np.testing.assert_allclose(LinearTransform(t=1000, a=0).apply([0, 500, 1000, 2000, -100]),
                               [0, 0.5, 1, 2, -0.1])
    np.testing.assert_allclose(LinearTransform(t=1000, a=100).apply([-100, 0, 1000]), [0, 100 / 1100, 1])
    np.testing.assert_allclose(LogTransform(t=10000, m=4).apply([10000, 100, 1, 100000]), [1, 0.5, 0, 1.25])
    assert LogTransform(t=10000, m=4).apply([0.0])[0] == -np.inf
    assert np.isnan(LogTransform(t=10000, m=4).apply([-1.0])[0])
    # fasinh: T -> 1; 0 -> A/(M+A); x = T/sinh(M ln10) -> (asinh(1) + A ln10)/((M+A) ln10)
    t, m, a = 262144.0, 4.5, 1.0
    x_one = t / math.sinh(m * math.log(10))
    np.testing.assert_allclose(
        AsinhTransform(t=t, m=m, a=a).apply([t, 0.0, x_one]),
        [1.0, a / (m + a), (math.asinh(1.0) + a * math.log(10)) / ((m + a) * math.log(10))],
        rtol=1e-12,
    )
    np.testing.assert_allclose(FlowJoLogTransform(offset=10, decades=3).apply([1, 10, 100, 10000]),
                               [0, 0, 1 / 3, 1])


@pytest.mark.parametrize("cls", [LogicleTransform, HyperlogTransform])
def test_biexponential_anchor_points(cls):
    t, w, m, a = 262144.0, 0.5, 4.5, 0.25
    xf = cls(t=t, w=w, m=m, a=a)
    y = xf.apply(np.array([t, 0.0, -0.0]))
    np.testing.assert_allclose(y, [1.0, (w + a) / (m + a), (w + a) / (m + a)], rtol=1e-13)
    # odd symmetry around data zero: y(-x) = 2 y(0) - y(x)
    x = np.logspace(-2, 6, 50)
    np.testing.assert_allclose(xf.apply(-x), 2 * y[1] - xf.apply(x), atol=1e-13)


def test_logicle_with_w_zero_is_fasinh():
    # Gating-ML: logicle with W = 0 is the arcsinh scale. (flowutils' root finder fails for
    # |x| < ~1e-20 at W = 0, returning about -6.9, so this is checked against fasinh instead.)
    x = GRID
    np.testing.assert_allclose(LogicleTransform(w=0, m=4.5, a=0.5).apply(x),
                               AsinhTransform(m=4.5, a=0.5).apply(x), rtol=1e-10, atol=1e-12)


ALL = [
    LinearTransform(t=262144, a=50),
    AsinhTransform(t=262144, m=4.5, a=0.5),
    LogicleTransform(t=262144, w=0.5, m=4.5, a=0),
    LogicleTransform(t=10000, w=1.0, m=4.0, a=0.5),
    HyperlogTransform(t=262144, w=0.5, m=4.5, a=0),
    FlowJoBiexTransform(negative=1.0, width=-10.0),
]


@pytest.mark.parametrize("xf", ALL, ids=repr)
def test_inverse_of_apply(xf):
    x = np.concatenate([-np.logspace(-1, 5, 300), [0.0], np.logspace(-1, 6, 600)])
    if isinstance(xf, FlowJoBiexTransform):  # its table clips data beyond its ends
        lo, hi = xf.data_range
        assert -1200 < lo < -1000 and hi == pytest.approx(262144, rel=0.01)
        x = x[(x >= lo) & (x <= hi)]
    back = xf.inverse(xf.apply(x))
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-6 * 262144 * 1e-3)
    x32 = x.astype(np.float32)
    back32 = xf.inverse(xf.apply(x32))
    assert back32.dtype == np.float32
    np.testing.assert_allclose(back32, x32, rtol=2e-5, atol=0.05)


def test_positive_only_inverses():
    x = np.logspace(-3, 7, 400)
    for xf in (LogTransform(t=262144, m=4.5), FlowJoLogTransform(offset=1e-3, decades=6)):
        np.testing.assert_allclose(xf.inverse(xf.apply(x)), x, rtol=1e-12)


@pytest.mark.parametrize("xf", ALL + [LogTransform(), FlowJoLogTransform()], ids=repr)
def test_dtypes_shapes_and_out(xf):
    rng = np.random.default_rng(7)
    ev = (rng.lognormal(5, 2, (3000, 6)) * rng.choice([-0.1, 1.0], (3000, 6))).astype(np.float32)
    whole = xf.apply(ev)
    assert whole.dtype == np.float32 and whole.shape == ev.shape
    # a strided column and a strided block give the same numbers as the contiguous path
    np.testing.assert_array_equal(xf.apply(ev[:, 2]), whole[:, 2])
    np.testing.assert_array_equal(xf.apply(ev[:, 1:5]), whole[:, 1:5])
    # in place on a column of the events matrix
    ev2 = ev.copy()
    res = xf.apply(ev2[:, 3], out=ev2[:, 3])
    assert np.shares_memory(res, ev2)
    np.testing.assert_array_equal(ev2[:, 3], whole[:, 3])
    np.testing.assert_array_equal(ev2[:, 0], ev[:, 0])
    # ints, lists and scalars compute in float64
    assert xf.apply([1, 2, 3]).dtype == np.float64
    assert xf.apply(np.arange(5, dtype=np.int16)).dtype == np.float64
    scalar = xf.apply(np.float64(1000.0))
    assert scalar.shape == () and scalar == pytest.approx(float(xf.apply(np.array([1000.0]))[0]))
    assert xf(ev[:10, 0]).dtype == np.float32  # __call__ is apply
    with pytest.raises(TransformError):
        xf.apply(ev, out=np.empty(ev.shape, np.float64))
    with pytest.raises(TransformError):
        xf.apply(np.array(["a", "b"]))


def test_large_arrays_use_threads_and_stay_exact(monkeypatch):
    monkeypatch.setenv("CD7FLOW_NUM_THREADS", "2")
    rng = np.random.default_rng(3)
    n = (1 << 20) + 12345  # above the threading threshold, not a multiple of the chunk
    x = (rng.lognormal(6, 2.5, n) * rng.choice([-0.05, 1.0], n)).astype(np.float32)
    xf = LogicleTransform()
    y = xf.apply(x)
    sample = rng.choice(n, 20000, replace=False)
    expected = fut._logicle(x[sample].astype(np.float64))
    assert np.max(np.abs(y[sample] - expected)) <= 1e-6
    x64 = x.astype(np.float64)
    y64 = xf.apply(x64)
    np.testing.assert_allclose(y64[sample], expected, atol=1e-12)


@pytest.mark.parametrize("t,w,m,a", [BIEX_PARAMS[0], BIEX_PARAMS[3]])
@pytest.mark.parametrize("cls,ref", [(LogicleTransform, fut._logicle), (HyperlogTransform, fut._hyperlog)])
def test_float64_forward_matches_flowutils_on_millions(cls, ref, t, w, m, a):
    # the float64 path interpolates a cubic in table cells: check it everywhere it could
    # go wrong - every cell of the table (log-uniform magnitudes), both signs, the series
    # cell below the table, cell edges, the linear region, and past T up to where
    # flowutils' own solver still converges (its hyperlog returns -1 for some x > T * 3e3)
    rng = np.random.default_rng(20261125)
    n = 1_000_000
    magnitude = t * 10.0 ** rng.uniform(-12.0, 3.0, n)  # below the table .. T * 1e3
    edges = np.ldexp(1.0, rng.integers(-40, 10, 50_000)) * t  # cell edges (powers of two)
    x = np.concatenate([
        magnitude * rng.choice([-1.0, 1.0], n),
        rng.uniform(-0.02 * t, 1.2 * t, n),
        np.concatenate([edges, -edges, np.nextafter(edges, 0), np.nextafter(-edges, 0)]),
        [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300],
    ])
    expected = ref(x, t=t, m=m, w=w, a=a)
    got = cls(t=t, w=w, m=m, a=a).apply(x)
    assert got.dtype == np.float64
    err = np.abs(got - expected)
    assert np.max(err) <= 1e-13, (np.max(err), x[np.argmax(err)])
    # past the table (T * 2**40) flowutils cannot solve; the closed-form inverse must
    # give the data back to double precision
    huge = np.ldexp(1.0, rng.integers(30, 990, 10_000)) * rng.uniform(1.0, 2.0, 10_000)
    huge = np.concatenate([huge, -huge])
    xf = cls(t=t, w=w, m=m, a=a)
    np.testing.assert_allclose(xf.inverse(xf.apply(huge)), huge, rtol=1e-12, atol=0)


def test_non_finite_inputs():
    for xf in (LogicleTransform(), HyperlogTransform()):
        for dtype in (np.float32, np.float64):
            y = xf.apply(np.array([np.nan, np.inf, -np.inf, 1.0], dtype=dtype))
            assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf and np.isfinite(y[3])


@pytest.mark.parametrize("factory,message", [
    (lambda: LinearTransform(t=0), "T must be > 0"),
    (lambda: LinearTransform(t=100, a=-100), r"T \+ A"),
    (lambda: LogTransform(m=0), "M must be > 0"),
    (lambda: AsinhTransform(a=5, m=4.5), "A must be in"),
    (lambda: AsinhTransform(a=-0.1), "A must be in"),
    (lambda: LogicleTransform(t=-1), "T must be > 0"),
    (lambda: LogicleTransform(w=3, m=4.5), "W must be <= M/2"),
    (lambda: LogicleTransform(w=-0.1), "W must be >= 0"),
    (lambda: LogicleTransform(w=0.5, a=-0.6), "A must be in"),
    (lambda: LogicleTransform(w=1, m=4.5, a=3), "A must be in"),
    (lambda: LogicleTransform(m=float("nan")), "must be finite"),
    (lambda: LogicleTransform(t="abc"), "not a number"),
    (lambda: HyperlogTransform(w=0), "W must be > 0"),
    (lambda: FlowJoBiexTransform(width=10), "width basis"),
    (lambda: FlowJoBiexTransform(length=64), "length=256"),
    (lambda: FlowJoLogTransform(offset=0), "offset"),
    (lambda: BoundedTransform(LinearTransform(), 1.0, 0.0), "boundMin"),
    (lambda: transform_from_spec("spline"), "unknown transform kind"),
    (lambda: transform_from_spec("logicle", q=3), "bad parameters"),
])
def test_invalid_parameters_raise(factory, message):
    with pytest.raises(TransformError, match=message):
        factory()


def test_bounded_transform_clips_scale_values():
    inner = LinearTransform(t=1000, a=0)
    xf = BoundedTransform(inner, lower=0.0, upper=1.0)
    np.testing.assert_allclose(xf.apply([-500, 0, 250, 1000, 5000]), [0, 0, 0.25, 1, 1])
    np.testing.assert_allclose(xf.inverse([-1, 0.5, 2]), [0, 500, 1000])
    one_sided = BoundedTransform(LogTransform(t=1000, m=3), lower=0.0)
    np.testing.assert_allclose(one_sided.apply([0.1, 10, 1e6]), [0, 1 / 3, 2])
    assert xf.describe() == {"kind": "flin", "t": 1000.0, "a": 0.0, "bound_min": 0.0, "bound_max": 1.0}


def test_spec_factory_and_describe_round_trip():
    for xf in ALL + [LogTransform(t=1e4, m=4), FlowJoLogTransform(offset=2, decades=4),
                     BoundedTransform(AsinhTransform(), -0.1, 1.1)]:
        again = transform_from_spec(**xf.describe())
        assert again == xf and hash(again) == hash(xf)
        assert isinstance(again, Transform)
    lg = transform_from_spec("logicle", T=262144, W=0.5, M=4.5, A=0, boundMin=0, boundMax=1)
    assert isinstance(lg, BoundedTransform) and isinstance(lg.inner, LogicleTransform)
    assert transform_from_spec("linear", t=5, a=0) == LinearTransform(t=5)
    assert transform_from_spec("log", t=5, m=1) == LogTransform(t=5, m=1)
    assert transform_from_spec("asinh", t=5, m=1, a=0) == AsinhTransform(t=5, m=1)
    assert transform_from_spec("biex", neg=1, width=-10, pos=4.41854, maxRange=262144) == FlowJoBiexTransform(
        negative=1, width=-10, positive=4.41854, max_value=262144)
    assert FlowJoAsinhTransform is AsinhTransform
    tagged = LogicleTransform(id="Logicle_10000_0.5_4.5_0")
    assert tagged.describe()["id"] == "Logicle_10000_0.5_4.5_0"
    assert transform_from_spec(**tagged.describe()).id == tagged.id
    assert LogicleTransform(t=1000) != LogicleTransform(t=1001)
