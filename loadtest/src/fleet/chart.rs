//! The fleet run's report page: one self-contained HTML page with inline SVG
//! charts, no script and no outside asset, so it opens offline and can be
//! attached to a review as is.
//!
//! The page holds the title, a table of headline figures, four time charts
//! that share their x axis (sessions per second, lag p99, in flight and queue
//! depth, worker memory) with the run's phases shaded on each, then one
//! histogram per latency distribution with its p50 and p99 marked.
//!
//! Every text from the caller is escaped; non-finite numbers are skipped, so a
//! broken sample costs a gap in a line, never a broken page.

use std::fmt::{self, Display, Write};

/// One second of the run.
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// Sessions ended in that second.
    pub sessions_per_s: f64,
    /// p99 scheduling lag of the sessions started in that second (0 if none).
    pub lag_p99_ms: f64,
    /// Sessions running across the fleet.
    pub in_flight: f64,
    /// Messages waiting in the sync queues.
    pub queue_depth: f64,
    /// The largest worker process's resident memory, in megabytes.
    pub worker_rss_mb: f64,
}

/// A named stretch of the run (e.g. "P1 drain", "P2 N=20000", "P3 force syncs").
pub struct Phase {
    /// Shown on the band, escaped.
    pub name: String,
    /// Seconds since the run started.
    pub start: f64,
    /// Seconds since the run started.
    pub end: f64,
}

/// A latency distribution to draw (e.g. "force sync, request to session start").
pub struct Distribution {
    /// The histogram's heading, escaped.
    pub name: String,
    /// One value per observation, in milliseconds, in any order.
    pub values_ms: Vec<f64>,
}

/// Width of every chart in SVG units; the page is laid out for 1280 px and the
/// viewBox lets the charts shrink with the window.
const WIDTH: f64 = 1200.0;
// The margins around each chart's plotting area, in SVG units: room for the
// y tick labels, the heading and phase names above, the x tick labels below.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 44.0;
const TIME_CHART_HEIGHT: f64 = 230.0;
const HISTOGRAM_HEIGHT: f64 = 250.0;
/// Thirty bins resolve the shape of a few hundred to a few thousand
/// observations without leaving most bins empty.
const HISTOGRAM_BINS: usize = 30;
/// A distribution whose largest value is this many times its smallest gets log
/// bins: latencies under load have a long tail, and on a linear axis a tail a
/// hundred times the median squeezes the whole body into the first bin. A
/// narrower spread reads more naturally on a linear axis.
const LOG_BINS_FROM_RATIO: f64 = 100.0;
/// The P2 limit on scheduling lag.
const LAG_LIMIT_MS: f64 = 5_000.0;
/// The memory a worker is meant to stay under.
const RSS_TARGET_MB: f64 = 128.0;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1280px;margin:0 auto;padding:16px;color:#222}\
table{border-collapse:collapse;margin:8px 0 24px}th,td{padding:4px 12px;border-bottom:1px solid #ddd;text-align:left}\
td{font-variant-numeric:tabular-nums}svg{display:block;width:100%;height:auto;margin-bottom:12px}\
text{font-size:13px;fill:#333}.heading{font-size:15px;font-weight:600}.small{font-size:11px;fill:#555}\
.grid{stroke:#e4e4e4}.axis{stroke:#888}.phase0{fill:#4a7fd4;fill-opacity:.07}.phase1{fill:#d48a4a;fill-opacity:.09}\
.line{fill:none;stroke-width:1.6}.limit{stroke:#c0392b;stroke-dasharray:6 4}.limit-label{fill:#c0392b}\
.bar{fill:#4a7fd4}.marker{stroke-width:1.5;stroke-dasharray:4 3}.nodata{font-size:16px;fill:#999}";

/// The whole page: a title, the headline figures as (label, value) rows, the
/// timeline and the distributions.
pub fn html(
    title: &str,
    headline: &[(String, String)],
    samples: &[Sample],
    phases: &[Phase],
    distributions: &[Distribution],
) -> String {
    let mut page = String::new();
    // Writing into a `String` cannot fail, so there is no error to pass on.
    let _ = write_page(&mut page, title, headline, samples, phases, distributions);
    page
}

fn write_page(
    out: &mut String,
    title: &str,
    headline: &[(String, String)],
    samples: &[Sample],
    phases: &[Phase],
    distributions: &[Distribution],
) -> fmt::Result {
    let title = Escaped(title);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    )?;
    if !headline.is_empty() {
        out.push_str("<table>\n");
        for (label, value) in headline {
            writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", Escaped(label), Escaped(value))?;
        }
        out.push_str("</table>\n");
    }

    out.push_str("<h2>Timeline</h2>\n");
    let time = time_domain(samples, phases);
    let charts = [
        TimeChart {
            heading: "Sessions ended per second",
            series: &[Series {
                label: "sessions/s",
                colour: "#2c6fbb",
                value: |sample| sample.sessions_per_s,
            }],
            threshold: None,
        },
        TimeChart {
            heading: "Scheduling lag p99 (ms)",
            series: &[Series {
                label: "lag p99",
                colour: "#7b3fb0",
                value: |sample| sample.lag_p99_ms,
            }],
            threshold: Some((LAG_LIMIT_MS, "P2 limit 5 s")),
        },
        TimeChart {
            heading: "Sessions in flight and queue depth",
            series: &[
                Series {
                    label: "in flight",
                    colour: "#2c6fbb",
                    value: |sample| sample.in_flight,
                },
                Series {
                    label: "queue depth",
                    colour: "#d4702c",
                    value: |sample| sample.queue_depth,
                },
            ],
            threshold: None,
        },
        TimeChart {
            heading: "Largest worker resident memory (MB)",
            series: &[Series {
                label: "worker RSS",
                colour: "#2a9d5c",
                value: |sample| sample.worker_rss_mb,
            }],
            threshold: Some((RSS_TARGET_MB, "target 128 MB")),
        },
    ];
    for chart in &charts {
        write_time_chart(out, chart, samples, phases, time)?;
    }

    out.push_str("<h2>Latency distributions</h2>\n");
    if distributions.is_empty() {
        out.push_str("<p>No distributions recorded.</p>\n");
    }
    for distribution in distributions {
        write_histogram(out, distribution)?;
    }
    out.push_str("</body></html>\n");
    Ok(())
}

/// One chart of the timeline: which sample fields to draw, and an optional
/// dashed reference line (value, label).
struct TimeChart {
    heading: &'static str,
    series: &'static [Series],
    threshold: Option<(f64, &'static str)>,
}

/// One line of a time chart: one field of the samples.
struct Series {
    label: &'static str,
    colour: &'static str,
    value: fn(&Sample) -> f64,
}

/// The seconds every time chart spans: from zero (or earlier) to the last
/// sample or phase end, so the stacked charts line up. A run of one instant
/// gets a round span around it.
fn time_domain(samples: &[Sample], phases: &[Phase]) -> (f64, f64) {
    let times = samples.iter().map(|sample| sample.t);
    let bounds = phases.iter().flat_map(|phase| [phase.start, phase.end]);
    let (low, high) = finite_range(times.chain(bounds));
    let (low, high) = (low.min(0.0), high.max(0.0));
    if low < high {
        return (low, high);
    }
    let ticks = nice_ticks(low, high, 10);
    (ticks.first, ticks.last)
}

/// One chart of the timeline over `time` seconds, phases shaded behind.
fn write_time_chart(
    out: &mut String,
    chart: &TimeChart,
    samples: &[Sample],
    phases: &[Phase],
    time: (f64, f64),
) -> fmt::Result {
    let height = TIME_CHART_HEIGHT;
    let plot = Plot {
        top: TOP,
        bottom: height - BOTTOM,
    };
    let x_ticks = nice_ticks(time.0, time.1, 10);
    // The time axis keeps the run's own bounds: rounding the end up to a tick
    // would leave an empty stretch after the run.
    let x = Scale::new(time.0, time.1, LEFT, WIDTH - RIGHT, false);

    let values = samples.iter().filter(|sample| sample.t.is_finite());
    let values = values.flat_map(|sample| chart.series.iter().map(move |series| (series.value)(sample)));
    let threshold = chart.threshold.map(|(value, _)| value);
    let (low, high) = finite_range(values.clone().chain(threshold));
    let y_ticks = nice_ticks(low.min(0.0), high.max(0.0), 5);
    let y = Scale::new(y_ticks.first, y_ticks.last, plot.bottom, plot.top, false);

    open_svg(out, height, chart.heading)?;
    write_phases(out, phases, &x, &plot)?;
    write_y_axis(out, &y_ticks, &y)?;
    let inside = x_ticks.values().filter(|tick| *tick >= time.0 && *tick <= time.1);
    write_x_axis(
        out,
        inside.map(|tick| (tick, format_tick(tick, x_ticks.step))),
        &x,
        &plot,
    )?;
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"small\">time (s)</text>",
        WIDTH - RIGHT,
        height - 6.0
    )?;
    if let Some((value, label)) = chart.threshold {
        let level = y.at(value);
        writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{level:.1}\" y2=\"{level:.1}\" class=\"limit\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"small limit-label\">{}</text>",
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            level - 4.0,
            Escaped(label)
        )?;
    }
    for (index, series) in chart.series.iter().enumerate() {
        write_line(out, samples, series.value, series.colour, &x, &y)?;
        if chart.series.len() == 1 {
            continue;
        }
        // A legend only when there is more than one line to tell apart.
        let legend_x = WIDTH - RIGHT - 260.0 + 130.0 * index as f64;
        writeln!(
            out,
            "<line x1=\"{legend_x:.1}\" x2=\"{:.1}\" y1=\"20\" y2=\"20\" stroke=\"{}\" stroke-width=\"3\"/>\
             <text x=\"{:.1}\" y=\"24\">{}</text>",
            legend_x + 20.0,
            series.colour,
            legend_x + 26.0,
            Escaped(series.label)
        )?;
    }
    if values.clone().all(|value| !value.is_finite()) {
        write_no_data(out, &plot)?;
    }
    out.push_str("</svg>\n");
    Ok(())
}

/// Draws one field of the samples as a line, broken wherever a time or value
/// is not finite; a lone point between gaps becomes a dot.
fn write_line(
    out: &mut String,
    samples: &[Sample],
    value: fn(&Sample) -> f64,
    colour: &str,
    x: &Scale,
    y: &Scale,
) -> fmt::Result {
    let mut run: Vec<(f64, f64)> = Vec::new();
    let points = samples.iter().map(|sample| (sample.t, value(sample)));
    // A trailing gap closes the last run.
    for (t, v) in points.chain([(f64::NAN, f64::NAN)]) {
        if t.is_finite() && v.is_finite() {
            run.push((x.at(t), y.at(v)));
            continue;
        }
        match run.as_slice() {
            [] => {}
            [(px, py)] => writeln!(
                out,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2.5\" fill=\"{colour}\"/>"
            )?,
            _ => {
                write!(out, "<polyline class=\"line\" stroke=\"{colour}\" points=\"")?;
                for (px, py) in &run {
                    write!(out, "{px:.1},{py:.1} ")?;
                }
                out.push_str("\"/>\n");
            }
        }
        run.clear();
    }
    Ok(())
}

/// Shades each phase over the plot, its name just above the band, clear of
/// the lines; names alternate between two rows so that neighbouring short
/// phases stay legible.
fn write_phases(out: &mut String, phases: &[Phase], x: &Scale, plot: &Plot) -> fmt::Result {
    for (index, phase) in phases.iter().enumerate() {
        if !(phase.start.is_finite() && phase.end.is_finite()) {
            continue;
        }
        let (start, end) = (x.at(phase.start.min(phase.end)), x.at(phase.start.max(phase.end)));
        let name = Escaped(&phase.name);
        writeln!(
            out,
            "<rect x=\"{start:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" class=\"phase{}\">\
             <title>{name}: {} to {} s</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"small\">{name}</text>",
            plot.top,
            (end - start).max(1.0),
            plot.bottom - plot.top,
            index % 2,
            format_value(phase.start),
            format_value(phase.end),
            start + 4.0,
            plot.top - 19.0 + 13.0 * (index % 2) as f64,
        )?;
    }
    Ok(())
}

fn write_histogram(out: &mut String, distribution: &Distribution) -> fmt::Result {
    let mut values: Vec<f64> = distribution
        .values_ms
        .iter()
        .copied()
        .filter(|value| value.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    let skipped = distribution.values_ms.len() - values.len();
    let height = HISTOGRAM_HEIGHT;
    let plot = Plot {
        top: TOP,
        bottom: height - BOTTOM,
    };

    open_svg(out, height, &distribution.name)?;
    let mut count = format!("n = {}", values.len());
    if skipped > 0 {
        write!(count, " ({skipped} not finite, skipped)")?;
    }
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"22\" text-anchor=\"end\">{count}</text>",
        WIDTH - RIGHT
    )?;
    let (Some(&low), Some(&high)) = (values.first(), values.last()) else {
        write_no_data(out, &plot)?;
        out.push_str("</svg>\n");
        return Ok(());
    };

    let log = low > 0.0 && high / low >= LOG_BINS_FROM_RATIO;
    let x_ticks = nice_ticks(low, high, 10);
    let x = if log {
        Scale::new(low, high, LEFT, WIDTH - RIGHT, true)
    } else {
        Scale::new(x_ticks.first, x_ticks.last, LEFT, WIDTH - RIGHT, false)
    };
    let mut counts = [0_usize; HISTOGRAM_BINS];
    for value in &values {
        // Bins have equal width on screen, on either scale.
        let bin = (x.fraction(*value) * HISTOGRAM_BINS as f64) as usize;
        counts[bin.min(HISTOGRAM_BINS - 1)] += 1;
    }
    let tallest = counts.iter().copied().max().unwrap_or(0);
    // At least four counts high, so that a handful of values still gets
    // whole-number ticks.
    let y_ticks = nice_ticks(0.0, (tallest as f64).max(4.0), 5);
    let y = Scale::new(y_ticks.first, y_ticks.last, plot.bottom, plot.top, false);

    write_y_axis(out, &y_ticks, &y)?;
    if log {
        // Each log tick is one digit times a power of ten: its own step.
        write_x_axis(
            out,
            log_ticks(low, high)
                .into_iter()
                .map(|tick| (tick, format_tick(tick, tick))),
            &x,
            &plot,
        )?;
    } else {
        write_x_axis(
            out,
            x_ticks.values().map(|tick| (tick, format_tick(tick, x_ticks.step))),
            &x,
            &plot,
        )?;
    }
    let unit = if log { "ms (log scale)" } else { "ms" };
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"small\">{unit}</text>\
         <text x=\"14\" y=\"{:.1}\" class=\"small\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">count</text>",
        WIDTH - RIGHT,
        height - 6.0,
        (plot.top + plot.bottom) / 2.0,
        (plot.top + plot.bottom) / 2.0,
    )?;
    let bin_width = (WIDTH - RIGHT - LEFT) / HISTOGRAM_BINS as f64;
    for (bin, count) in counts.iter().enumerate().filter(|(_, count)| **count > 0) {
        let top = y.at(*count as f64);
        writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" class=\"bar\"><title>{count}</title></rect>",
            LEFT + bin_width * bin as f64 + 0.5,
            bin_width - 1.0,
            plot.bottom - top,
        )?;
    }
    for (row, (name, percent, colour)) in [("p50", 50.0, "#2a9d5c"), ("p99", 99.0, "#c0392b")]
        .into_iter()
        .enumerate()
    {
        let value = percentile(&values, percent);
        let at = x.at(value);
        // Near the right edge the label goes on the marker's left.
        let (label_x, anchor) = if at > WIDTH - 200.0 {
            (at - 4.0, "end")
        } else {
            (at + 4.0, "start")
        };
        writeln!(
            out,
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" class=\"marker {name}\"/>\
             <text x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" style=\"fill:{colour}\">{name} {} ms</text>",
            plot.top - 30.0 + 15.0 * row as f64,
            plot.bottom,
            plot.top - 20.0 + 15.0 * row as f64,
            format_value(value),
        )?;
    }
    out.push_str("</svg>\n");
    Ok(())
}

/// The value at `percent` by nearest rank; `sorted` is ascending and not empty.
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    // Multiplying first keeps p99 of 100 values exactly at rank 99.
    let rank = (percent * sorted.len() as f64 / 100.0).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The vertical extent of a chart's plotting area; horizontally every chart
/// runs from `LEFT` to `WIDTH - RIGHT`.
struct Plot {
    top: f64,
    bottom: f64,
}

fn open_svg(out: &mut String, height: f64, heading: &str) -> fmt::Result {
    let heading = Escaped(heading);
    writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{heading}\">\
         <text x=\"{LEFT}\" y=\"22\" class=\"heading\">{heading}</text>"
    )
}

fn write_no_data(out: &mut String, plot: &Plot) -> fmt::Result {
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"nodata\">no data</text>",
        (LEFT + WIDTH - RIGHT) / 2.0,
        (plot.top + plot.bottom) / 2.0
    )
}

fn write_y_axis(out: &mut String, ticks: &Ticks, y: &Scale) -> fmt::Result {
    for tick in ticks.values() {
        let at = y.at(tick);
        writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{at:.1}\" y2=\"{at:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            at + 4.0,
            format_tick(tick, ticks.step)
        )?;
    }
    writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>",
        y.range.0, y.range.1
    )
}

/// Draws the x axis with its `(value, label)` ticks.
fn write_x_axis(out: &mut String, ticks: impl Iterator<Item = (f64, String)>, x: &Scale, plot: &Plot) -> fmt::Result {
    for (tick, label) in ticks {
        let at = x.at(tick);
        writeln!(
            out,
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>\
             <text x=\"{at:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            plot.bottom,
            plot.bottom + 5.0,
            plot.bottom + 19.0,
            label
        )?;
    }
    writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"axis\"/>",
        WIDTH - RIGHT,
        plot.bottom,
        plot.bottom
    )
}

/// Maps a value to an SVG coordinate, linearly or logarithmically. A degenerate
/// domain (empty, reversed or too wide for `f64`) maps everything to the middle
/// of the range rather than to NaN.
struct Scale {
    domain: (f64, f64),
    range: (f64, f64),
    log: bool,
}

impl Scale {
    fn new(low: f64, high: f64, range_start: f64, range_end: f64, log: bool) -> Self {
        let domain = if log { (low.ln(), high.ln()) } else { (low, high) };
        Self {
            domain,
            range: (range_start, range_end),
            log,
        }
    }

    /// Where `value` sits in the domain, from 0 to 1 (clamped).
    fn fraction(&self, value: f64) -> f64 {
        let value = if self.log { value.ln() } else { value };
        let fraction = (value - self.domain.0) / (self.domain.1 - self.domain.0);
        if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.5
        }
    }

    fn at(&self, value: f64) -> f64 {
        self.range.0 + self.fraction(value) * (self.range.1 - self.range.0)
    }
}

/// Round tick values covering a range: `first` and `last` enclose it and
/// `step` is 1, 2 or 5 times a power of ten.
#[derive(Debug, PartialEq)]
struct Ticks {
    first: f64,
    last: f64,
    step: f64,
}

impl Ticks {
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let count = ((self.last - self.first) / self.step).round() as usize;
        // Multiplying rather than adding keeps rounding errors from piling up.
        (0..=count).map(move |index| self.first + self.step * index as f64)
    }
}

/// About `target` round ticks enclosing `[low, high]`. An empty range is widened
/// around its value; a range `f64` cannot subdivide comes back as a single step.
fn nice_ticks(low: f64, high: f64, target: usize) -> Ticks {
    let (mut low, mut high) = if low.is_finite() && high.is_finite() {
        (low.min(high), low.max(high))
    } else {
        (0.0, 1.0)
    };
    if low == high {
        let margin = low.abs() / 2.0;
        (low, high) = if margin == 0.0 {
            (0.0, 1.0)
        } else {
            (low - margin, high + margin)
        };
    }
    let raw = (high - low) / target.max(1) as f64;
    let magnitude = 10_f64.powf(raw.log10().floor());
    // Rounding to the nearest round step (Heckbert's thresholds) keeps the
    // count of ticks near the target either way.
    let step = match raw / magnitude {
        f if f < 1.5 => 1.0,
        f if f < 3.0 => 2.0,
        f if f < 7.0 => 5.0,
        _ => 10.0,
    } * magnitude;
    let ticks = Ticks {
        first: (low / step).floor() * step,
        last: (high / step).ceil() * step,
        step,
    };
    if [ticks.first, ticks.last, ticks.step]
        .iter()
        .all(|value| value.is_finite())
        && ticks.step > 0.0
    {
        ticks
    } else {
        Ticks {
            first: low,
            last: high,
            step: high - low,
        }
    }
}

/// Ticks at 1, 2 and 5 times the powers of ten within `[low, high]` (both > 0),
/// thinned to about a dozen.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let (first, last) = (low.log10().floor() as i32, high.log10().ceil() as i32);
    let candidates = |multiples: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|power| multiples.iter().map(move |multiple| multiple * 10_f64.powi(power)))
            .filter(|tick| *tick >= low && *tick <= high)
            .collect()
    };
    let ticks = candidates(&[1.0, 2.0, 5.0]);
    if ticks.len() <= 12 {
        return ticks;
    }
    let powers = candidates(&[1.0]);
    let stride = powers.len().div_ceil(12);
    powers.into_iter().step_by(stride).collect()
}

/// A tick label with no more digits than the step calls for; very large or
/// very small ticks in exponent notation.
fn format_tick(value: f64, step: f64) -> String {
    if value == 0.0 || (step.is_finite() && value.abs() < step * 1e-9) {
        return "0".to_owned();
    }
    let step_exponent = step.abs().log10().floor() as i32;
    let value_exponent = value.abs().log10().floor() as i32;
    if !(-4..6).contains(&value_exponent) {
        let digits = (value_exponent - step_exponent).clamp(0, 6) as usize;
        return format!("{value:.digits$e}");
    }
    let decimals = (-step_exponent).clamp(0, 6) as usize;
    format!("{value:.decimals$}")
}

/// A figure for a label: three significant digits or so.
fn format_value(value: f64) -> String {
    match value.abs() {
        magnitude if magnitude >= 1e9 => format!("{value:.2e}"),
        magnitude if magnitude >= 100.0 => format!("{value:.0}"),
        magnitude if magnitude >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

/// The smallest and largest finite values, or (0, 0) when there are none.
fn finite_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|value| value.is_finite())
        .fold(None, |range: Option<(f64, f64)>, value| match range {
            None => Some((value, value)),
            Some((low, high)) => Some((low.min(value), high.max(value))),
        })
        .unwrap_or((0.0, 0.0))
}

/// Text escaped for HTML element content and quoted attribute values alike.
struct Escaped<'a>(&'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for character in self.0.chars() {
            match character {
                '&' => formatter.write_str("&amp;")?,
                '<' => formatter.write_str("&lt;")?,
                '>' => formatter.write_str("&gt;")?,
                '"' => formatter.write_str("&quot;")?,
                '\'' => formatter.write_str("&#39;")?,
                other => formatter.write_char(other)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, value: f64) -> Sample {
        Sample {
            t,
            sessions_per_s: value,
            lag_p99_ms: value,
            in_flight: value,
            queue_depth: value,
            worker_rss_mb: value,
        }
    }

    fn distribution(name: &str, values_ms: Vec<f64>) -> Distribution {
        Distribution {
            name: name.to_owned(),
            values_ms,
        }
    }

    /// Every element opened is closed, in order (`meta` and `.../>` aside).
    fn assert_balanced(page: &str) {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = page;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("a tag is never left unterminated");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "unbalanced </{name}>");
            } else {
                let name = tag.split_whitespace().next().expect("a tag has a name");
                if name != "meta" {
                    open.push(name);
                }
            }
        }
        assert!(open.is_empty(), "left open: {open:?}");
    }

    fn assert_no_broken_numbers(page: &str) {
        assert!(!page.contains("NaN"), "NaN in the page");
        assert!(!page.contains("inf"), "an infinity in the page");
    }

    /// The x of the marker line of `name` ("p50" or "p99").
    fn marker_x(page: &str, name: &str) -> f64 {
        let line = page
            .lines()
            .find(|line| line.contains(&format!("class=\"marker {name}\"")))
            .expect("a marker");
        let x1 = line
            .split("x1=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("an x1");
        x1.parse().expect("a number")
    }

    #[test]
    fn nice_ticks_step_by_one_two_or_five_and_enclose_the_range() {
        assert_eq!(
            nice_ticks(0.0, 97.0, 5),
            Ticks {
                first: 0.0,
                last: 100.0,
                step: 20.0
            }
        );
        assert_eq!(
            nice_ticks(0.0, 1234.0, 5),
            Ticks {
                first: 0.0,
                last: 1400.0,
                step: 200.0
            }
        );
        assert_eq!(
            nice_ticks(-3.0, 7.5, 5),
            Ticks {
                first: -4.0,
                last: 8.0,
                step: 2.0
            }
        );
        assert_eq!(
            nice_ticks(0.0, 0.0, 5),
            Ticks {
                first: 0.0,
                last: 1.0,
                step: 0.2
            }
        );
        assert_eq!(
            nice_ticks(3.2, 3.2, 5),
            Ticks {
                first: 1.5,
                last: 5.0,
                step: 0.5
            }
        );
        for (low, high) in [
            (0.0, 1.0),
            (0.0, 7.3),
            (12.0, 4_812.0),
            (0.001, 0.0172),
            (-250.0, 31.0),
            (5e9, 9e9),
        ] {
            let ticks = nice_ticks(low, high, 5);
            let mantissa = ticks.step / 10_f64.powf(ticks.step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0].iter().any(|round| (mantissa - round).abs() < 1e-9),
                "{ticks:?}"
            );
            assert!(
                ticks.first <= low && ticks.last >= high,
                "{ticks:?} misses {low}..{high}"
            );
            assert!((3..=11).contains(&ticks.values().count()), "{ticks:?}");
        }
    }

    #[test]
    fn nice_ticks_survive_huge_and_broken_ranges() {
        for (low, high) in [
            (0.0, 1e300),
            (0.0, f64::MAX),
            (-f64::MAX, f64::MAX),
            (f64::NAN, 5.0),
            (0.0, f64::INFINITY),
        ] {
            let ticks = nice_ticks(low, high, 5);
            assert!(
                ticks.first.is_finite() && ticks.last.is_finite(),
                "{low}..{high}: {ticks:?}"
            );
            assert!(ticks.values().count() <= 11, "{low}..{high}: {ticks:?}");
        }
    }

    #[test]
    fn tick_labels_carry_only_the_digits_of_the_step() {
        assert_eq!(format_tick(0.1 * 3.0, 0.1), "0.3");
        assert_eq!(format_tick(2_000.0, 500.0), "2000");
        assert_eq!(format_tick(1_500_000.0, 500_000.0), "1.5e6");
        assert_eq!(format_tick(1e-17, 0.2), "0");
        assert_eq!(format_tick(0.002, 0.002), "0.002");
    }

    #[test]
    fn caller_text_is_escaped_everywhere() {
        let hostile = "<script>&\"";
        let page = html(
            hostile,
            &[(hostile.to_owned(), hostile.to_owned())],
            &[sample(0.0, 1.0), sample(1.0, 2.0)],
            &[Phase {
                name: hostile.to_owned(),
                start: 0.0,
                end: 1.0,
            }],
            &[distribution(hostile, vec![1.0, 2.0])],
        );
        assert!(!page.contains("<script"), "raw caller text in the page");
        assert!(!page.contains("&\""), "raw caller text in the page");
        assert!(page.matches("&lt;script&gt;&amp;&quot;").count() >= 8, "{page}");
        assert_balanced(&page);
    }

    #[test]
    fn empty_inputs_still_make_a_well_formed_page() {
        let page = html("", &[], &[], &[], &[]);
        assert_balanced(&page);
        assert_eq!(page.matches("<svg").count(), 4);
        assert_eq!(page.matches(">no data<").count(), 4);
        assert!(page.contains("No distributions recorded."));
        assert!(!page.contains("<table"));
        assert_no_broken_numbers(&page);

        let page = html("run", &[], &[], &[], &[distribution("force sync", vec![])]);
        assert_balanced(&page);
        assert_eq!(page.matches("<svg").count(), 5);
        assert_eq!(page.matches(">no data<").count(), 5);
        assert!(page.contains("n = 0"));
        assert!(!page.contains("class=\"marker"));
    }

    #[test]
    fn percentile_markers_sit_at_their_values_on_a_linear_axis() {
        // 0..=100: p50 is 50 and p99 is 99 by nearest rank; the axis runs 0 to 100.
        let values = (0..=100).map(f64::from).collect();
        let page = html("run", &[], &[], &[], &[distribution("latency", values)]);
        let width = WIDTH - RIGHT - LEFT;
        assert!((marker_x(&page, "p50") - (LEFT + 0.50 * width)).abs() < 0.06);
        assert!((marker_x(&page, "p99") - (LEFT + 0.99 * width)).abs() < 0.06);
        assert!(page.contains("p50 50.0 ms") && page.contains("p99 99.0 ms"));
        assert!(page.contains("n = 101") && !page.contains("log scale"));
        assert_balanced(&page);
    }

    #[test]
    fn percentile_markers_sit_at_their_values_on_a_log_axis() {
        // 1..=1000 spans three decades: log bins from 1 to 1000.
        let values = (1..=1000).rev().map(f64::from).collect();
        let page = html("run", &[], &[], &[], &[distribution("latency", values)]);
        let width = WIDTH - RIGHT - LEFT;
        let expected = |value: f64| LEFT + value.ln() / 1000_f64.ln() * width;
        assert!((marker_x(&page, "p50") - expected(500.0)).abs() < 0.06);
        assert!((marker_x(&page, "p99") - expected(990.0)).abs() < 0.06);
        assert!(page.contains("p50 500 ms") && page.contains("p99 990 ms"));
        assert!(page.contains("ms (log scale)"));
    }

    #[test]
    fn nan_and_infinity_are_skipped() {
        let mut samples: Vec<Sample> = (0..5).map(|t| sample(f64::from(t), 10.0 + f64::from(t))).collect();
        samples[1].sessions_per_s = f64::NAN;
        samples[3].queue_depth = f64::INFINITY;
        samples.push(sample(f64::NAN, 1.0));
        let page = html(
            "run",
            &[],
            &samples,
            &[Phase {
                name: "broken".to_owned(),
                start: f64::NAN,
                end: 3.0,
            }],
            &[distribution("latency", vec![1.0, f64::NAN, 2.0, f64::INFINITY, 3.0])],
        );
        assert_no_broken_numbers(&page);
        assert_balanced(&page);
        // The NaN at t = 1 leaves the first sessions/s point on its own, a
        // dot; the infinite queue depth at t = 3 isolates the last point's line
        // from the two before it, which stay a line.
        assert_eq!(page.matches("<circle").count(), 2);
        assert!(
            !page.contains(">broken<"),
            "a phase without a finite start is not drawn"
        );
        assert!(page.contains("n = 3 (2 not finite, skipped)"));
        assert!(page.contains("p50 2.00 ms"));
    }

    #[test]
    fn one_sample_and_all_zero_values_draw_without_nan() {
        let page = html(
            "run",
            &[],
            &[sample(0.0, 0.0)],
            &[],
            &[distribution("latency", vec![0.0; 5])],
        );
        assert_no_broken_numbers(&page);
        assert_balanced(&page);
        assert_eq!(page.matches("<circle").count(), 5, "one dot per series");
        assert!(!page.contains(">no data<"));
        assert!(page.contains("p99 0.00 ms"));
    }

    #[test]
    fn huge_values_draw_without_nan() {
        let samples = [sample(0.0, 1e300), sample(1.0, f64::MAX), sample(1e12, 3.0)];
        let values = vec![1e-300, 1.0, 1e300, f64::MAX];
        let page = html("run", &[], &samples, &[], &[distribution("latency", values)]);
        assert_no_broken_numbers(&page);
        assert_balanced(&page);
    }
}
