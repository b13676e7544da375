"""The options a plan ranks, from three sources, each labelled with its basis:
- ``measured``: a record as it ran (offline: its throughput under the demand's load form; serving: one
  replica under an offered load, p95 TTFT/TPOT);
- ``projected`` from a measured record: the same configuration on a profile nobody measured, carried by
  the roofline (effbench.analysis.transfer; a CPU run reaches a GPU only with ``project_from_cpu``);
- for a model effbench ships the architecture of (``arch:NAME``), on GPUs nobody measured it on:
  ``reference`` where the published reference data has that exact configuration, else ``projected`` by
  the GPU step-time model fitted to it (effbench.analysis.projection, with its 95% band), for 1, 2, 4
  and 8 GPUs per replica at the concurrency that serves most within the limits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from effbench.analysis.transfer import CPU_TO_GPU_BAND, nearest, project_record
from effbench.errors import EffbenchError
from effbench.planner.demand import PlanRequest
from effbench.planner.economics import economics, price_fields
from effbench.planner.option import PlanOption, build_option
from effbench.planner.quality import Rises, scheme_rises

if TYPE_CHECKING:  # pragma: no cover - the catalog, schema and run store load when a plan is computed
    from effbench.hardware import HardwareProfile, PriceOverride
    from effbench.results.hardware import Profiles
    from effbench.results.run import Run
    from effbench.results.schema import Record

CONCURRENCY_CANDIDATES = (1, 8, 16, 32, 64, 128, 256, 512)
DEFAULT_WORKLOAD = "lm-arena-chat"  # the request shape of a tokens/s target on reference/projected options
Measured = dict[tuple, list[tuple["Record", "HardwareProfile"]]]  # a configuration -> its records and their profiles


# -- measured records, and their roofline projections -----------------------------------------
def catalog_profile(record: Record, prices: dict[str, PriceOverride]) -> Optional[HardwareProfile]:
    """A record given without its run (the Python API): its profile id in the catalog, never this machine."""
    if not record.hardware.profile:
        return None
    from effbench.hardware import get_profile

    try:
        return get_profile(record.hardware.profile, prices, measure=False, local=False)
    except EffbenchError:
        return None


def measured_options(records: Sequence[Record], req: PlanRequest, resolved: Profiles, wanted: Optional[set[str]],
                     rises: Rises, found: Candidates) -> tuple[Measured, dict[str, set[str]]]:
    """Each record as measured, on its run's profile (else its profile id in the catalog), into ``found``;
    returns the offline records that have a profile, by configuration (what the roofline projects from),
    and the profiles each model was measured on."""
    from effbench.results.hardware import hardware_id

    measured: Measured = {}
    measured_ids: dict[str, set[str]] = {}  # model id -> profiles it was measured on
    for r in records:
        what = f"{r.model.id} {r.quantization.scheme} b{r.workload.batch_size}"
        stored = resolved.of(r)
        hw_id = hardware_id(r, stored)
        if r.error:
            found.excluded.append(f"{what} on {hw_id}: failed ({r.error})")
            continue
        profile = stored or catalog_profile(r, req.prices)
        measured_ids.setdefault(r.model.id, set()).add(hw_id)
        if profile is not None and r.serving is None:  # serving points are not roofline-projected
            w = r.workload
            cfg = (r.model.id, r.backend.name, r.quantization.scheme, w.batch_size, w.prompt_tokens, w.new_tokens)
            measured.setdefault(cfg, []).append((r, profile))
        if wanted is not None and hw_id not in wanted:
            continue
        notes = [] if profile else [f"no hardware profile for '{hw_id}': no price, TDP or memory size"]
        opt, why = build_option(r, hw_id, profile, req, notes=notes, rises=rises)
        found.add(opt, f"{what} on {hw_id}: {why}")
    return measured, measured_ids


def roofline_options(measured: Measured, targets: Sequence[HardwareProfile], req: PlanRequest, rises: Rises,
                     found: Candidates) -> int:
    """Each measured configuration on each target, carried from its nearest measured device by the
    roofline, into ``found``; returns how many CPU-to-GPU projections were left out (no ``project_from_cpu``)."""
    cpu_skipped = 0
    for target in targets:
        for refs in measured.values():
            if arch_name(refs[0][0].model.id) and target.kind == "gpu":
                continue  # a shipped architecture on a GPU: the fitted GPU model (arch_options), not another device's roofline
            near = nearest(refs, target)
            if near is None:
                continue
            ref_record, ref_profile = near
            band = None
            if ref_profile.kind != target.kind:
                if not req.project_from_cpu:
                    cpu_skipped += 1
                    continue
                band = dict(CPU_TO_GPU_BAND)
            virtual, notes = project_record(ref_record, ref_profile, target)
            what = (f"{ref_record.model.id} {ref_record.quantization.scheme} b{ref_record.workload.batch_size} on {target.id} "
                    "(projected)")
            if virtual is None:
                found.excluded.append(f"{what}: {notes[0]}")
                continue
            opt, why = build_option(virtual, target.id, target, req, "projected", ref_profile.id, notes, band=band, rises=rises)
            found.add(opt, f"{what}: {why}")
    return cpu_skipped


# -- models nobody measured here: the reference data and the GPU projection model -------------------
def arch_name(model_id: Optional[str]) -> Optional[str]:
    """The architecture a model id names: a shipped name (``arch:NAME``), or the path of a Hugging Face
    config.json (``arch:PATH``, the file or its folder; as ``effbench project`` takes it); else None."""
    from pathlib import Path

    from effbench.models.arch import PREFIX, catalog

    if not model_id or not model_id.lower().startswith(PREFIX):
        return None
    name = model_id[len(PREFIX):]
    if name.lower() in catalog():
        return name.lower()
    path = Path(name).expanduser()
    path = path / "config.json" if path.is_dir() else path
    return str(path) if name and path.is_file() else None


def _config_location(name: str) -> str:
    """Where ``config_dict`` reads an architecture ``arch_name`` returned: the shipped copy, or the file."""
    from effbench.models.arch import PREFIX, catalog

    return f"{PREFIX}{name}" if name in catalog() else name


def known_arch(model_id: Optional[str]) -> Optional[str]:
    """The shipped architecture of a record's model: ``arch:NAME``, or a model id that is a shipped
    name or its Hugging Face id (the bundled smollm2-135m) - for its maximum context."""
    from effbench.models.arch import catalog

    if not model_id:
        return None
    found = arch_name(model_id)
    if found:
        return found
    low = model_id.lower()
    return next((n for n, e in catalog().items() if low in (n, e.hf_id.lower())), None)


def _projected_schemes(profile: HardwareProfile, native: Optional[str] = None) -> list[str]:
    """The weight formats a replica of this GPU is sized for: bf16 (fp16 where it has no bf16), fp8
    where it has fp8 tensor cores, and the format the model's own checkpoint ships in (``native``:
    gpt-oss's mxfp4 experts) where the GPU runs it."""
    from effbench.analysis.projection import scheme_runs_on

    half = "bf16" if scheme_runs_on("bf16", profile) else ("fp16" if scheme_runs_on("fp16", profile) else None)
    return list(dict.fromkeys(s for s in (half, "fp8", native) if s and scheme_runs_on(s, profile)))


def _native_scheme(name: str) -> Optional[str]:
    """The weight format of the architecture's own checkpoint where it is not bf16 (its config's
    quantization_config: gpt-oss ships mxfp4 experts)."""
    from effbench.analysis.projection import WEIGHT_BYTES
    from effbench.models.arch import config_dict

    try:
        q = (config_dict(_config_location(name)).get("quantization_config") or {}).get("quant_method")
    except EffbenchError:
        return None
    return q if q in WEIGHT_BYTES else None


def _request_shape(req: PlanRequest, arch: str) -> tuple[int, int, Optional[str], list[str]]:
    """(prompt tokens, output tokens, reference task or None, notes) of the demand's requests."""
    from effbench.reference import workload

    d = req.demand
    if d.prompt_tokens is not None and d.output_tokens is not None:
        return d.prompt_tokens, d.output_tokens, req.workload, []
    w = workload(req.workload or DEFAULT_WORKLOAD, arch)
    return w.prompt_tokens, w.output_tokens, w.name, [f"requests shaped as {w.name}: {w.prompt_note}"]


def arch_options(name: str, targets: Sequence[HardwareProfile], req: PlanRequest) -> tuple[list[PlanOption], list[str]]:
    """Options for an architecture on GPUs: per (GPU, GPUs per replica, scheme), the concurrency that
    serves the most while its p95 inter-token latency (the projected percentile, or the published
    one) meets the limit; the reference data where it has that point, else projected. The points come
    from one grid projection (effbench.analysis.projection.project_grid) per set of weight formats,
    each replica's concurrencies capped at its KV-capacity limit."""
    from effbench.analysis.projection import TP_SIZES, Config, fit_shortfall, project_grid
    from effbench.models.stepshape import of

    arch = of(name)
    prompt, output, task, shape_notes = _request_shape(req, name)
    workload = task if task is not None and req.demand.prompt_tokens is None else None
    gpus_of = [p for p in targets if p.kind == "gpu"]
    native = _native_scheme(name)
    by_schemes: dict[tuple[str, ...], list[HardwareProfile]] = {}
    for prof in gpus_of:
        by_schemes.setdefault(tuple(_projected_schemes(prof, native)), []).append(prof)
    points: dict[tuple[str, int, str], list] = {}
    for schemes, profs in by_schemes.items():
        if not schemes:
            continue
        grid = project_grid([f"arch:{name}"], profs, TP_SIZES, CONCURRENCY_CANDIDATES,
                            None if workload else prompt, None if workload else output, schemes, workload=workload,
                            kv_limited=True)
        for g in grid:
            points.setdefault((g.hardware, g.gpus, g.scheme), []).append(g)
    options: list[PlanOption] = []
    excluded: list[str] = []
    for prof in gpus_of:
        for gpus in (g for g in TP_SIZES if g <= prof.max_gpus_per_node):
            for scheme in _projected_schemes(prof, native):
                what = f"arch:{name} {scheme} on {gpus}x {prof.id}"
                if arch.heads % gpus:
                    excluded.append(f"{what}: {gpus} GPUs do not divide its {arch.heads} attention heads")
                    continue
                row = points.get((prof.id, gpus, scheme), [])
                if not row or all(g.result == {} for g in row):
                    if gpus == 1 or scheme == "bf16":
                        reason, _ = fit_shortfall(Config(arch, prof, gpus, 1, prompt, output, scheme))
                        excluded.append(f"{what}: does not fit ({reason})")
                    continue
                best, why = _best_concurrency(row, prof, req, shape_notes)
                if best is None:
                    excluded.append(f"{what}: {why or 'no concurrency meets the limits'}")
                else:
                    options.append(best)
    return options, excluded


def _best_concurrency(row: list, prof: HardwareProfile, req: PlanRequest,
                      shape_notes: list[str]) -> tuple[Optional[PlanOption], str]:
    """The candidate concurrency (one grid row, ascending) serving the most within the limits (p95 TPOT
    from the predicted p95 inter-token latency, never the median), and why the next one up failed."""
    best: Optional[PlanOption] = None
    why = ""
    for g in sorted(row, key=lambda g: g.concurrency):
        if not g.result:
            why = g.error or why
            continue
        r = g.result
        tpot = r["tpot_p95_ms"]
        if req.max_tpot_ms is not None and tpot > req.max_tpot_ms:
            why = f"p95 TPOT {tpot:,.1f} ms > {req.max_tpot_ms:g} ms at concurrency {g.concurrency}"
            break  # higher concurrency only lengthens the step
        if req.max_ttft_ms is not None:
            why = "TTFT is not projected (drop --max-ttft-ms, or measure a serving run)"
            break
        opt = _option_from_point(r, prof, tpot, req, shape_notes)
        if best is None or opt.capacity_tokens_per_s > best.capacity_tokens_per_s:
            best = opt
    return best, why


def _option_from_point(r: dict, prof: HardwareProfile, tpot_p95: float, req: PlanRequest, shape_notes: list[str]) -> PlanOption:
    gpus = r["gpus"]
    cap = r["output_tokens_per_s"]
    price, spot, price_date, stale = price_fields(prof, gpus, req)
    eco = economics(cap, price, spot, r["power_w"], req)
    notes = [*shape_notes, *r["notes"]]
    if r["basis"] == "reference":
        notes.append(f"reference: published, not measured by effbench ({r['reference_key']}); "
                     "TPOT is the published p95 inter-token latency")
    else:
        b = r["band"]
        notes.append(f"projected from the GPU step-time model fitted to the reference data; 95% band: "
                     f"tokens/s x/÷ {1 + b['output_tokens_per_s']:.2f}, J/token x/÷ {1 + b['joules_per_token']:.2f} "
                     f"({b['method']}); TPOT = projected p95 inter-token latency "
                     f"({tpot_p95:.1f} ms; median {r['tpot_ms']:.1f} ms); "
                     f"{r['effective_batch']:.0f} sequences running, KV cache room for {r['kv_capacity_sequences']:.0f}")
    if price is None:
        notes.append(f"no price: pass --price {prof.id}=USD_PER_HOUR")
    return PlanOption(
        hardware=prof.id, hardware_name=prof.name, basis=r["basis"], model=r["model"], backend="vllm", scheme=r["scheme"],
        batch_size=r["concurrency"], capacity_tokens_per_s=cap, replicas=eco.replicas, utilisation=eco.utilisation,
        ttft_ms=None, tpot_ms=tpot_p95, price_per_hour_usd=price, usd_per_hour=eco.usd_per_hour, usd_per_month=eco.usd_per_month,
        usd_per_million_tokens=eco.usd_per_million_at_target, power_w=r["power_w"],
        power_basis="reference" if r["basis"] == "reference" else "projected", kwh_per_month=eco.kwh_per_month,
        kg_co2e_per_month=eco.kg_co2e_per_month, memory_gb=r["memory_capacity_gb"], peak_memory_gb=r["memory_gb"],
        memory_headroom_gb=r.get("device_memory_gb", r["memory_capacity_gb"]) - r["memory_gb"], price_source=prof.price_source,
        projected_from="reference fit" if r["basis"] == "projected" else None, notes=notes, random_weights=False,
        serving_load=f"{r['running_sequences']:.0f} seqs", gpus_per_replica=gpus, active_replicas=eco.active_replicas,
        usd_per_million_tokens_at_capacity=eco.usd_per_million_at_capacity, spot_price_per_hour_usd=spot,
        spot_usd_per_month=eco.spot_usd_per_month, price_date=price_date, price_stale=stale,
        joules_per_token=r["joules_per_token"], band=r["band"] if r["basis"] == "projected" else None, source=r["source"],
        kv_max_concurrency=r["max_concurrency"])


# -- all of them --------------------------------------------------------------------------------
@dataclass
class Candidates:
    """What ranking starts from: every option, why each configuration left out was left out, warnings."""

    options: list[PlanOption] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, option: Optional[PlanOption], why: str) -> None:
        if option:
            self.options.append(option)
        else:
            self.excluded.append(why)


def candidates(records: Sequence[Record], req: PlanRequest, resolved: Profiles, catalog: Sequence[HardwareProfile],
               wanted: Optional[set[str]], archs: Sequence[str]) -> Candidates:
    """Every option for the request, in this order: the measured records, their roofline projections to
    the profiles nobody measured (with ``req.projections``), then the architectures ``archs`` on GPUs
    nobody measured them on (reference or projected)."""
    found = Candidates()
    rises = scheme_rises(records)
    measured, measured_ids = measured_options(records, req, resolved, wanted, rises, found)
    all_measured: set[str] = set().union(*measured_ids.values()) if measured_ids else set()
    cpu_skipped = 0
    if req.projections:
        targets = [p for p in catalog if p.id not in all_measured and (wanted is None or p.id in wanted)]
        cpu_skipped = roofline_options(measured, targets, req, rises, found)
        for name in archs:
            done = measured_ids.get(f"arch:{name}", set())
            gpus = [p for p in catalog if p.kind == "gpu" and p.id not in done and (wanted is None or p.id in wanted)]
            more, why = arch_options(name, gpus, req)
            found.options += more
            found.excluded += why
    if cpu_skipped:
        why_cpu = (f"{cpu_skipped} projection(s) of a CPU run to a GPU left out: a CPU's roofline fraction says little "
                   "about a GPU; --project-from-cpu shows them, with a wide band")
        found.warnings.append(why_cpu)
        found.excluded.append(why_cpu)
    return found


# -- the runs ----------------------------------------------------------------------------------
def load_runs(dirs: Sequence[str | Path]) -> list[Run]:
    """The run directories (or their results.jsonl files), each read by ``results.load_run``. A run
    without records is an error naming it."""
    from effbench.results.run import load_run

    if not dirs:
        raise EffbenchError("no results given: pass --results DIR (a run directory from 'effbench run')")
    runs = []
    for d in dirs:
        run = load_run(d)
        if not run.records:
            raise EffbenchError(f"{d} holds no records yet (results.jsonl is empty); pass a run that finished a configuration")
        runs.append(run)
    return runs


def load_records(dirs: Sequence[str | Path]) -> list[Record]:
    return [r for run in load_runs(dirs) for r in run.records]
