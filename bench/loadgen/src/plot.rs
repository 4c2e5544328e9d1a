//! The pictures of BENCHMARKS.md, drawn by the drivers themselves (plotters, SVG: text and lines
//! only, no font files needed, small diffs in git).
//!
//! * [`concurrency`] — `loadgen --sweep`: throughput and p99 latency against the number of
//!   connections, with the raw in-process signing rate of the same run as a reference line.
//! * [`breakdown`] — `pipeline --plot`: where an intent's time to receipt goes, phase by phase.

use std::path::Path;

use plotters::prelude::*;

/// A picture could not be drawn or written.
pub type PlotError = Box<dyn std::error::Error>;

/// One measured concurrency of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    /// Connections driving the load.
    pub concurrency: u32,
    /// Successful requests per second.
    pub throughput: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// Two charts side by side: throughput against connections (with `raw_per_s`, the raw signing
/// rate measured in the same run, as a dashed reference), and p50/p99 latency against
/// connections. Log-2 connection axis. Written as SVG to `path`.
pub fn concurrency(
    path: &Path,
    title: &str,
    points: &[SweepPoint],
    raw_per_s: f64,
) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err("no points to draw".into());
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (left, right) = root.split_horizontally(500);
    let c_max = points
        .iter()
        .map(|p| p.concurrency)
        .max()
        .unwrap_or(1)
        .max(2);
    let x_range = || (1u32..c_max).log_scale();

    let t_max = points
        .iter()
        .map(|p| p.throughput)
        .fold(raw_per_s, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("throughput", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range(), 0f64..t_max)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .x_desc("connections")
        .y_desc("requests / s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let line: Vec<(u32, f64)> = points
        .iter()
        .map(|p| (p.concurrency, p.throughput))
        .collect();
    chart
        .draw_series(LineSeries::new(line.iter().copied(), BLUE.stroke_width(2)))?
        .label("HTTP sign-agent")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.draw_series(line.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
    chart
        .draw_series(DashedLineSeries::new(
            [(1u32, raw_per_s), (c_max, raw_per_s)],
            6,
            4,
            RED.into(),
        ))?
        .label("raw k256 signing, same run")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    let l_max = points.iter().map(|p| p.p99_ms).fold(0.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("latency", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range(), 0f64..l_max.max(0.1))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .x_desc("connections")
        .y_desc("ms")
        .draw()?;
    for (name, color, pick) in [
        (
            "p50",
            GREEN,
            (|p: &SweepPoint| p.p50_ms) as fn(&SweepPoint) -> f64,
        ),
        ("p99", MAGENTA, |p: &SweepPoint| p.p99_ms),
    ] {
        let line: Vec<(u32, f64)> = points.iter().map(|p| (p.concurrency, pick(p))).collect();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(line.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// One horizontal bar per phase (its mean, milliseconds), in order from the top, labelled with the value and
/// its share of `total_ms`. Written as SVG to `path`.
pub fn breakdown(
    path: &Path,
    title: &str,
    phases: &[(String, f64)],
    total_ms: f64,
) -> Result<(), PlotError> {
    if phases.is_empty() {
        return Err("no phases to draw".into());
    }
    let n = phases.len() as u32;
    let root = SVGBackend::new(path, (1000, 60 + 34 * n)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = phases.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.35;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..max, (0u32..n).into_segmented())?;
    // The first phase at the top: row `n - 1 - i` holds phase `i`.
    let names: Vec<String> = phases.iter().rev().map(|p| p.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.1))
        .x_desc("mean ms")
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_labels(n as usize)
        .draw()?;
    chart.draw_series(phases.iter().enumerate().map(|(i, (_, ms))| {
        let i = n - 1 - i as u32;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*ms, SegmentValue::Exact(i + 1)),
            ],
            BLUE.mix(0.6).filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        bar
    }))?;
    chart.draw_series(phases.iter().enumerate().map(|(i, (_, ms))| {
        Text::new(
            format!("{ms:.2} ms ({:.1} %)", 100.0 * ms / total_ms.max(1e-9)),
            (*ms + max * 0.01, SegmentValue::CenterOf(n - 1 - i as u32)),
            ("sans-serif", 12),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_pictures_with_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = dir.path().join("sweep.svg");
        let points = [
            SweepPoint {
                concurrency: 1,
                throughput: 1234.0,
                p50_ms: 0.8,
                p99_ms: 1.5,
            },
            SweepPoint {
                concurrency: 8,
                throughput: 5678.0,
                p50_ms: 1.2,
                p99_ms: 4.0,
            },
        ];
        concurrency(&sweep, "sweep", &points, 9000.0).unwrap();
        let svg = std::fs::read_to_string(&sweep).unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.100}");
        for text in ["throughput", "latency", "raw k256 signing, same run", "p99"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let bars = dir.path().join("bars.svg");
        let phases = vec![("sign".to_owned(), 1.0), ("prepare".to_owned(), 3.0)];
        breakdown(&bars, "intent", &phases, 4.0).unwrap();
        let svg = std::fs::read_to_string(&bars).unwrap();
        for text in ["prepare", "3.00 ms (75.0 %)", "1.00 ms (25.0 %)"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(concurrency(&sweep, "empty", &[], 1.0).is_err());
        assert!(breakdown(&bars, "empty", &[], 1.0).is_err());
    }
}
