//! The PNG chart of a scenario's runs: a title, then three panels over
//! scenario time (calls answered, 429s and 503s the server sent, or the
//! exceptions it sent inside streams when the scenario streams; each per
//! quarter scenario minute), one line per strategy, the ideal schedule's
//! answers as a grey line, fault minutes shaded, axes with units and a
//! legend.
//!
//! Text is drawn with Noto Sans, compiled into the binary from the
//! `notosans` crate (the font is under the SIL Open Font License 1.1; the
//! crate's code under MIT or Apache-2.0) and registered with plotters'
//! `ab_glyph` backend: no system font is needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::Report;
use crate::run::{RunResult, SAMPLES_PER_MINUTE};
use crate::strategy::Strategy;

/// Each strategy's colour, as (strategy, name of the colour, RGB).
pub const COLOURS: [(Strategy, &str, (u8, u8, u8)); 5] = [
    (Strategy::Naive, "red", (220, 40, 40)),
    (Strategy::SdkStandard, "orange", (240, 150, 0)),
    (Strategy::SdkAdaptive, "purple", (140, 60, 200)),
    (Strategy::TowerRetryRateLimit, "blue", (40, 90, 220)),
    (Strategy::Stack, "green", (20, 160, 60)),
];

/// The font family name the charts register and use.
pub const FONT: &str = "bench-sans";

/// Width and height of a chart, in pixels.
pub const SIZE: (u32, u32) = (1280, 960);

const GREY: RGBColor = RGBColor(185, 185, 185);
const FAULT: RGBColor = RGBColor(255, 225, 200);
const LEGEND_WIDTH: u32 = 270;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The bundled font did not load.
    #[error("the bundled font could not be registered")]
    Font,
    /// Drawing or writing the PNG failed.
    #[error("drawing the chart: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Registers the bundled font (once per process).
pub fn register_bundled_font() -> Result<(), ChartError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, notosans::REGULAR_TTF).is_ok()
            && register_font(FONT, FontStyle::Bold, notosans::BOLD_TTF).is_ok()
    });
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

/// The legend in words (printed by the harness too).
pub fn legend() -> String {
    let parts: Vec<String> = COLOURS
        .iter()
        .map(|(s, c, _)| format!("{c} = {}", s.name()))
        .collect();
    format!(
        "panels: answers, 429s, 503s (streaming: in-stream exceptions) per quarter scenario minute; grey = the ideal schedule's answers; \
         shaded = fault minutes; {}",
        parts.join(", ")
    )
}

fn colour(s: Strategy) -> RGBColor {
    let (_, _, (r, g, b)) = COLOURS
        .iter()
        .find(|(x, _, _)| *x == s)
        .copied()
        .unwrap_or((s, "black", (0, 0, 0)));
    RGBColor(r, g, b)
}

/// Draws the chart of `report` into `path` (PNG, [`SIZE`]).
pub fn draw(report: &Report, path: &Path) -> Result<(), ChartError> {
    register_bundled_font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw_on(report, &root)?;
    root.present().map_err(draw_err)
}

/// Draws the chart of `report` into an RGB buffer of [`SIZE`] (3 bytes a
/// pixel).
pub fn draw_to_buffer(report: &Report) -> Result<Vec<u8>, ChartError> {
    register_bundled_font()?;
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        draw_on(report, &root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// One panel: what it shows of a run.
struct Panel {
    caption: &'static str,
    unit: &'static str,
    value: fn(&RunResult, usize) -> u64,
    ideal: bool,
}

const PANELS: [Panel; 4] = [
    Panel {
        caption: "Calls answered",
        unit: "answers per 15 s",
        value: |r, i| r.timeline[i].answered,
        ideal: true,
    },
    Panel {
        caption: "429s the server sent (every attempt)",
        unit: "429s per 15 s",
        value: |r, i| r.timeline[i].throttled,
        ideal: false,
    },
    Panel {
        caption: "503s the server sent (every attempt)",
        unit: "503s per 15 s",
        value: |r, i| r.timeline[i].unavailable,
        ideal: false,
    },
    Panel {
        caption: "Exceptions the server sent inside streams (every attempt)",
        unit: "exceptions per 15 s",
        value: |r, i| r.timeline[i].in_stream,
        ideal: false,
    },
];

/// The panels of a scenario: answers, 429s, and 503s (or, when the
/// scenario streams, the exceptions sent inside streams).
fn panels(streaming: bool) -> [&'static Panel; 3] {
    [
        &PANELS[0],
        &PANELS[1],
        &PANELS[if streaming { 3 } else { 2 }],
    ]
}

/// An axis label for whole numbers only (counts have no fractions).
fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

fn draw_on<DB: DrawingBackend>(
    report: &Report,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), ChartError> {
    let s = &report.scenario;
    root.fill(&WHITE).map_err(draw_err)?;
    let (head, body) = root.split_vertically(78);
    head.draw_text(
        &format!("Scenario {}", s.name),
        &(FONT, 26).into_font().style(FontStyle::Bold).color(&BLACK),
        (16, 8),
    )
    .map_err(draw_err)?;
    head.draw_text(
        &s.description,
        &(FONT, 17).into_font().color(&BLACK),
        (16, 42),
    )
    .map_err(draw_err)?;

    let (plots, side) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let minutes = (s.minutes + s.drain_minutes) as f64;
    let areas = plots.split_by_breakpoints::<i32, i32, _, _>(
        [] as [i32; 0],
        [
            ((SIZE.1 - 78) as f64 * 0.44) as i32,
            ((SIZE.1 - 78) as f64 * 0.72) as i32,
        ],
    );
    let bins = (s.minutes + s.drain_minutes) * SAMPLES_PER_MINUTE;
    for (panel, area) in panels(s.streaming).into_iter().zip(&areas) {
        let mut top = report
            .runs
            .iter()
            .flat_map(|r| (0..r.timeline.len().min(bins)).map(|i| (panel.value)(r, i)))
            .max()
            .unwrap_or(0);
        if panel.ideal {
            top = top.max(report.ideal.timeline.iter().copied().max().unwrap_or(0));
        }
        let y_max = ((top.max(1) as f64) * 1.12).ceil();
        let mut chart = ChartBuilder::on(area)
            .caption(panel.caption, (FONT, 18).into_font().style(FontStyle::Bold))
            .margin_left(10)
            .margin_right(16)
            .margin_bottom(6)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..minutes, 0f64..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .x_labels((minutes as usize + 1).min(24))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_labels(6)
            .y_label_formatter(&integer_label)
            .x_desc("scenario minutes")
            .y_desc(panel.unit)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(draw_err)?;
        // Fault minutes, shaded under the lines.
        for f in &s.faults {
            let end = f
                .minutes
                .map_or(s.minutes, |n| (f.from_minute + n).min(s.minutes));
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(f.from_minute as f64, 0.0), (end as f64, y_max)],
                    FAULT.mix(0.6).filled(),
                )))
                .map_err(draw_err)?;
        }
        if panel.ideal {
            chart
                .draw_series(LineSeries::new(
                    report
                        .ideal
                        .timeline
                        .iter()
                        .enumerate()
                        .map(|(i, v)| ((i + 1) as f64 / SAMPLES_PER_MINUTE as f64, *v as f64)),
                    // Wide and light, under the strategies' lines.
                    GREY.stroke_width(6),
                ))
                .map_err(draw_err)?;
        }
        for r in &report.runs {
            let c = colour(r.strategy);
            chart
                .draw_series(LineSeries::new(
                    (0..r.timeline.len().min(bins))
                        .map(|i| (r.timeline[i].minute, (panel.value)(r, i) as f64)),
                    c.stroke_width(2),
                ))
                .map_err(draw_err)?;
        }
    }
    draw_legend(report, &side)
}

/// The legend column: one line per strategy with its goodput, the ideal
/// line, the fault shading, and the scale of time.
fn draw_legend<DB: DrawingBackend>(
    report: &Report,
    side: &DrawingArea<DB, Shift>,
) -> Result<(), ChartError> {
    let s = &report.scenario;
    let text = (FONT, 15).into_font().color(&BLACK);
    let small = (FONT, 13).into_font().color(&BLACK);
    let mut y = 40;
    side.draw_text(
        "Legend",
        &(FONT, 18).into_font().style(FontStyle::Bold).color(&BLACK),
        (10, y),
    )
    .map_err(draw_err)?;
    y += 32;
    let line = |y: i32, c: ShapeStyle| -> Result<(), ChartError> {
        side.draw(&PathElement::new(vec![(10, y + 9), (44, y + 9)], c))
            .map_err(draw_err)
    };
    for r in &report.runs {
        line(y, colour(r.strategy).stroke_width(3))?;
        side.draw_text(r.strategy.name(), &text, (52, y))
            .map_err(draw_err)?;
        side.draw_text(
            &format!("goodput {:.1} %, {} 429s", r.goodput * 100.0, r.server_429),
            &small,
            (52, y + 19),
        )
        .map_err(draw_err)?;
        y += 46;
    }
    line(y, GREY.stroke_width(6))?;
    side.draw_text("ideal schedule", &text, (52, y))
        .map_err(draw_err)?;
    side.draw_text("(answers only)", &small, (52, y + 19))
        .map_err(draw_err)?;
    y += 46;
    if !s.faults.is_empty() {
        side.draw(&Rectangle::new(
            [(10, y + 2), (44, y + 16)],
            FAULT.mix(0.6).filled(),
        ))
        .map_err(draw_err)?;
        side.draw_text("fault minutes", &text, (52, y))
            .map_err(draw_err)?;
        for (i, f) in s.faults.iter().enumerate() {
            side.draw_text(
                &format!("{} at {:.0} %", f.kind, f.rate * 100.0),
                &small,
                (52, y + 19 + 17 * i as i32),
            )
            .map_err(draw_err)?;
        }
        y += 46 + 17 * (s.faults.len() as i32 - 1).max(0);
    }
    y += 12;
    for note in [
        format!("1 scenario minute = {} ms", s.window_ms),
        "of wall time; counts per".to_owned(),
        "quarter scenario minute (15 s)".to_owned(),
    ] {
        side.draw_text(&note, &small, (10, y)).map_err(draw_err)?;
        y += 18;
    }
    if let Some(v) = &report.verdict {
        y += 12;
        side.draw_text(
            &format!("stack verdict: {}", if v.pass { "PASS" } else { "FAIL" }),
            &(FONT, 15).into_font().style(FontStyle::Bold).color(&BLACK),
            (10, y),
        )
        .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::run::Sample;
    use crate::spec::Scenario;

    fn report() -> Report {
        let s = Scenario::storm_503();
        let ideal = crate::ideal::ideal(&s);
        let bins = (s.minutes + s.drain_minutes) * SAMPLES_PER_MINUTE;
        let runs = [Strategy::Naive, Strategy::Stack]
            .into_iter()
            .map(|strategy| RunResult {
                strategy,
                calls: 800,
                answered: 800,
                attainable: 800.0,
                goodput: 1.0,
                lost: 0,
                lost_by_reason: BTreeMap::new(),
                server_429: 0,
                server_503: 0,
                server_requests: 800,
                attempts_per_success: 1.0,
                fallbacks: 0,
                stream_exceptions: 0,
                ttfe_p50_s: None,
                ttfe_p95_s: None,
                ttfe_p99_s: None,
                p50_s: Some(1.3),
                p95_s: Some(1.3),
                p99_s: Some(1.3),
                jain: 1.0,
                worst_share: 1.0,
                apps: vec![],
                timeline: (0..bins)
                    .map(|i| Sample {
                        minute: (i + 1) as f64 / SAMPLES_PER_MINUTE as f64,
                        answered: 25,
                        throttled: (i % 3) as u64,
                        unavailable: 0,
                        in_stream: 0,
                    })
                    .collect(),
                elapsed_s: 1.0,
                note: None,
            })
            .collect();
        Report {
            attainable: ideal.served as f64,
            verdict: None,
            scenario: s,
            ideal,
            runs,
        }
    }

    fn pixel(buf: &[u8], x: u32, y: u32) -> (u8, u8, u8) {
        let i = ((y * SIZE.0 + x) * 3) as usize;
        (buf[i], buf[i + 1], buf[i + 2])
    }

    #[test]
    fn the_chart_has_text_and_a_legend() {
        let buf = draw_to_buffer(&report()).expect("drawn");
        assert_eq!(buf.len(), (SIZE.0 * SIZE.1 * 3) as usize);
        // The title band holds dark glyph pixels (text needs the font).
        let dark = (0..SIZE.0)
            .flat_map(|x| (0..70).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let (r, g, b) = pixel(&buf, x, y);
                r < 80 && g < 80 && b < 80
            })
            .count();
        assert!(dark > 200, "title band has {dark} dark pixels");
        // The legend column holds each strategy's colour.
        for s in [Strategy::Naive, Strategy::Stack] {
            let c = colour(s);
            let found = (SIZE.0 - LEGEND_WIDTH..SIZE.0)
                .flat_map(|x| (78..SIZE.1).map(move |y| (x, y)))
                .any(|(x, y)| pixel(&buf, x, y) == (c.0, c.1, c.2));
            assert!(found, "no {} in the legend", s.name());
        }
    }

    #[test]
    fn whole_numbers_only_on_the_count_axes() {
        assert_eq!(integer_label(&2.0), "2");
        assert_eq!(integer_label(&0.5), "");
    }
}
