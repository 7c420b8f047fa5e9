"""Statistics of QMCPACK ``scalar.dat``/``dmc.dat`` files, exactly as QMCPACK's ``qmca``.

A QMC label is only as good as its error bar, and an error bar that differs from
the one QMCPACK's own tool reports would make labels from this project
incomparable with everyone else's. This module therefore follows qmca's
definitions step by step:

* equilibration: the first ``nbe`` blocks of each series are dropped, either an
  explicit count (one for all series, or one per series) or an automatic length
  from qmca's "bounce" heuristic;
* statistics of a trace: unweighted mean, variance with ddof 0, autocorrelation
  time ``kappa = 1 + 2 * sum(rho_i)`` over lags up to the first non-positive
  autocorrelation ``rho_i``, and ``error = sqrt(var * kappa / N)``;
* ``Variance`` is the trace ``LocalEnergy_sq - LocalEnergy**2``, analysed like
  any other quantity; ``CorrectedEnergy`` replaces the Ewald electron-electron
  term by the MPC one (plus ``KEcorr`` when present);
* twist averaging: the raw traces of all twists are averaged row by row with the
  weights (truncated to the shortest file), then cut and analysed;
* joining: series A..B are concatenated, each later series after dropping its
  own equilibration, and the joined series is analysed with series A's cut.

The one deliberate difference: qmca picks the automatic equilibration length at
random inside the final bounce interval; here it is the interval's end, so that
an analysis is reproducible (and discards at least as much as qmca would).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from mfal.errors import MfalError

#: qmca's abbreviations for quantity names (``-q e``, ``-q ev``, ``-q 'e k p'``).
QUANTITY_ABBREVIATIONS = {
    "e": "LocalEnergy", "v": "Variance", "k": "Kinetic", "p": "LocalPotential",
    "ee": "ElecElec", "ii": "IonIon", "l": "LocalECP", "n": "NonLocalECP",
    "ce": "CorrectedEnergy", "mpc": "MPC", "kc": "KEcorr", "bw": "BlockWeight",
    "bc": "BlockCPU", "ar": "AcceptRatio", "eff": "Efficiency", "te": "TrialEnergy",
    "de": "DiffEff", "w": "Weight", "nw": "NumOfWalkers", "sw": "AvgSentWalkers",
    "tt": "TotalTime", "ts": "TotalSamples", "le2": "LocalEnergy_sq", "fl": "Flux",
}

# Display order of qmca's "all quantities" listing: these first, the rest sorted, then these.
_FIRST = "LocalEnergy Variance Kinetic LocalPotential ElecElec LocalECP NonLocalECP IonIon".split()
_LAST = ("MPC KEcorr BlockWeight BlockCPU AcceptRatio Efficiency TotalTime TotalSamples "
         "TrialEnergy DiffEff Weight NumOfWalkers LivingFraction AvgSentWalkers "
         "CorrectedEnergy").split()
_WHOLE_NUMBERS = {"TotalSamples", "NumOfWalkers"}
_NON_EE_POTENTIALS = ["IonIon", "LocalECP", "NonLocalECP", "ElecIon", "IonElec"]
_SERIES_TOKEN = re.compile(r"^s(\d{3})$")
_EXTENSIONS = {"scalar": "scalar.dat", "dmc": "dmc.dat"}


class QmcaError(MfalError):
    """A QMCPACK output file or an analysis option cannot be used as given."""


class ScalarFileError(QmcaError):
    """A ``scalar.dat``/``dmc.dat`` file is missing, empty, ragged or not numeric."""


@dataclass(frozen=True)
class Stats:
    """Mean, variance (ddof 0), error bar and autocorrelation time of one trace."""

    mean: float
    var: float
    error: float
    kappa: float


@dataclass
class Series:
    """One QMCPACK output series: its name parts and raw per-block traces (Hartree)."""

    path: str
    prefix: str
    series: int
    kind: str
    data: dict[str, np.ndarray]

    @property
    def nblocks(self) -> int:
        return len(next(iter(self.data.values())))


@dataclass
class SeriesResult:
    """Statistics of one (possibly averaged or joined) series after its equilibration cut."""

    prefix: str
    series: int
    equilibration: int
    nblocks: int
    stats: dict[str, Stats] = field(default_factory=dict)


def simstats(x: np.ndarray) -> Stats:
    """qmca's statistics of a 1-D trace: mean, ddof-0 variance, kappa and error bar."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    mean = x.mean()
    var = x.var()
    if abs(var) < 1e-15:
        kappa = 1.0
    else:
        kappa = 0.0
        rho = 0.5
        lag = 0
        while rho > 0 and lag < n - 1:
            kappa += 2.0 * rho
            lag += 1
            rho = np.sum((x[: n - lag] - mean) * (x[lag:] - mean)) / var / (n - lag)
        if kappa == 0.0:
            kappa = 1.0
    neff = n / kappa
    return Stats(mean=float(mean), var=float(var), error=float(math.sqrt(var / neff)),
                 kappa=float(kappa))


def equilibration_length(x: np.ndarray, tail: float = 0.5, bounces: int = 2) -> int:
    """Automatic equilibration length by qmca's bounce heuristic (deterministic end point).

    A band ``median +/- sigma`` is taken from the last ``tail`` of the trace; when
    the trace starts outside it, the cut is placed after the trace has crossed the
    band ``2 * bounces`` times.
    """
    x = np.asarray(x, dtype=float)
    bounces = max(1, bounces)
    nx = len(x)
    xt = np.sort(x[int((1.0 - tail) * nx + 0.5):])
    nxt = len(xt)
    if nxt < 10:
        return 0
    mean = xt[int(0.5 * (nxt - 1) + 0.5)]
    sigma = (abs(xt[int((0.5 - 0.341) * nxt + 0.5)] - mean)
             + abs(xt[int((0.5 + 0.341) * nxt + 0.5)] - mean)) / 2
    if abs(x[0] - mean) <= sigma:
        return 0
    crossings = [0, 0] * bounces
    side = -np.sign(x[0] - mean)
    count = 0
    for i in range(nx):
        dist = side * (x[i] - mean)
        if sigma < dist < 5 * sigma:
            crossings[count] = i
            side *= -1
            count += 1
            if count == 2 * bounces:
                break
    first, last = crossings[-2:]
    return int(max(first, last))


def read_series(path: str | os.PathLike) -> Series:
    """Read a ``*.sNNN.scalar.dat`` or ``*.sNNN.dmc.dat`` file, checking it is complete.

    Raises :class:`ScalarFileError` when the file is missing, has no data rows, a
    row with a different number of columns than the header or a last row without
    its line end (a run killed while writing), or a value that is not a number.
    """
    path = str(path)
    kind = next((k for k, ext in _EXTENSIONS.items() if path.endswith(ext)), None)
    if kind is None:
        raise ScalarFileError(f"{path}: not a QMCPACK output; expected a name ending in "
                              f"{' or '.join(_EXTENSIONS.values())}")
    name = os.path.basename(path)
    series = next((int(m.group(1)) for tok in name.split(".")
                   if (m := _SERIES_TOKEN.match(tok))), None)
    if series is None:
        raise ScalarFileError(f"{path}: no series token (like 's000') in the file name")
    prefix = path.split(".s" + str(series).zfill(3))[0]
    if not os.path.isfile(path):
        raise ScalarFileError(f"{path}: file does not exist")
    with open(path) as handle:
        lines = handle.read().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        # QMCPACK ends every row with a newline: without one, the last number may be cut short.
        raise ScalarFileError(f"{path}: the last line has no line end (truncated file)")
    header = lines[0].split() if lines else []
    rows = [line.split() for line in lines[1:] if line.strip()]
    if len(header) < 3 or header[0] != "#":
        raise ScalarFileError(f"{path}: first line is not a QMCPACK column header")
    names = header[2:]
    if not rows:
        raise ScalarFileError(f"{path}: no data rows")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(names) + 1:
            raise ScalarFileError(
                f"{path}: line {number} has {len(row)} columns, header has {len(names) + 1} "
                "(truncated file)")
    try:
        table = np.array(rows, dtype=float)
    except ValueError as exc:
        raise ScalarFileError(f"{path}: non-numeric value ({exc})") from None
    data = {name_: table[:, i + 1].copy() for i, name_ in enumerate(names)}
    return Series(path=path, prefix=prefix, series=series, kind=kind, data=data)


def series_statistics(data: Mapping[str, np.ndarray], nbe: int) -> dict[str, Stats]:
    """qmca's analysis of one series' traces after dropping the first ``nbe`` blocks."""
    data = dict(data)
    nblocks = len(next(iter(data.values())))
    if nbe < 0:
        raise QmcaError(f"equilibration length cannot be negative; got {nbe}")
    if nbe >= nblocks:
        raise QmcaError(f"equilibration length {nbe} is not less than the number of "
                        f"blocks ({nblocks})")
    stats = {name: simstats(trace[nbe:]) for name, trace in data.items()}
    if "LocalEnergy_sq" in data and "LocalEnergy" in data:
        stats["Variance"] = simstats((data["LocalEnergy_sq"] - data["LocalEnergy"] ** 2)[nbe:])
    corrected = _corrected_energy(data)
    if corrected is not None:
        stats["CorrectedEnergy"] = simstats(corrected[nbe:])
    _add_totals(data, stats, nbe)
    return stats


def _corrected_energy(data: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """LocalEnergy with the MPC electron-electron term (and KEcorr), as qmca builds it."""
    if "LocalEnergy" not in data or not ("MPC" in data or "KEcorr" in data):
        return None
    recovered = False
    if "Kinetic" in data:
        non_ee = data["Kinetic"].copy()
        for pot in _NON_EE_POTENTIALS:
            if pot in data:
                non_ee += data[pot]
        reference = data["LocalEnergy"].sum()
        for ee in ("ElecElec", "MPC"):
            if ee in data:
                total = (non_ee + data[ee]).sum()
                recovered |= abs((total - reference) / reference) < 1e-8
        if recovered:
            corrected = non_ee
            if "MPC" in data:
                corrected = corrected + data["MPC"]
            elif "ElecElec" in data:
                corrected = corrected + data["ElecElec"]
    if not recovered:
        corrected = data["LocalEnergy"].copy()
        if "MPC" in data and "ElecElec" in data:
            corrected = corrected + data["MPC"] - data["ElecElec"]
    if "KEcorr" in data:
        corrected = corrected + data["KEcorr"]
    return corrected


def _add_totals(data: Mapping[str, np.ndarray], stats: dict[str, Stats], nbe: int) -> None:
    """TotalSamples, TotalTime and Efficiency, which qmca lists with zero error."""
    def exact(value: float) -> Stats:
        return Stats(mean=float(value), var=0.0, error=0.0, kappa=1.0)

    if "NumOfWalkers" in data:
        stats["TotalSamples"] = exact(data["NumOfWalkers"].sum())
    if "BlockWeight" in data:
        stats["TotalSamples"] = exact(data["BlockWeight"][nbe:].sum())
    if "BlockCPU" in data:
        stats["TotalTime"] = exact(data["BlockCPU"][nbe:].sum())
    if {"LocalEnergy", "BlockWeight", "BlockCPU"} <= data.keys():
        error = stats["LocalEnergy"].error
        work = (data["BlockCPU"][nbe:] * data["BlockWeight"][nbe:]).sum() / 3600
        stats["Efficiency"] = exact(1.0 / (error**2 * work) if error > 0 else 0.0)


def twist_average(series: Sequence[Series], weights: Sequence[float] | None = None,
                  prefix: str = "avg") -> Series:
    """Row-wise weighted average of the raw traces of several twists of one series.

    Traces are truncated to the shortest file, as qmca does; the statistics are
    then taken on the averaged trace.
    """
    if not series:
        raise QmcaError("twist averaging needs at least one series")
    weights = [1.0] * len(series) if weights is None else [float(w) for w in weights]
    if len(weights) != len(series):
        raise QmcaError(f"one weight per file is needed for averaging: got {len(weights)} "
                        f"weights for {len(series)} files")
    if sum(weights) == 0:
        raise QmcaError(f"twist weights sum to zero: {weights}")
    names = series[0].data.keys()
    for other in series[1:]:
        if other.data.keys() != names:
            raise QmcaError(f"{other.path} has different columns than {series[0].path}; "
                            "cannot average them")
    length = min(s.nblocks for s in series)
    total = sum(weights)
    data = {name: sum(w * s.data[name][:length] for w, s in zip(weights, series)) / total
            for name in names}
    first = series[0]
    return replace(first, path=first.path.replace(first.prefix, prefix), prefix=prefix,
                   data=data)


def join_series(series: Sequence[Series], equilibrations: Sequence[int]) -> Series:
    """Concatenate series, each after the first cut by its own equilibration length.

    The first series keeps all its blocks; its own cut is applied when the joined
    series is analysed.
    """
    first = series[0]
    data = {name: np.concatenate([first.data[name]]
                                 + [s.data[name][nbe:] for s, nbe
                                    in zip(series[1:], equilibrations[1:])])
            for name in first.data}
    return replace(first, data=data)


def qmca(paths: Sequence[str | os.PathLike], equilibration: int | Sequence[int] | str = "auto",
         average: bool = False, weights: Sequence[float] | None = None,
         join: tuple[int, int] | None = None) -> list[SeriesResult]:
    """Analyse QMCPACK output files as ``qmca [-e] [-a] [-w] [-j] FILES`` does.

    ``equilibration`` is ``"auto"``, one count for every series, or one count per
    series number (0, 1, ...). Results come in qmca's order: by prefix as the
    sorted file names introduce them, then by series.
    """
    if not paths:
        raise QmcaError("no files to analyse")
    if weights is not None and not average:
        raise QmcaError("weights only apply to twist averaging (-a)")
    order = np.argsort([str(p) for p in paths], kind="stable")
    if weights is not None and len(weights) == len(paths):
        weights = [float(weights[i]) for i in order]
    paths = [str(paths[i]) for i in order]
    by_prefix: dict[str, dict[int, Series]] = {}
    for path in paths:
        item = read_series(path)
        by_prefix.setdefault(item.prefix, {})[item.series] = item
    if average:
        by_prefix = _average_prefixes(by_prefix, weights)
    eq = _equilibration_map(equilibration)
    if join is not None:
        by_prefix, eq = _join_prefixes(by_prefix, eq, join)
    results = []
    for prefix, by_series in by_prefix.items():
        for number in sorted(by_series):
            item = by_series[number]
            nbe = _equilibration_for(eq, item)
            try:
                stats = series_statistics(item.data, nbe)
            except QmcaError as exc:  # e.g. a cut file: say which one
                raise QmcaError(f"{item.path}: {exc}") from None
            results.append(SeriesResult(prefix=prefix, series=number, equilibration=nbe,
                                        nblocks=item.nblocks, stats=stats))
    return results


def _equilibration_map(equilibration) -> int | dict[int, int] | str:
    if isinstance(equilibration, str):
        if equilibration != "auto":
            raise QmcaError(f"equilibration must be 'auto', a count, or one count per "
                            f"series; got {equilibration!r}")
        return equilibration
    if isinstance(equilibration, (int, np.integer)):
        counts = [int(equilibration)]
    else:
        counts = [int(e) for e in equilibration]
    if any(c < 0 for c in counts):
        raise QmcaError(f"equilibration lengths cannot be negative; got {counts}")
    return counts[0] if len(counts) == 1 else dict(enumerate(counts))


def _equilibration_for(eq, item: Series) -> int:
    if eq == "auto":
        return equilibration_length(item.data["LocalEnergy"]) if "LocalEnergy" in item.data else 0
    if isinstance(eq, int):
        return eq
    if item.series not in eq:
        raise QmcaError(f"no equilibration length given for series {item.series} "
                        f"({item.path}); give one per series")
    return eq[item.series]


def _average_prefixes(by_prefix, weights):
    """Group twists for averaging the way qmca does and average each group per series."""
    prefixes = sorted(by_prefix)
    all_series = sorted({s for group in by_prefix.values() for s in group})
    for prefix in prefixes:
        missing = set(all_series) - set(by_prefix[prefix])
        if missing:
            raise QmcaError(f"files with prefix {prefix} lack series {sorted(missing)} "
                            "that other prefixes have; cannot average")
    batches: dict[str, list[str]] = {}
    for prefix in prefixes:
        head, tail = os.path.split(prefix)
        batches.setdefault(os.path.join(head, tail.split(".")[0]), []).append(prefix)
    if weights is not None or len(batches) == 1:
        if weights is not None and len(weights) != len(prefixes):
            raise QmcaError(f"one weight per file prefix is needed: got {len(weights)} "
                            f"weights for {len(prefixes)} prefixes {prefixes}")
        batches = {"avg": prefixes}
    averaged = {}
    for name, members in batches.items():
        batch_weights = weights if name == "avg" and weights is not None else None
        averaged[name] = {s: twist_average([by_prefix[p][s] for p in members],
                                           batch_weights, prefix=name)
                          for s in all_series}
    return averaged


def _join_prefixes(by_prefix, eq, join):
    start, stop = (int(j) for j in join)
    numbers = list(range(start, stop + 1))
    if len(numbers) < 2:
        return by_prefix, eq
    shift = stop - start
    joined = {}
    for prefix, by_series in by_prefix.items():
        missing = [s for s in numbers if s not in by_series]
        if missing:
            raise QmcaError(f"cannot join series {start}..{stop}: series {missing} missing "
                            f"for {prefix}")
        parts = [by_series[s] for s in numbers]
        cuts = [0 if eq == "auto" else _equilibration_for(eq, p) for p in parts]
        renumbered = {s: item for s, item in by_series.items() if s < start}
        renumbered[start] = join_series(parts, cuts)
        for s, item in by_series.items():
            if s > stop:
                renumbered[s - shift] = replace(item, series=s - shift)
        joined[prefix] = renumbered
    if isinstance(eq, dict):
        eq = {(s - shift if s > stop else s): v for s, v in eq.items()
              if not start < s <= stop}
    return joined, eq


def parse_quantities(text: str) -> list[str] | None:
    """Quantity names from qmca's ``-q`` syntax; ``None`` means all quantities."""
    names: list[str] = []
    for token in text.split():
        lower = token.lower()
        if lower == "all":
            return None
        if token in QUANTITY_ABBREVIATIONS.values():
            names.append(token)
        elif lower in QUANTITY_ABBREVIATIONS:
            names.append(QUANTITY_ABBREVIATIONS[lower])
        else:
            rest = lower
            for abbreviation in sorted(QUANTITY_ABBREVIATIONS):
                if abbreviation in rest:
                    names.append(QUANTITY_ABBREVIATIONS[abbreviation])
                    rest = rest.replace(abbreviation, "")
            if rest or not names:
                raise QmcaError(f"{token!r} is not a quantity; use a name or abbreviation "
                                f"from {QUANTITY_ABBREVIATIONS}")
    return list(dict.fromkeys(names))


def format_results(results: Sequence[SeriesResult], quantities: Sequence[str] | None = None,
                   precision: str | None = None) -> str:
    """Text that qmca prints for these results (``-q`` quantities, ``--fp`` precision)."""
    if precision is not None:
        try:
            ("{0: " + precision + "}").format(1.234567)
        except ValueError:
            raise QmcaError(f"--fp must be a float format such as 16.8f; got {precision!r}") \
                from None
    lines: list[str] = []
    counts: dict[str, int] = {}
    for r in results:
        counts[r.prefix] = counts.get(r.prefix, 0) + 1
    seen: set[str] = set()
    for r in results:
        first_prefix = not seen
        first_series = r.prefix not in seen
        seen.add(r.prefix)
        only_series = counts[r.prefix] == 1
        if first_series and not only_series:
            lines.append("")
        lines.extend(_result_lines(r, quantities, precision, first_prefix and first_series))
    return "\n".join(lines) + "\n"


def _result_lines(r: SeriesResult, quantities, precision, first) -> list[str]:
    qset = set(quantities) if quantities is not None else None
    head = f"{r.prefix}  series {r.series}"
    if qset is not None and len(qset) == 1:
        name = next(iter(qset))
        return [f"{head}  {_stat_line(name, _require(r, name), precision, '8.6f')}"]
    for pair, title in ((("LocalEnergy", "Variance"), "LocalEnergy"),
                        (("CorrectedEnergy", "Variance"), "CorrectedEnergy")):
        if qset == set(pair):
            out = []
            if first:
                out.append(f"{title:>39}               Variance           ratio")
            values = [_stat_line(q, _require(r, q), precision, "8.6f").split("=")[1].strip()
                      for q in pair]
            energy, variance = (_require(r, q) for q in pair)
            ratio = f"{abs(variance.mean / energy.mean):6.4f}"
            out.append(f"{head}  {values[0]}   {values[1]}   {ratio}")
            return out
    names = set(r.stats) if qset is None else qset
    first_names = [q for q in _FIRST if q in names]
    last_names = [q for q in _LAST if q in names]
    order = first_names + sorted(names - set(first_names) - set(last_names)) + last_names
    out = ["", head]
    for name in order:
        if name not in r.stats:
            continue
        prec = "16.0f" if name in _WHOLE_NUMBERS else "auto"
        line = _stat_line(name, r.stats[name], precision, prec)
        if name == "CorrectedEnergy":
            out.append("  " + "-" * len(line))
        out.append("  " + line)
    return out


def _require(r: SeriesResult, name: str) -> Stats:
    if name not in r.stats:
        raise QmcaError(f"quantity {name} is not in the data for {r.prefix} series {r.series}; "
                        f"present: {sorted(r.stats)}")
    return r.stats[name]


def _stat_line(name: str, s: Stats, precision: str | None, prec: str) -> str:
    if precision is not None:
        template = "{0:<22}=  {1: " + precision + "} +/- {2: " + precision + "}"
    elif prec == "auto":
        digits = 2
        if s.mean != 0.0 and abs(s.error / s.mean) > 1e-8:
            digits = int(max(2, 1 - np.floor(np.log(s.error) / np.log(10.0))))
        template = "{0:<22}=  {1:16." + str(digits) + "f} +/- {2:16." + str(digits) + "f}"
    else:
        template = "{0:<22}=  {1:" + prec + "} +/- {2:" + prec + "}"
    return template.format(name, s.mean, s.error)
