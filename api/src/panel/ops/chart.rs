//! The console's charts: the last hour, a value per minute, drawn on the
//! server as inline SVG (no script, nothing the Content-Security-Policy
//! refuses: colours are CSS classes, geometry is attributes). Each chart
//! has a title and a summary for screen readers and its numbers in a table
//! under it.

use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{Markup, html};

/// The chart's drawing box (the SVG scales to its container).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 210.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// The minutes a chart spans: the hour ending with the minute of `end`.
pub struct Hour {
    start: DateTime<Utc>,
}

/// Minutes per hour (a chart's columns).
pub const MINUTES: usize = 60;

impl Hour {
    /// The hour whose last minute holds `end`.
    pub fn ending(end: DateTime<Utc>) -> Self {
        let minute = end.duration_trunc(Duration::minutes(1)).unwrap_or(end);
        Self {
            start: minute - Duration::minutes(MINUTES as i64 - 1),
        }
    }

    /// The column of a minute, when it falls inside the hour.
    pub fn index(&self, minute: DateTime<Utc>) -> Option<usize> {
        let offset = (minute - self.start).num_seconds().div_euclid(60);
        usize::try_from(offset).ok().filter(|index| *index < MINUTES)
    }

    /// The minute of a column.
    pub fn minute(&self, index: usize) -> DateTime<Utc> {
        self.start + Duration::minutes(index as i64)
    }
}

/// One line or one layer of bars: a value per minute, `None` where unknown.
pub struct Series {
    /// Its name in the legend and the table.
    pub label: &'static str,
    /// Its CSS class (the colour).
    pub class: &'static str,
    /// Drawn dashed (told apart without its colour).
    pub dashed: bool,
    pub values: [Option<f64>; MINUTES],
}

impl Series {
    /// An empty series.
    pub fn new(label: &'static str, class: &'static str) -> Self {
        Self {
            label,
            class,
            dashed: false,
            values: [None; MINUTES],
        }
    }

    /// Adds `value` to a minute's (a missing minute counts from zero).
    pub fn add(&mut self, index: usize, value: f64) {
        if let Some(slot) = self.values.get_mut(index) {
            *slot = Some(slot.unwrap_or(0.0) + value);
        }
    }

    fn latest(&self) -> Option<f64> {
        self.values.iter().rev().find_map(|value| *value)
    }

    fn peak(&self) -> Option<f64> {
        self.values.iter().flatten().copied().reduce(f64::max)
    }
}

/// How a chart's values read: counts, or seconds.
#[derive(Clone, Copy)]
pub enum Unit {
    Count,
    Seconds,
}

impl Unit {
    /// The top of the value axis for a peak: counts step by whole numbers.
    fn top(self, peak: f64) -> f64 {
        match self {
            Self::Count => nice_ceiling(peak).max(4.0),
            Self::Seconds => nice_ceiling(peak),
        }
    }

    fn format(self, value: f64) -> String {
        let number = if value >= 10_000.0 {
            format!("{:.0}k", value / 1000.0)
        } else if value >= 1000.0 {
            format!("{:.1}k", value / 1000.0)
        } else if value.fract().abs() < 1e-9 || value >= 10.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        };
        match self {
            Self::Count => number,
            Self::Seconds => format!("{number} s"),
        }
    }
}

/// The smallest "round" number (1, 2, 2.5 or 5 times a power of ten) at or
/// above `value`: the top of the axis.
pub fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// A coordinate as the SVG gets it (a tenth of a unit is plenty).
fn px(value: f64) -> String {
    format!("{value:.1}")
}

fn x_of(index: usize) -> f64 {
    let step = (WIDTH - LEFT - RIGHT) / MINUTES as f64;
    LEFT + step * (index as f64 + 0.5)
}

fn y_of(value: f64, top: f64) -> f64 {
    let height = HEIGHT - TOP - BOTTOM;
    HEIGHT - BOTTOM - (value / top).clamp(0.0, 1.0) * height
}

/// How many steps the value axis is cut into: round values at each (a top
/// of 5 steps by 1, of 2 by 0.5, of 1 by 0.2).
fn steps(top: f64) -> u32 {
    let mantissa = top / 10f64.powf(top.log10().floor());
    if [2.0, 4.0].iter().any(|two| (mantissa - two).abs() < 1e-9) {
        4
    } else {
        5
    }
}

/// The grid, the value axis and the time axis.
fn axes(hour: &Hour, top: f64, unit: Unit) -> Markup {
    let steps = steps(top);
    html! {
        g.grid {
            @for step in 0..=steps {
                @let value = top * f64::from(step) / f64::from(steps);
                @let y = y_of(value, top);
                line x1=(px(LEFT)) x2=(px(WIDTH - RIGHT)) y1=(px(y)) y2=(px(y)) {}
                text.tick x=(px(LEFT - 6.0)) y=(px(y + 4.0)) text-anchor="end" { (unit.format(value)) }
            }
        }
        g.time {
            @for index in [0, 15, 30, 45, MINUTES - 1] {
                text.tick x=(px(x_of(index))) y=(px(HEIGHT - 8.0)) text-anchor="middle" { (hour.minute(index).format("%H:%M")) }
            }
        }
    }
}

/// A line's path, broken where a minute is unknown.
fn path(series: &Series, top: f64) -> String {
    let mut drawn = String::new();
    let mut pen_down = false;
    for (index, value) in series.values.iter().enumerate() {
        match value {
            Some(value) => {
                let command = if pen_down { 'L' } else { 'M' };
                drawn.push_str(&format!("{command}{} {} ", px(x_of(index)), px(y_of(*value, top))));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    drawn.trim_end().to_owned()
}

/// Points with no known neighbour: a path would not show them.
fn lone_points(series: &Series) -> Vec<(usize, f64)> {
    let known = |index: Option<usize>| {
        index
            .and_then(|index| series.values.get(index).copied().flatten())
            .is_some()
    };
    series
        .values
        .iter()
        .enumerate()
        .filter_map(|(index, value)| {
            let value = (*value)?;
            (!known(index.checked_sub(1)) && !known(Some(index + 1))).then_some((index, value))
        })
        .collect()
}

fn legend(series: &[Series]) -> Markup {
    html! {
        ul.legend {
            @for one in series {
                li class=(one.class) { span.swatch aria-hidden="true" {} (one.label) }
            }
        }
    }
}

/// The chart's numbers, minute by minute (the minutes with any value).
fn numbers(hour: &Hour, series: &[Series], unit: Unit) -> Markup {
    let rows: Vec<usize> = (0..MINUTES)
        .filter(|index| series.iter().any(|one| one.values[*index].is_some()))
        .collect();
    html! {
        details.numbers {
            summary { "Numbers" }
            @if rows.is_empty() {
                p.hint { "No data in the last hour." }
            } @else {
                table.list {
                    thead { tr { th scope="col" { "Minute (UTC)" } @for one in series { th scope="col" { (one.label) } } } }
                    tbody {
                        @for index in rows.iter().rev() {
                            tr {
                                th scope="row" { (hour.minute(*index).format("%H:%M")) }
                                @for one in series {
                                    td.num { @match one.values[*index] { Some(value) => (unit.format(value)), None => "—" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn summary(series: &[Series], unit: Unit) -> String {
    let parts: Vec<String> = series
        .iter()
        .map(|one| match (one.latest(), one.peak()) {
            (Some(latest), Some(peak)) => format!(
                "{}: latest {}, peak {}",
                one.label,
                unit.format(latest),
                unit.format(peak)
            ),
            _ => format!("{}: no data", one.label),
        })
        .collect();
    format!("Last hour. {}.", parts.join("; "))
}

/// A chart's frame: its heading, legend, the SVG (titled and summarized
/// for screen readers) and its numbers.
fn figure(id: &str, title: &str, hour: &Hour, series: &[Series], unit: Unit, drawing: Markup) -> Markup {
    let empty = series.iter().all(|one| one.values.iter().all(Option::is_none));
    html! {
        figure.chart id=(id) {
            figcaption { h2 { (title) } (legend(series)) }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby={ (id) "-title " (id) "-desc" } preserveAspectRatio="xMidYMid meet" {
                title id={ (id) "-title" } { (title) }
                desc id={ (id) "-desc" } { (summary(series, unit)) }
                (drawing)
                @if empty {
                    text.empty x=(px((LEFT + WIDTH - RIGHT) / 2.0)) y=(px((TOP + HEIGHT - BOTTOM) / 2.0)) text-anchor="middle" { "No data in the last hour" }
                }
            }
            (numbers(hour, series, unit))
        }
    }
}

/// Lines over the hour, one per series.
pub fn lines(id: &str, title: &str, hour: &Hour, series: &[Series], unit: Unit) -> Markup {
    let peak = series.iter().filter_map(Series::peak).fold(0.0, f64::max);
    let top = unit.top(peak);
    let drawing = html! {
        (axes(hour, top, unit))
        @for one in series {
            g class={ "series " (one.class) } {
                path.line d=(path(one, top)) fill="none" stroke-dasharray=[one.dashed.then_some("6 4")] {}
                @for (index, value) in lone_points(one) {
                    circle.point cx=(px(x_of(index))) cy=(px(y_of(value, top))) r="2.5" {}
                }
            }
        }
    };
    figure(id, title, hour, series, unit, drawing)
}

/// One bar of a stack: a series' value at a minute, above the ones below.
struct Bar {
    index: usize,
    class: &'static str,
    label: &'static str,
    from: f64,
    value: f64,
}

/// Bars stacked per minute, the series in the order given from the bottom.
pub fn stacked(id: &str, title: &str, hour: &Hour, series: &[Series], unit: Unit) -> Markup {
    let mut bars = Vec::new();
    let mut peak: f64 = 0.0;
    for index in 0..MINUTES {
        let mut below = 0.0;
        for one in series {
            if let Some(value) = one.values[index].filter(|value| *value > 0.0) {
                bars.push(Bar {
                    index,
                    class: one.class,
                    label: one.label,
                    from: below,
                    value,
                });
                below += value;
            }
        }
        peak = peak.max(below);
    }
    let top = unit.top(peak);
    let width = (WIDTH - LEFT - RIGHT) / MINUTES as f64 * 0.72;
    let drawing = html! {
        (axes(hour, top, unit))
        @for bar in &bars {
            @let bottom = y_of(bar.from, top);
            @let upper = y_of(bar.from + bar.value, top);
            rect class={ "bar " (bar.class) } x=(px(x_of(bar.index) - width / 2.0)) y=(px(upper))
                width=(px(width)) height=(px((bottom - upper).max(0.5))) {
                title { (hour.minute(bar.index).format("%H:%M")) " " (bar.label) ": " (unit.format(bar.value)) }
            }
        }
    };
    figure(id, title, hour, series, unit, drawing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_axis_tops_at_a_round_number() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(0.037), 0.05);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn the_axis_steps_by_round_values() {
        assert_eq!(steps(5.0), 5);
        assert_eq!(steps(500.0), 5);
        assert_eq!(steps(2.5), 5);
        assert_eq!(steps(1.0), 5);
        assert_eq!(steps(0.2), 4);
        assert_eq!(steps(4.0), 4);
    }

    #[test]
    fn the_hour_holds_the_sixty_minutes_ending_with_the_last_one() {
        let hour = Hour::ending(at("2026-12-07T16:46:31Z"));
        assert_eq!(hour.minute(0), at("2026-12-07T15:47:00Z"));
        assert_eq!(hour.minute(MINUTES - 1), at("2026-12-07T16:46:00Z"));
        assert_eq!(hour.index(at("2026-12-07T16:46:00Z")), Some(59));
        assert_eq!(hour.index(at("2026-12-07T15:47:00Z")), Some(0));
        assert_eq!(hour.index(at("2026-12-07T15:46:00Z")), None, "before the hour");
        assert_eq!(hour.index(at("2026-12-07T16:47:00Z")), None, "after it");
    }

    #[test]
    fn a_line_breaks_where_a_minute_is_unknown_and_a_lone_point_is_marked() {
        let mut series = Series::new("p50", "c-p50");
        series.add(0, 1.0);
        series.add(1, 2.0);
        series.add(3, 1.0);
        let drawn = path(&series, 2.0);
        assert_eq!(drawn.matches('M').count(), 2, "{drawn}");
        assert_eq!(drawn.matches('L').count(), 1, "{drawn}");
        assert_eq!(lone_points(&series), [(3, 1.0)]);
    }

    #[test]
    fn values_read_as_counts_or_seconds() {
        assert_eq!(Unit::Count.format(3.0), "3");
        assert_eq!(Unit::Count.format(2500.0), "2.5k");
        assert_eq!(Unit::Count.format(25_000.0), "25k");
        assert_eq!(Unit::Seconds.format(0.25), "0.25 s");
        assert_eq!(Unit::Seconds.format(1.5), "1.5 s");
        assert_eq!(Unit::Seconds.format(12.4), "12 s");
    }

    #[test]
    fn stacked_bars_draw_each_known_value_and_an_empty_chart_says_so() {
        let hour = Hour::ending(at("2026-12-07T16:46:00Z"));
        let mut ok = Series::new("Succeeded", "c-succeeded");
        let mut failed = Series::new("Failed", "c-failed");
        ok.add(59, 10.0);
        failed.add(59, 2.0);
        ok.add(10, 4.0);
        let drawn = stacked("sessions", "Sessions", &hour, &[ok, failed], Unit::Count).into_string();
        assert_eq!(drawn.matches("<rect").count(), 3, "{drawn}");
        assert!(drawn.contains("16:46 Failed: 2"), "{drawn}");
        assert!(!drawn.contains("No data in the last hour"));
        let empty = lines("lag", "Lag", &hour, &[Series::new("p50", "c-p50")], Unit::Seconds).into_string();
        assert!(empty.contains("No data in the last hour"), "{empty}");
    }
}
