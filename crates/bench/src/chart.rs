//! The PNG chart of a scenario's runs: answers per quarter minute (top)
//! and 429s the server sent per quarter minute (bottom), one line per
//! strategy, over scenario time (a tick on the base line every scenario
//! minute). No text is drawn, so no font is needed (plotters' text needs
//! system fonts through font-kit or a bundled font): the colours are fixed
//! (see [`COLOURS`]) and the harness prints the legend.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;
use crate::strategy::Strategy;

/// Each strategy's colour, as (strategy, name of the colour, RGB).
pub const COLOURS: [(Strategy, &str, (u8, u8, u8)); 5] = [
    (Strategy::Naive, "red", (220, 40, 40)),
    (Strategy::SdkStandard, "orange", (240, 150, 0)),
    (Strategy::SdkAdaptive, "purple", (140, 60, 200)),
    (Strategy::TowerRetryRateLimit, "blue", (40, 90, 220)),
    (Strategy::Stack, "green", (20, 160, 60)),
];

/// The legend in words.
pub fn legend() -> String {
    let parts: Vec<String> = COLOURS
        .iter()
        .map(|(s, c, _)| format!("{c} = {}", s.name()))
        .collect();
    format!(
        "top: answers per quarter minute (grey: the attainable rate), bottom: 429s per quarter minute; {}",
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

/// Draws the chart of `report` into `path` (PNG, 1000 x 600).
pub fn draw(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(360);
    let minutes = (report.scenario.minutes + report.scenario.drain_minutes) as f64;
    let max_answered = report
        .runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|s| s.answered))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_429 = report
        .runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|s| s.throttled))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let quarter =
        crate::strategy::request_rate(&report.scenario) / crate::run::SAMPLES_PER_MINUTE as f64;

    let mut upper = ChartBuilder::on(&top)
        .margin(12)
        .build_cartesian_2d(0f64..minutes, 0f64..(max_answered.max(quarter) * 1.1))?;
    upper.configure_mesh().disable_mesh().draw()?;
    upper.draw_series(LineSeries::new(
        [(0.0, quarter), (minutes, quarter)],
        RGBColor(160, 160, 160).stroke_width(1),
    ))?;
    let mut lower = ChartBuilder::on(&bottom)
        .margin(12)
        .build_cartesian_2d(0f64..minutes, 0f64..(max_429 * 1.1))?;
    lower.configure_mesh().disable_mesh().draw()?;
    for r in &report.runs {
        let c = colour(r.strategy);
        upper.draw_series(LineSeries::new(
            r.timeline.iter().map(|s| (s.minute, s.answered as f64)),
            c.stroke_width(2),
        ))?;
        lower.draw_series(LineSeries::new(
            r.timeline.iter().map(|s| (s.minute, s.throttled as f64)),
            c.stroke_width(2),
        ))?;
    }
    // No text: a black base line and a tick at every scenario minute.
    for (chart, top_y) in [
        (&mut upper, max_answered.max(quarter) * 1.1),
        (&mut lower, max_429 * 1.1),
    ] {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (minutes, 0.0)],
            BLACK.stroke_width(1),
        )))?;
        chart.draw_series((0..=minutes as usize).map(|m| {
            PathElement::new(
                vec![(m as f64, 0.0), (m as f64, top_y * 0.04)],
                BLACK.stroke_width(1),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
