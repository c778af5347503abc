//! `--report FILE.html`: one page, nothing loaded from anywhere — inline CSS and SVG, no
//! script — so it can be mailed, archived or opened offline.

use std::fmt::Write as _;

use crate::report::{Report, StrategyResult};

/// A fixed colour per strategy, so the plots of two runs compare at a glance.
fn colour(strategy: &str) -> &'static str {
    match strategy {
        "hyperv-default" => "#d62728",
        "blog-compatible" => "#ff7f0e",
        "guard" => "#1f77b4",
        "delegate" => "#2ca02c",
        "delegate+guard" => "#9467bd",
        _ => "#7f7f7f",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    (nice * mag).max(if max >= 1.0 { 1.0 } else { 0.0 })
}

fn fmt_tick(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// A dash pattern per strategy, so that identical series (two strategies with the same
/// numbers) stay visible on top of each other.
fn dashes(strategy: &str) -> Option<&'static str> {
    match strategy {
        "guard" => Some("8 4"),
        "delegate+guard" => Some("3 3"),
        _ => None,
    }
}

struct Line<'a> {
    name: &'a str,
    colour: &'static str,
    dashed: Option<&'static str>,
    points: Vec<(f64, f64)>,
}

impl<'a> Line<'a> {
    /// The strategy's line, in its colour and dash pattern.
    fn of(s: &'a StrategyResult, points: Vec<(f64, f64)>) -> Line<'a> {
        Line {
            name: &s.strategy,
            colour: colour(&s.strategy),
            dashed: dashes(&s.strategy),
            points,
        }
    }
}

/// One sampled value per point of the strategy's series, x in days.
fn over_days(s: &StrategyResult, values: impl IntoIterator<Item = f64>) -> Vec<(f64, f64)> {
    s.series
        .hours
        .iter()
        .zip(values)
        .map(|(h, v)| (h / 24.0, v))
        .collect()
}

/// A line chart: x in days, y from zero.
fn chart(title: &str, y_label: &str, lines: &[Line], x_max: f64, steps: bool) -> String {
    let (w, h) = (760.0, 300.0);
    let (l, r, t, b) = (70.0, 160.0, 30.0, 40.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let y_max_data = lines
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let ystep = tick_step(y_max_data);
    let y_max = ((y_max_data / ystep).ceil() * ystep).max(ystep);
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let xs = |x: f64| l + x / x_max * pw;
    let ys = |y: f64| t + ph - y / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    // grid and y ticks
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        let py = ys(y);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            l + pw,
            l - 6.0,
            py + 4.0,
            fmt_tick(y)
        );
        y += ystep;
    }
    // x ticks in days
    let xstep = tick_step(x_max).max(1.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let px = xs(x);
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            t + ph,
            t + ph + 5.0,
            t + ph + 18.0,
            fmt_tick(x)
        );
        x += xstep;
    }
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{l}" y1="{t}" x2="{l}" y2="{:.1}" stroke="#333"/>"##,
        t + ph,
        l + pw,
        t + ph,
        t + ph
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">days</text><text x="14" y="{:.1}" text-anchor="middle" class="label" transform="rotate(-90 14 {:.1})">{}</text>"#,
        l + pw / 2.0,
        h - 6.0,
        t + ph / 2.0,
        t + ph / 2.0,
        esc(y_label)
    );
    for (i, line) in lines.iter().enumerate() {
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(px, py) in &line.points {
            let (sx, sy) = (xs(px), ys(py));
            match prev {
                None => {
                    let _ = write!(d, "M{sx:.1},{sy:.1}");
                }
                Some((_, last_y)) if steps => {
                    let _ = write!(d, " L{sx:.1},{last_y:.1} L{sx:.1},{sy:.1}");
                }
                Some(_) => {
                    let _ = write!(d, " L{sx:.1},{sy:.1}");
                }
            }
            prev = Some((sx, sy));
        }
        let dash = line
            .dashed
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            line.colour
        );
        let ly = t + 12.0 + i as f64 * 18.0;
        let lx = l + pw + 14.0;
        let _ = write!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
            lx + 22.0,
            line.colour,
            lx + 28.0,
            ly + 4.0,
            esc(line.name)
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

pub(crate) fn render(r: &Report) -> String {
    let days = r.params.duration.ms() as f64 / crate::params::DAY as f64;
    let mut out = String::new();
    let title = format!("macpool sim — scenario {}, seed {}", r.scenario, r.seed);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:980px;color:#222;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right}}
th:first-child,td:first-child{{text-align:left}}th{{background:#f4f4f4}}
figure{{margin:1.5em 0}}figcaption{{font-weight:600;margin-bottom:.3em}}
.tick{{font-size:11px;fill:#555}}.label{{font-size:12px;fill:#333}}.legend{{font-size:12px;fill:#222}}
code,pre{{background:#f6f6f6;padding:.1em .3em}}.note{{color:#555}}
</style></head><body>
<h1>{}</h1>
"#,
        esc(&title),
        esc(&title)
    );
    let w = &r.workload;
    let _ = writeln!(
        out,
        "<p>{} desktops on {} hosts for {}: {} logoffs (rollbacks to <code>RDV_ROLLBACK</code>), {} live migrations, {} cold starts, {} host reboots, {} desktops re-created. Every strategy replays the same workload.</p>",
        r.params.desktops,
        r.params.hosts,
        esc(&r.params.duration.to_string()),
        w.logoffs,
        w.live_migrations,
        w.cold_starts,
        w.host_reboots,
        w.desktops_recreated
    );
    out.push_str("<table><tr><th>strategy</th><th>duplicate incidents</th><th>duplicate-minutes</th><th>forced restarts</th><th>outage (s)</th><th>DHCP conflicts</th><th>pool addresses used</th><th>blocks claimed</th><th>averted</th></tr>\n");
    for s in &r.strategies {
        let _ = writeln!(
            out,
            r#"<tr><td><span style="color:{}">&#9632;</span> {}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            colour(&s.strategy),
            esc(&s.strategy),
            s.duplicate_incidents,
            s.duplicate_minutes,
            s.forced_restarts,
            s.outage_seconds,
            s.dhcp_conflicts,
            s.pool_addresses_consumed
                .map_or("–".to_string(), |v| v.to_string()),
            s.blocks_claimed,
            s.averted_duplicates
        );
    }
    out.push_str("</table>\n");
    for u in &r.unavailable {
        let _ = writeln!(
            out,
            "<p class=\"note\"><b>{}</b> not run: {}</p>",
            esc(&u.strategy),
            esc(&u.reason)
        );
    }

    let dup_lines: Vec<Line> = r
        .strategies
        .iter()
        .map(|s| {
            let values = s.series.duplicates_total.iter().map(|d| *d as f64);
            Line::of(s, over_days(s, values))
        })
        .collect();
    out.push_str(&chart(
        "Duplicate-MAC incidents over time (cumulative)",
        "incidents",
        &dup_lines,
        days,
        true,
    ));
    let now_lines: Vec<Line> = r
        .strategies
        .iter()
        .map(|s| {
            let values = s.series.duplicated_macs.iter().map(|d| *d as f64);
            Line::of(s, over_days(s, values))
        })
        .collect();
    out.push_str(&chart(
        "MACs duplicated at each moment (two or more powered-on VMs)",
        "duplicated MACs",
        &now_lines,
        days,
        true,
    ));
    let outage_lines: Vec<Line> = r
        .strategies
        .iter()
        .map(|s| {
            let steps = s
                .outage_seconds_by_day
                .iter()
                .enumerate()
                .flat_map(|(d, v)| [(d as f64, *v), ((d + 1) as f64, *v)])
                .collect();
            Line::of(s, steps)
        })
        .collect();
    out.push_str(&chart(
        "User-visible outage per day (seconds of forced restarts)",
        "seconds",
        &outage_lines,
        days.ceil(),
        false,
    ));
    let pool_lines: Vec<Line> = r
        .strategies
        .iter()
        .map(|s| {
            let values = s.series.addresses_in_use.iter().map(|d| *d as f64);
            Line::of(s, over_days(s, values))
        })
        .collect();
    out.push_str(&chart(
        "Addresses in use: distinct MACs live or frozen in checkpoints",
        "addresses",
        &pool_lines,
        days,
        false,
    ));
    let pool_used: Vec<Line> = r
        .strategies
        .iter()
        .filter(|s| s.pool_addresses_consumed.is_some())
        .map(|s| {
            let values = s.series.pool_used.iter().map(|d| d.unwrap_or(0) as f64);
            Line {
                dashed: Some("6 4"),
                ..Line::of(s, over_days(s, values))
            }
        })
        .collect();
    if !pool_used.is_empty() {
        out.push_str(&chart(
            "macpool pool consumption: addresses leased, held or cooling",
            "addresses",
            &pool_used,
            days,
            false,
        ));
    }

    out.push_str("<h2>Agents</h2><table><tr><th>strategy</th><th>decisions</th><th>ignored</th><th>remediated</th><th>unknown</th><th>failed</th><th>unseen conflicts</th><th>inventories</th><th>refusals</th></tr>\n");
    for s in &r.strategies {
        if let Some(a) = &s.agent {
            let refusals: Vec<String> = a
                .refusals
                .iter()
                .map(|(k, v)| format!("{} {v}", esc(k)))
                .collect();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.strategy),
                a.decisions,
                a.ignored,
                a.remediated,
                a.unknown,
                a.failed,
                a.unseen_conflicts,
                a.inventory_pushes,
                if refusals.is_empty() {
                    "0".into()
                } else {
                    refusals.join(", ")
                }
            );
        }
    }
    out.push_str("</table>\n<h2>Hosts</h2><table><tr><th>host</th><th>IPv4</th><th>dynamic range</th></tr>\n");
    for h in &r.hosts {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&h.name),
            esc(&h.ip),
            esc(&h.range)
        );
    }
    out.push_str("</table>\n<h2>Parameters</h2><pre>");
    let params = toml::to_string(&r.params).unwrap_or_default();
    out.push_str(&esc(&params));
    out.push_str("</pre>\n<p class=\"note\">Reproduce with <code>macpool sim --scenario ");
    out.push_str(&esc(&r.scenario));
    let _ = write!(
        out,
        " --seed {}</code> and these parameters in a TOML file given with <code>--config</code>.</p>\n</body></html>\n",
        r.seed
    );
    out
}
