"""The HTML report of a pipeline run: one self-contained file (images and audio inlined), so it opens from a local
store, from an S3 presigned URL or as an e-mail attachment alike.

    html, scores = build_report(store, state, cfg)      # state = pipelines/<name>/state.json with every stage done

Sections: stage table, objective scores, loss curves (GAN, RNN), grid mosaics raw vs linearized, SOM evenness
before/after, audio players (data, GAN samples, grid cells, RNN renders), the lineage graph from the manifests.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
from smf.common.audio import load_audio
from smf.common.errors import NotFound
from smf.common.lineage import read_manifest
from smf.common.store import Store

__all__ = ["build_report", "compute_scores", "svg_lines"]

MAX_DATA_CLIPS = 64  # clips of each set read for the scores (a big dataset is subsampled evenly)


# --- small builders ------------------------------------------------------------------------------------------------
def _esc(x) -> str:
    return html.escape(str(x))


def _audio_tag(wav: bytes, label: str) -> str:
    b64 = base64.b64encode(wav).decode()
    return (
        f'<figure class="snd"><figcaption>{_esc(label)}</figcaption>'
        f'<audio controls preload="none" src="data:audio/wav;base64,{b64}"></audio></figure>'
    )


def _img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img alt="{_esc(alt)}"{w} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def svg_lines(
    series: dict[str, tuple[list[float], list[float]]],
    *,
    title: str,
    width: int = 560,
    height: int = 220,
    log_y: bool = False,
) -> str:
    """A line chart as inline SVG: {label: (x, y)}; one colour per series, axes labelled with min/max."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    pts = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items() if len(x)}
    if not pts:
        return f"<p><em>{_esc(title)}: no data</em></p>"
    if log_y:
        pts = {k: (x, np.log10(np.clip(np.abs(y), 1e-9, None))) for k, (x, y) in pts.items()}
    xs = np.concatenate([x for x, _ in pts.values()])
    ys = np.concatenate([y[np.isfinite(y)] for _, y in pts.values()])
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = (float(ys.min()), float(ys.max())) if len(ys) else (0.0, 1.0)
    if y1 == y0:
        y1 = y0 + 1.0
    m = 40

    def sx(v):
        return m + (v - x0) / max(x1 - x0, 1e-12) * (width - 2 * m)

    def sy(v):
        return height - m + (y0 - v) / (y1 - y0) * (height - 2 * m)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_esc(title)}</text>',
        f'<rect x="{m}" y="{m}" width="{width - 2 * m}" height="{height - 2 * m}" fill="none" stroke="#ccc"/>',
        f'<text x="{m}" y="{height - m + 14}" font-size="10">{x0:g}</text>',
        f'<text x="{width - m}" y="{height - m + 14}" font-size="10" text-anchor="end">{x1:g}</text>',
        f'<text x="{m - 4}" y="{m + 4}" font-size="10" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{m - 4}" y="{height - m}" font-size="10" text-anchor="end">{y0:.3g}</text>',
    ]
    for n, (label, (x, y)) in enumerate(pts.items()):
        keep = np.isfinite(y)
        stride = max(1, int(keep.sum()) // 800)  # a few hundred points draw the same curve as thousands
        coords = " ".join(
            f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x[keep][::stride], y[keep][::stride], strict=False)
        )
        c = colours[n % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.2" points="{coords}"/>')
        parts.append(f'<text x="{width - m + 4}" y="{m + 12 + 13 * n}" font-size="11" fill="{c}">{_esc(label)}</text>')
    if log_y:
        parts.append(f'<text x="4" y="{height / 2}" font-size="10">log10</text>')
    parts.append("</svg>")
    return "".join(parts)


def _load_checkpoint(store: Store, run: str) -> dict | None:
    """The newest checkpoint of a training run (the trainers' own layout and reader), or None before the first."""
    from smf.common.training import checkpoint_keys, read_checkpoint

    keys = checkpoint_keys(store, run)
    return read_checkpoint(store, keys[-1]) if keys else None


def _wavs(store: Store, aid: str, *, limit: int | None = None) -> list[str]:
    keys = sorted(f"{aid}/{name}" for name in read_manifest(store, aid).files if name.endswith(".wav"))
    if limit and len(keys) > limit:
        keys = [keys[i] for i in np.linspace(0, len(keys) - 1, limit).round().astype(int)]
    return keys


def _clips(store: Store, keys: list[str]) -> tuple[list[np.ndarray], int]:
    clips, sr = [], 16000
    for k in keys:
        a, sr = load_audio(store.get_bytes(k))
        clips.append(a.numpy())
    return clips, sr


# --- scores --------------------------------------------------------------------------------------------------------
def compute_scores(store: Store, dataset: str, samples: str, render_wavs: list[str]) -> dict:
    """MR-STFT and Fréchet feature distances of GAN samples and RNN renders against the data, with the data split
    in two halves as the reference scale ("how far is the data from itself")."""
    from smf.pipeline.scores import frame_features, frechet_distance, mrstft_distance

    data, sr = _clips(store, _wavs(store, dataset, limit=MAX_DATA_CLIPS))
    sets = {
        "gan_samples": _clips(store, _wavs(store, samples, limit=MAX_DATA_CLIPS))[0],
        "rnn_renders": _clips(store, render_wavs)[0],
    }
    # RNN renders are long: cut them to clips of the data's length, so both sets are compared frame by frame alike
    clip_len = max(len(data[0]), 1)
    sets["rnn_renders"] = [
        r[i : i + clip_len] for r in sets["rnn_renders"] for i in range(0, len(r) - clip_len + 1, clip_len)
    ] or sets["rnn_renders"]
    sets["data_half_b"] = data[1::2]
    ref = data[0::2] if len(data) > 1 else data
    ref_frames = frame_features(ref, sr)
    out = {"sample_rate": sr, "reference": f"{dataset} (even-indexed clips, {len(ref)})", "sets": {}}
    for name, clips in sets.items():
        if not clips:
            continue
        out["sets"][name] = {
            "clips": len(clips),
            "mrstft": round(mrstft_distance(ref, clips, sr), 4),
            "frechet": round(frechet_distance(ref_frames, frame_features(clips, sr)), 4),
        }
    return out


# --- lineage -------------------------------------------------------------------------------------------------------
def lineage_tree(store: Store, aid: str, seen: set | None = None, depth: int = 0) -> str:
    """A nested list: each artifact with its kind, creator and inputs (each input expanded once)."""
    seen = set() if seen is None else seen
    try:
        m = read_manifest(store, aid)
    except NotFound:
        return f"<li><code>{_esc(aid)}</code> <em>(no manifest)</em></li>"
    label = (
        f"<code>{_esc(aid)}</code> <span class=k>{_esc(m.kind)}</span> "
        f"<small>by {_esc(m.created_by.get('service'))} {_esc(m.created_at)}, {len(m.files)} files</small>"
    )
    if aid in seen or depth > 12:
        return f"<li>{label} <small>(above)</small></li>"
    seen.add(aid)
    kids = "".join(lineage_tree(store, i, seen, depth + 1) for i in m.inputs)
    return f"<li>{label}{f'<ul>{kids}</ul>' if kids else ''}</li>"


# --- the page ------------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:.9em}
figure.snd{display:inline-block;margin:4px;font-size:.75em}figure.snd audio{width:190px;display:block}
.row{display:flex;gap:1em;flex-wrap:wrap;align-items:flex-start}.k{background:#eef;padding:0 4px;border-radius:3px}
ul{font-size:.9em}img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}"""


def build_report(store: Store, state: dict, cfg) -> tuple[str, dict]:
    """The report page of a finished pipeline run and the objective scores it shows (also kept in state.json)."""
    st = {name: rec["outputs"] for name, rec in state["stages"].items() if rec.get("state") == "done"}
    dataset, samples = st["dataset"]["dataset"], st["samples"]["samples"]
    gan_run, rnn_run = st["gan"]["model"], st["rnn"]["model"]
    grid, lin_grid, som = st["grid"]["grid"], st["som_render"]["grid"], st["som"]["som"]
    renders = st["renders"]["renders"]
    scores = compute_scores(store, dataset, samples, [w for r in renders.values() for w in r["wavs"]])
    control = _read_control(store, st.get("control", {}).get("control"))
    if control is not None:
        scores["control"] = {
            "summary": control["summary"],
            **({"pitch": control["pitch"]} if "pitch" in control else {}),
        }
    max_cells = int(cfg.report.get("max_cells", 25))

    def players(keys: list[str]) -> str:
        return "".join(_audio_tag(store.get_bytes(k), k.rsplit("/", 1)[-1]) for k in keys)

    body = [
        f"<h1>smf pipeline <code>{_esc(cfg.name)}</code></h1>",
        f"<p>store <code>{_esc(store.uri)}</code> · started {_esc(state.get('started_at'))}</p>",
        _stages_section(state),
        _control_section(store, st.get("control", {}).get("control"), control),
        _scores_section(scores),
        _loss_section(store, gan_run, rnn_run),
        _mosaics_section(store, grid, lin_grid),
        _som_section(store, som),
        "<h2>Audio</h2><h3>Data (a few)</h3>" + players(_wavs(store, dataset, limit=8)),
        f"<h3>GAN samples <code>{_esc(samples)}</code></h3>" + players(_wavs(store, samples)),
        f"<h3>RNN renders (gestures over dim0, dim1) <code>{_esc(rnn_run)}</code></h3>",
    ]
    for name, r in renders.items():
        g = next((g for g in cfg.gestures if g["name"] == name), {})
        body.append(
            f"<p><b>{_esc(name)}</b>: dim0 <code>{_esc(g.get('columns', ['?'])[0])}</code>, dim1 "
            f"<code>{_esc(g.get('columns', ['?', '?'])[1])}</code>, {g.get('duration')} s</p>" + players(r["wavs"])
        )
    for label, gid in (("Raw grid cells", grid), ("Linearized grid cells", lin_grid)):
        body.append(f"<h3>{label} <code>{_esc(gid)}</code></h3>" + players(_wavs(store, gid, limit=max_cells)))
    body.append(
        "<h2>Lineage</h2><p>Every artifact with what it was made from (manifests' <code>inputs</code>)."
        "</p><ul>"
        + "".join(lineage_tree(store, a, set()) for a in [*(r["render"] for r in renders.values()), lin_grid])
        + "</ul>"
    )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>smf pipeline {_esc(cfg.name)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return page, scores


def _stages_section(state: dict) -> str:
    rows = "".join(
        f"<tr><td>{_esc(n)}</td><td>{_esc(r.get('state'))}</td><td>{r.get('seconds', '')}</td>"
        f"<td><code>{_esc(r.get('key', '')[:12])}</code></td>"
        f"<td>{'<br>'.join(_esc(a) for a in r.get('outputs', {}).get('artifacts', []))}</td></tr>"
        for n, r in state["stages"].items()
        if n != "report"
    )
    return (
        "<h2>Stages</h2><table><tr><th>stage</th><th>state</th><th>seconds (last run)</th><th>key</th>"
        f"<th>artifacts</th></tr>{rows}</table>"
    )


def _read_control(store: Store, aid: str | None) -> dict | None:
    return json.loads(store.get_bytes(f"{aid}/control.json")) if aid else None


def _span(row: dict) -> str:
    """' (lo-hi)' for a row scored over several voices, else nothing."""
    lo, hi = row.get("model_min"), row.get("model_max")
    return f" <small>({lo:.2f}-{hi:.2f})</small>" if lo is not None and hi is not None and hi > lo else ""


def _control_section(store: Store, aid: str | None, control: dict | None) -> str:
    """Does the synth follow its knobs? The smf.rnn.evaluate table with its oracle and chance columns, and the plot."""
    if control is None:
        return ""
    s = control["summary"]
    rows = "".join(
        f"<tr><td>{_esc(r['gesture'])}</td><td>{_esc(r['param'])}</td><td><b>{r['model']:.2f}</b>"
        f"{_span(r)}</td>"
        f"<td>{r['oracle']:.2f}</td><td>{r['chance']:.2f} (p95 {r['chance_p95']:.2f})</td><td>{r['ratio']:.2f}</td>"
        f"<td>{r['model_mae']:.2f}</td><td>{r['oracle_mae']:.2f}</td></tr>"
        for r in s["rows"]
    )
    voices = int(s.get("voices", 1))
    over = f" (the mean over {voices} renders of each gesture, their range beside it)" if voices > 1 else ""
    pitch = ""
    if "pitch" in control:
        p = control["pitch"]
        pitch = f"<p>Pitch: median |error| {p['median_cents']:.0f} cents, worst {p['max_cents']:.0f} cents.</p>"
    return (
        "<h2>Knobs: control-following</h2><p>Each gesture is rendered, cut into windows of one grid cell "
        f"({control['window_s'] * 1000:.0f} ms), and every window is heard as the grid cell nearest it (log-mel mean "
        f"and spread). Spearman between the requested and the heard position: <b>model</b>{over}; <b>oracle</b> = the "
        "grid cells themselves played along the path; <b>chance</b> = the model's windows shuffled.</p>"
        "<table><tr><th>gesture</th><th>param</th><th>model ρ</th><th>oracle ρ</th><th>chance ρ</th>"
        f"<th>model/oracle</th><th>model |err|</th><th>oracle |err|</th></tr>{rows}</table>"
        f"<p>Knobs held on a grid cell: heard on that cell in {s['constant_hit'] * 100:.0f}% of windows (chance "
        f"{s['constant_hit_chance'] * 100:.0f}%).</p>{pitch}"
        + _img_tag(store.get_bytes(f"{aid}/control.png"), "requested vs heard position per gesture")
    )


def _scores_section(scores: dict) -> str:
    rows = "".join(
        f"<tr><td>{_esc(n)}</td><td>{v['clips']}</td><td>{v['mrstft']}</td><td>{v['frechet']}</td></tr>"
        for n, v in scores["sets"].items()
    )
    return (
        "<h2>Objective scores</h2><p>Against the data ("
        f"{_esc(scores['reference'])}); lower is closer. <code>data_half_b</code> (the other half of the "
        "data) shows the scale of a perfect model. MR-STFT: spectral convergence + log distance of mean "
        "magnitude spectra at 3 resolutions. Fréchet: Gaussians fitted to per-frame log-mel (32), "
        "log-centroid and loudness features.</p>"
        "<table><tr><th>set</th><th>clips</th><th>MR-STFT distance</th><th>Fréchet feature distance</th>"
        f"</tr>{rows}</table>"
    )


def _loss_section(store: Store, gan_run: str, rnn_run: str) -> str:
    """Loss curves from the metrics the trainers keep in their newest checkpoint."""
    charts = []
    ck = _load_checkpoint(store, gan_run)
    if ck and ck.get("metrics"):
        m = ck["metrics"]
        charts.append(
            svg_lines({k: (m["step"], m[k]) for k in ("loss_d", "loss_g") if k in m}, title=f"GAN losses ({gan_run})")
        )
        if m.get("lsd"):
            charts.append(svg_lines({"lsd": (m["lsd_step"], m["lsd"])}, title="GAN preview log-spectral distance"))
    ck = _load_checkpoint(store, rnn_run)
    if ck and ck.get("metrics"):
        charts.append(
            svg_lines({"loss": (ck["metrics"]["steps"], ck["metrics"]["loss"])}, title=f"RNN loss ({rnn_run})")
        )
    return f"<h2>Loss curves</h2><div class=row>{''.join(charts)}</div>"


def _mosaics_section(store: Store, grid: str, lin_grid: str) -> str:
    mos = []
    for label, gid in (("raw grid", grid), ("linearized grid", lin_grid)):
        try:
            mos.append(
                f"<figure><figcaption>{label} <code>{_esc(gid)}</code></figcaption>"
                f"{_img_tag(store.get_bytes(f'{gid}/mosaic.png'), label, 480)}</figure>"
            )
        except NotFound:
            mos.append(f"<p>{label}: no mosaic</p>")
    return f"<h2>Grid mosaics: raw vs linearized</h2><div class=row>{''.join(mos)}</div>"


def _som_section(store: Store, som: str) -> str:
    """Neighbour-distance evenness before/after the SOM, its CoV per iteration and the SOM's own plots."""
    try:
        metrics = json.loads(store.get_bytes(f"{som}/metrics.json"))
    except NotFound:
        return "<h2>SOM evenness</h2><p>no metrics.json</p>"
    b, a = metrics.get("before", {}), metrics.get("after", {})
    rows = "".join(
        f"<tr><td>{k}</td><td>{b.get(k, 0):.4g}</td><td>{a.get(k, 0):.4g}</td></tr>"
        for k in ("cov", "max_min_ratio", "mean_distance")
        if k in b
    )
    hist = metrics.get("history") or []
    cov = [h.get("cov", h.get("evenness", {}).get("cov", np.nan)) if isinstance(h, dict) else np.nan for h in hist]
    curve = svg_lines(
        {"cov": ([h.get("iteration", i) for i, h in enumerate(hist)], cov)}, title="SOM evenness (CoV) per iteration"
    )
    try:
        plots = "".join(
            _img_tag(store.get_bytes(f"{som}/{n}"), n, 360)
            for n in read_manifest(store, som).files
            if n.endswith(".png")
        )
    except NotFound:
        return "<h2>SOM evenness</h2><p>no metrics.json</p>"
    return (
        f"<h2>SOM evenness before / after</h2><p>{metrics.get('iterations')} iterations, features "
        f"{_esc(json.dumps(metrics.get('features')))}; CoV reduction "
        f"{100 * metrics.get('cov_reduction', 0):.1f} %.</p><table><tr><th>adjacent distances</th>"
        f"<th>before</th><th>after</th></tr>{rows}</table><div class=row>{curve}{plots}</div>"
    )
