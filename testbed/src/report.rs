//! `report.html`: one self-contained page (inline SVG and CSS, nothing
//! fetched) with the run's timeline: each peer's membership state over
//! time as the other running peers saw it, when its process was down, the
//! steps, and the workload's ops/s and errors per second. Pure: a run's
//! report and history in, HTML out.

use std::fmt::Write as _;

use crate::history::{History, Outcome};
use crate::procs::ProcState;
use crate::scenario::RunReport;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 26.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(state: char) -> &'static str {
    match state {
        'A' => "#2e9e44",
        'S' => "#f0a020",
        'D' => "#d62728",
        'L' => "#7f7f7f",
        _ => "#e0e0e0",
    }
}

fn word(state: char) -> &'static str {
    match state {
        'A' => "alive",
        'S' => "suspect",
        'D' => "dead",
        'L' => "left",
        _ => "unknown",
    }
}

/// Ops per whole second of the run: (ok, failed or unknown).
fn per_second(history: &History, offset_s: f64, seconds: usize) -> Vec<(u32, u32)> {
    let mut buckets = vec![(0u32, 0u32); seconds.max(1)];
    for op in &history.ops {
        let t = offset_s + op.end_us as f64 / 1e6;
        let Some(b) = buckets.get_mut(t.max(0.0) as usize) else {
            continue;
        };
        if op.outcome == Outcome::Ok {
            b.0 += 1;
        } else {
            b.1 += 1;
        }
    }
    buckets
}

/// The drawing area: seconds to x.
struct Canvas {
    total: f64,
}

impl Canvas {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t / self.total)
    }
}

/// Peer names in order of first appearance.
fn peer_names(run: &RunReport) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in run.timeline.iter().flat_map(|s| &s.snapshot.peers) {
        if !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    names
}

/// One row per peer: its state as most running peers saw it, and a bar
/// while its process was down.
fn membership_rows(svg: &mut String, run: &RunReport, names: &[String], c: &Canvas) {
    for (row, name) in names.iter().enumerate() {
        let y = 10.0 + row as f64 * ROW;
        let _ = write!(
            svg,
            r#"<text x="4" y="{:.1}">{}</text>"#,
            y + 14.0,
            esc(name)
        );
        for (i, s) in run.timeline.iter().enumerate() {
            let t0 = s.at.as_secs_f64();
            let t1 = run
                .timeline
                .get(i + 1)
                .map_or(t0 + 0.25, |n| n.at.as_secs_f64());
            let Some(me) = s.snapshot.peers.iter().find(|p| &p.name == name) else {
                continue;
            };
            let state = s.snapshot.consensus(name).unwrap_or('-');
            // A little overlap, so neighbouring samples show no seams.
            let (x0, w) = (c.x(t0), (c.x(t1) - c.x(t0)).max(0.5) + 0.6);
            let _ = write!(
                svg,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="16" fill="{}"><title>{} at {t0:.2} s: {} (process {})</title></rect>"#,
                color(state),
                esc(name),
                word(state),
                me.process.word()
            );
            if me.process != ProcState::Running {
                let _ = write!(
                    svg,
                    r##"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="4" fill="#222"/>"##,
                    y + 18.0
                );
            }
        }
    }
}

/// A dashed line and a label per step (waits and assertions left out).
fn step_lines(svg: &mut String, run: &RunReport, label_y: f64, bottom: f64, c: &Canvas) {
    for e in &run.events {
        if e.step.starts_with("expect") || e.step.starts_with("wait") {
            continue;
        }
        let ex = c.x(e.at.as_secs_f64());
        let _ = write!(
            svg,
            r##"<line x1="{ex:.1}" y1="4" x2="{ex:.1}" y2="{bottom:.1}" stroke="#333" stroke-dasharray="3,3"/><text x="{:.1}" y="{label_y:.1}" font-size="11">{}</text>"##,
            ex + 3.0,
            esc(&e.step)
        );
    }
}

/// Bars of ops per second: acknowledged in blue, the rest in red on top.
fn ops_chart(svg: &mut String, buckets: &[(u32, u32)], top: f64, height: f64, c: &Canvas) {
    let peak = buckets.iter().map(|b| b.0 + b.1).max().unwrap_or(1).max(1);
    let scale = height / f64::from(peak);
    let _ = write!(
        svg,
        r#"<text x="4" y="{:.1}">ops/s</text><text x="4" y="{:.1}" font-size="10">peak {peak}</text>"#,
        top + 14.0,
        top + 28.0
    );
    let base = top + height;
    for (sec, (good, bad)) in buckets.iter().enumerate() {
        let (x0, x1) = (c.x(sec as f64), c.x(sec as f64 + 1.0));
        let w = (x1 - x0 - 1.0).max(0.5);
        let gh = f64::from(*good) * scale;
        let bh = f64::from(*bad) * scale;
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{gh:.1}" fill="#4a7bd0"><title>{sec}-{} s: {good} ok, {bad} failed or unknown</title></rect><rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="{bh:.1}" fill="#d62728"/>"##,
            base - gh,
            sec + 1,
            base - gh - bh
        );
    }
}

/// Seconds along the bottom.
fn time_axis(svg: &mut String, y: f64, c: &Canvas) {
    let step = if c.total > 60.0 { 10 } else { 5 };
    let mut t = 0;
    while f64::from(t) <= c.total {
        let tx = c.x(f64::from(t));
        let _ = write!(
            svg,
            r#"<text x="{tx:.1}" y="{y:.1}" text-anchor="middle">{t} s</text>"#
        );
        t += step;
    }
}

/// The timeline chart.
fn timeline_svg(run: &RunReport, history: Option<&History>) -> String {
    let names = peer_names(run);
    // The history's clock starts when the workload did.
    let offset_s = history
        .and_then(|h| h.started_unix_ms)
        .map_or(0.0, |ms| (ms as f64 - run.started_unix_ms as f64) / 1000.0);
    let history_end = history
        .and_then(|h| h.ops.iter().map(|o| o.end_us).max())
        .map_or(0.0, |us| offset_s + us as f64 / 1e6);
    let timeline_end = run.timeline.last().map_or(0.0, |s| s.at.as_secs_f64());
    let c = Canvas {
        total: timeline_end.max(history_end).max(1.0),
    };
    let rows_h = ROW * names.len() as f64;
    let (chart_top, chart_h) = (rows_h + 50.0, 140.0);
    let height = chart_top + chart_h + 40.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    membership_rows(&mut svg, run, &names, &c);
    step_lines(&mut svg, run, rows_h + 26.0, chart_top + chart_h, &c);
    if let Some(h) = history {
        let buckets = per_second(h, offset_s, c.total.ceil() as usize);
        ops_chart(&mut svg, &buckets, chart_top, chart_h, &c);
    }
    time_axis(&mut svg, chart_top + chart_h + 16.0, &c);
    svg.push_str("</svg>");
    svg
}

/// The page.
pub fn html(run: &RunReport, history: Option<&History>, summary: &str) -> String {
    let svg = timeline_svg(run, history);
    let legend: String = ['A', 'S', 'D', 'L']
        .iter()
        .map(|c| {
            format!(
                r#"<span class="key" style="background:{}"></span>{} "#,
                color(*c),
                word(*c)
            )
        })
        .collect();
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ringkv testbed: {name}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
pre {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; }}
.key {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
</style></head><body>
<h1>ringkv testbed: {name}</h1>
<p>{verdict}</p>
<h2>Timeline</h2>
<p>Each row is a peer's state as most running peers saw it. {legend}<span class="key" style="background:#222;height:4px"></span>process down. Dashed lines are the steps; below, operations per second (blue: acknowledged, red: failed or unknown). Hover for details.</p>
{svg}
<h2>Report</h2>
<pre>{summary}</pre>
</body></html>
"##,
        name = esc(&run.name),
        verdict = if run.passed() {
            "Every step passed.".to_owned()
        } else {
            format!("FAILED: {}", esc(run.failure.as_deref().unwrap_or("")))
        },
        summary = esc(summary),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::{Op, OpKind};
    use crate::scenario::{Event, Sample};
    use crate::watch::{Observed, PeerView, Snapshot};

    fn snap(p2_state: &str, p2_process: ProcState) -> Snapshot {
        let view = |s: &str| PeerView {
            states: [
                ("p1".to_owned(), "alive".to_owned()),
                ("p2".to_owned(), s.to_owned()),
            ]
            .into(),
            ring_digest: Some("r".into()),
            index: 1,
        };
        Snapshot {
            peers: vec![
                Observed {
                    name: "p1".into(),
                    process: ProcState::Running,
                    view: Some(view(p2_state)),
                },
                Observed {
                    name: "p2".into(),
                    process: p2_process,
                    view: None,
                },
            ],
        }
    }

    #[test]
    fn the_page_is_self_contained_and_shows_states_steps_and_ops() {
        let run = RunReport {
            name: "demo".into(),
            dir: "/tmp/x".into(),
            up_took: Duration::from_secs(1),
            events: vec![Event {
                at: Duration::from_secs(1),
                step: "kill p2".into(),
                took: Duration::ZERO,
                note: String::new(),
                ok: true,
            }],
            failure: None,
            load: None,
            check: None,
            timeline: vec![
                Sample {
                    at: Duration::ZERO,
                    snapshot: snap("alive", ProcState::Running),
                },
                Sample {
                    at: Duration::from_secs(2),
                    snapshot: snap("dead", ProcState::Gone),
                },
            ],
            history: None,
            started_unix_ms: 1000,
        };
        let op = |end_us, outcome| Op {
            id: 1,
            op: OpKind::Get,
            key: "k".into(),
            value: None,
            version: None,
            outcome,
            start_us: 0,
            end_us,
            peer: None,
            replicas: Vec::new(),
            final_read: false,
            error: None,
        };
        let history = History {
            started_unix_ms: Some(1000),
            ops: vec![op(100, Outcome::Ok), op(1_500_000, Outcome::Unknown)],
        };
        let page = html(&run, Some(&history), "lost writes: 0 <ok>");
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<svg") && page.contains("</svg>"));
        assert!(page.contains(color('D')), "p2's dead stretch is drawn");
        assert!(page.contains("kill p2"));
        assert!(page.contains("0-1 s: 1 ok, 0 failed or unknown"));
        assert!(page.contains("1-2 s: 0 ok, 1 failed or unknown"));
        assert!(
            page.contains("lost writes: 0 &lt;ok&gt;"),
            "text is escaped"
        );
        for fetch in ["src=", "href=", "<script src", "@import", "url("] {
            assert!(!page.contains(fetch), "nothing is fetched: {fetch}");
        }
    }
}
