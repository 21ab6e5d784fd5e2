"""The report page of one log (self-contained HTML) and the index page over several."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


from streamer.core.errors import SerError
from streamer.core.labels import EMOJI, LABELS
from streamer.live.session_log import LogContents
from streamer.core.summary import fused_dims, summarise_records

from streamer.report.figure import AUDIO_PANELS, PANELS, draw, lane_stats, lanes, own_label, png_bytes, rolling_label
from streamer.report.logs import duration_of, load_session_log, log_errors

def _top(p: dict | None) -> str:
    return max(p, key=p.get) if p else "—"


def _dims_cells(rec: dict) -> str:
    d = fused_dims(rec)
    return "<td>—</td><td>—</td>" if not d else f"<td>{d['arousal']:+.2f}</td><td>{d['valence']:+.2f}</td>"


def _emotion_cell(rec: dict) -> str:
    """"😠 angry 62%", or, when uncertain, a grey "? uncertain (angry 31%)"."""
    if rec.get("uncertain"):
        return f"<td class='u'>? uncertain ({rec['label']} {rec.get('confidence', 0.0):.0%})</td>"
    return f"<td>{rec.get('emoji') or EMOJI[rec['label']]} {rec['label']} {rec.get('confidence', 0.0):.0%}</td>"


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def html_report(contents: LogContents, source: str, png: bytes, warnings: list[str], pictures: bool = False) -> str:
    """One self-contained page: the figure (embedded), summary tables, the transcript by
    utterance (by window for logs without utterances)."""
    start = (contents.of_type("session_start") or [{}])[0]
    end = (contents.of_type("session_end") or [None])[0]
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ser-live report: {esc(source)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}.w{color:#c00}"
             ".e{color:#fff;background:#c00;padding:6px 10px;font-weight:bold}"
             ".u{color:#888;font-style:italic}img{max-width:100%}</style></head><body>",
             f"<h1>ser-live report</h1><p>Log <code>{esc(source)}</code>; source {esc(str(start.get('source') or start.get('file', '?')))}; "
             f"started {esc(str(start.get('time', '?')))}; models {esc(', '.join(f'{k}: {v}' for k, v in start.get('models', {}).items()))}.</p>"]
    for e in log_errors(contents):
        parts.append(f"<p class='e'>error: {esc(e)}</p>")
    for w in warnings:
        parts.append(f"<p class='w'>warning: {esc(w)}</p>")
    if end is None:
        parts.append("<p class='w'>warning: the log has no session_end record (the session did not finish cleanly)</p>")
    elif end.get("interrupted"):
        parts.append("<p class='w'>warning: the session was interrupted (Ctrl-C or a signal) before the end of its input</p>")
    parts.append(f"<h2>Emotion over time</h2><img alt='emotion over time' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    shown = (AUDIO_PANELS if pictures else ()) + PANELS
    parts.append("<p>Time runs left to right, in seconds from the start of the input; each lane (a channel, "
                 f"or the whole session) has {len(shown)} panels, top to bottom:</p><ul>" +
                 "".join(f"<li><b>{esc(name)}</b>: {esc(text)}</li>" for name, text in shown) +
                 "<li>The colours are the emotions of the legend above the figure; hatched: uncertain.</li></ul>")
    parts.append("<h2>Summary</h2>")
    if not lanes(contents):
        parts.append("<p>Nothing was analysed: the log has no window or utterance records"
                     f"{' (see the error above)' if log_errors(contents) else ''}.</p>")
    for lane in lanes(contents):
        s = lane_stats(lane)
        m = s.summary
        total = sum(s.time_in.values()) or 1.0
        basis = ("each utterance's own emotion, by its duration" if s.kind == "utterance" else
                 "by window (this log has no utterance records" +
                 ("" if any(own_label(w) for w in lane.windows) else "; a window's label is its rolling emotion") + ")")
        parts.append(f"<h3>{esc(lane.name)}</h3><p>Time in each emotion: {basis}.</p>"
                     "<table><tr><th>emotion</th><th>time (s)</th><th>share</th><th>longest stretch (s)</th></tr>")
        for k in LABELS:
            parts.append(f"<tr><td>{EMOJI[k]} {k}</td><td>{s.time_in[k]:.1f}</td><td>{s.time_in[k] / total:.0%}</td>"
                         f"<td>{s.longest[k]:.1f}</td></tr>")
        parts.append("</table>")
        if m is not None and m.count:
            parts.append(f"<table><tr><th>{m.kind}s</th><th>dominant</th><th>mean confidence</th><th>uncertain share</th>"
                         f"<th>mean arousal</th><th>mean valence</th></tr><tr><td>{m.count}</td>"
                         f"<td>{EMOJI.get(m.dominant, '')} {m.dominant}</td><td>{_fmt(m.mean_confidence, '.0%')}</td>"
                         f"<td>{_fmt(m.uncertain_share, '.0%')}</td><td>{_fmt(m.mean_arousal, '+.2f')}</td>"
                         f"<td>{_fmt(m.mean_valence, '+.2f')}</td></tr></table>")
        parts.append(f"<p>Most intense {s.kind}s:</p><table><tr><th>time</th><th>emotion</th><th>p</th><th>words</th></tr>")
        for x in s.intense:
            parts.append(f"<tr><td>{x['start_s']:.1f}-{x['end_s']:.1f} s</td><td>{EMOJI[x['label']]} {x['label']}"
                         f"{' (uncertain)' if x['uncertain'] else ''}</td>"
                         f"<td>{x['prob']:.2f}</td><td>{esc(x['transcript'])}</td></tr>")
        parts.append("</table>")
    utterances = sorted(contents.of_type("utterance"), key=lambda u: u["start_s"])
    if utterances:
        parts.append("<h2>Transcript</h2><p>One row per utterance, with its own emotion (the text model read the whole "
                     "utterance); arousal and valence are fused, in [-1, 1].</p>"
                     "<table><tr><th>channel</th><th>time</th><th>emotion</th><th>arousal</th><th>valence</th>"
                     "<th>audio</th><th>text</th><th>windows</th><th>words</th></tr>")
        for u in utterances:
            ws = u.get("windows") or []
            parts.append(f"<tr><td>{esc(str(u.get('channel') or ''))}</td><td>{u['start_s']:.1f}-{u['end_s']:.1f} s</td>"
                         f"{_emotion_cell(u)}{_dims_cells(u)}<td>{_top(u['probs'].get('audio'))}</td>"
                         f"<td>{_top(u['probs'].get('text'))}</td><td>{', '.join(map(str, ws))}</td>"
                         f"<td>{esc(u.get('transcript') or '')}</td></tr>")
    else:
        parts.append("<h2>Transcript</h2><p>One row per window (this log has no utterance records).</p>"
                     "<table><tr><th>channel</th><th>time</th><th>window</th><th>rolling</th><th>arousal</th>"
                     "<th>valence</th><th>audio</th><th>text</th><th>words</th></tr>")
        for w in sorted(contents.of_type("window"), key=lambda w: w["start_s"]):
            own = _emotion_cell(w) if own_label(w) else "<td>—</td>"
            rolling = (f"{w.get('rolling_emoji') or EMOJI.get(rolling_label(w), '')} {rolling_label(w)} "
                       f"{w.get('rolling_confidence', w.get('confidence', 0.0)):.0%}")
            parts.append(f"<tr><td>{esc(str(w.get('channel') or ''))}</td><td>{w['start_s']:.1f}-{w['end_s']:.1f} s</td>"
                         f"{own}<td>{rolling}</td>{_dims_cells(w)}<td>{_top(w['probs'].get('audio'))}</td>"
                         f"<td>{_top(w['probs'].get('text'))}</td><td>{esc(w.get('transcript') or '')}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


@dataclass(frozen=True)
class LogReport:
    """What one log's report holds, for the index page: where it was written and a summary."""

    log: Path
    html: Path | None
    png: Path | None
    duration_s: float | None
    windows: int
    utterances: int
    main: str  # e.g. "😢 sad 45%" per lane, "" when nothing was said
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    complete: bool


def main_emotion(contents: LogContents) -> str:
    """Each lane's dominant emotion and its share of the speech ("agent: 😠 angry 60%")."""
    out = []
    for lane in lanes(contents):
        m = summarise_records(lane.windows, lane.utterances)
        if m.dominant:
            name = "" if lane.name == "session" else f"{lane.name}: "
            out.append(f"{name}{EMOJI[m.dominant]} {m.dominant} {m.share[m.dominant]:.0%}")
    return "; ".join(out)


def summarise_log(log_path: Path, contents: LogContents, warnings: list[str], html_out: Path | None = None,
                  png_out: Path | None = None) -> LogReport:
    return LogReport(log_path, html_out, png_out, duration_of(contents), len(contents.of_type("window")),
                     len(contents.of_type("utterance")), main_emotion(contents), tuple(log_errors(contents)),
                     tuple(warnings), contents.complete)


def report(log_path: Path, html_out: Path | None, png_out: Path | None, audio: Path | None = None,
           pictures: bool = True) -> LogReport:
    """Write the report of one session log (see :func:`load_session_log`, which raises
    SerError for anything else, before anything is written). ``pictures``: draw the
    recording's waveform and log-mel lanes when the recording is at hand (``audio``, else the
    file the log names); an unreadable recording is a warning, not a failure."""
    import matplotlib.pyplot as plt

    contents, warnings = load_session_log(log_path)
    lanes_audio = None
    if pictures:
        from streamer.report.audio import lane_audio, recording_of

        start = (contents.of_type("session_start") or [{}])[0]
        path = recording_of(start, log_path, audio)
        if path is not None:
            try:
                lanes_audio = lane_audio(path, [lane.name for lane in lanes(contents)] or ["session"],
                                         start.get("channels") or None)
            except SerError as exc:
                warnings.append(f"no waveform or spectrogram: {exc}")
    fig = draw(contents, audio=lanes_audio)
    png = png_bytes(fig)
    plt.close(fig)
    if png_out:
        png_out.parent.mkdir(parents=True, exist_ok=True)
        png_out.write_bytes(png)
    if html_out:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(html_report(contents, str(log_path), png, warnings, bool(lanes_audio)), encoding="utf-8")
    return summarise_log(log_path, contents, warnings, html_out, png_out)


def _link(target: Path | None, index: Path, text: str) -> str:
    if target is None:
        return ""
    try:
        href = target.resolve().relative_to(index.parent.resolve()).as_posix()
    except ValueError:
        href = target.resolve().as_uri()
    return f"<a href='{html.escape(href, quote=True)}'>{html.escape(text)}</a>"


def index_page(reports: list[LogReport], failed: dict[Path, str], index: Path) -> str:
    """The page over several logs: one row per log, linking its page and figure, with its
    duration, windows, utterances, main emotion, errors and warnings; logs that could not be
    reported (``failed``: log -> why) are listed with the reason."""
    esc = html.escape
    rows = []
    for r in reports:
        links = " ".join(x for x in (_link(r.html, index, "page"), _link(r.png, index, "figure")) if x)
        notes = [f"<span class='e'>error: {esc(e)}</span>" for e in r.errors]
        notes += [f"<span class='w'>{esc(w)}</span>" for w in r.warnings]
        if not r.complete:
            notes.append("<span class='w'>no session_end: the session did not finish cleanly</span>")
        rows.append(f"<tr><td>{_link(r.html or r.png, index, r.log.name) or esc(r.log.name)}</td><td>{links}</td>"
                    f"<td>{_fmt(r.duration_s, '.1f')}</td><td>{r.windows}</td><td>{r.utterances}</td>"
                    f"<td>{esc(r.main) or '—'}</td><td>{'<br>'.join(notes)}</td></tr>")
    for log, why in failed.items():
        rows.append(f"<tr><td>{esc(log.name)}</td><td></td><td>—</td><td>—</td><td>—</td><td>—</td>"
                    f"<td><span class='e'>not reported: {esc(why)}</span></td></tr>")
    errors = sum(bool(r.errors) for r in reports) + len(failed)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>ser-live reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
            ".e{color:#c00;font-weight:bold}.w{color:#a60}</style></head><body>"
            f"<h1>ser-live reports</h1><p>{len(reports) + len(failed)} session logs, {errors} with errors. "
            "Duration: seconds of input. Main emotion: the emotion of the largest share of the speech "
            "(utterances by duration; windows for logs without utterances), per channel when split.</p>"
            "<table><tr><th>log</th><th>report</th><th>duration (s)</th><th>windows</th><th>utterances</th>"
            "<th>main emotion</th><th>errors and warnings</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>")
