//! SVG percentile plots (plotters): latency against percentile on HdrHistogram's usual
//! axes (x: 1/(1-p) on a log scale, so 90%, 99%, 99.9% ... are evenly spaced; y: latency
//! on a log scale), one panel per group of related operations, one line per operation
//! and run.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{OpSummary, Summary};

const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 187, 120),
];

/// Microseconds for an axis label.
fn us_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.0} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.0} ms", us / 1e3)
    } else if us >= 1.0 {
        format!("{us:.0} us")
    } else {
        format!("{:.0} ns", us * 1e3)
    }
}

/// The panel an operation is drawn in: the workload part of its name (`lookup`,
/// `churn-register` -> `churn`, `cluster-propagation` -> `cluster`), so related
/// operations share a chart and unrelated scales do not.
fn group_of(op: &str) -> &str {
    op.split(['-', '_']).next().unwrap_or(op)
}

/// Plots every operation of every run in `runs` (label, summary) into `path`: one panel
/// per group of related operations, each with its own latency scale and legend. With
/// two runs, the first is drawn dashed so the second overlays it.
pub fn percentiles(path: &Path, runs: &[(&str, &Summary)]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let mut groups: std::collections::BTreeMap<&str, Vec<(usize, &str, &str, &OpSummary)>> =
        Default::default();
    for (run, (label, s)) in runs.iter().enumerate() {
        for (name, o) in &s.ops {
            groups
                .entry(group_of(name))
                .or_default()
                .push((run, label, name.as_str(), o));
        }
    }
    let n = groups.len().max(1);
    let cols = if n > 1 { 2 } else { 1 };
    let rows = n.div_ceil(cols);
    let root =
        SVGBackend::new(path, (cols as u32 * 620, rows as u32 * 400 + 50)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = match runs {
        [(_, s)] => format!("Roster latency by percentile: {}", s.workload),
        _ => "Roster latency by percentile: comparison (first run dashed)".to_string(),
    };
    let root = root
        .titled(&title, ("sans-serif", 24))
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((rows, cols));
    for ((group, series), area) in groups.iter().zip(panels.iter()) {
        panel(area, group, series, runs.len()).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One panel: the operations of one group.
fn panel(
    area: &Area<'_>,
    group: &str,
    series: &[(usize, &str, &str, &OpSummary)],
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    // x = log10(1 / (1 - p)), capped at 99.999%.
    let x_of = |pct: f64| {
        let q = (pct / 100.0).min(0.99999);
        (1.0 / (1.0 - q)).log10()
    };
    let (mut lo, mut hi) = (u64::MAX, 1u64);
    for (_, _, _, o) in series {
        for &(p, v) in &o.percentiles {
            if (10.0..100.0).contains(&p) {
                lo = lo.min(v.max(1));
                hi = hi.max(v);
            }
        }
    }
    if lo > hi {
        lo = 1;
    }
    let (y_lo, y_hi) = ((lo as f64 / 1e3 / 1.5).max(0.001), hi as f64 / 1e3 * 1.5);
    let mut chart = ChartBuilder::on(area)
        .caption(group, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x_of(10.0)..5f64, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .y_label_formatter(&|us| us_label(*us))
        .x_labels(6)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "10%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            4 => "99.99%".into(),
            _ => "99.999%".into(),
        })
        .draw()?;
    for (i, &(run, label, name, o)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = o
            .percentiles
            .iter()
            // p0 (the minimum) and p100 (the maximum) are not on this axis.
            .filter(|(p, _)| *p >= 10.0 && *p < 100.0)
            .map(|&(p, v)| (x_of(p), v.max(1) as f64 / 1e3))
            .collect();
        let legend = if label.is_empty() {
            name.to_string()
        } else {
            format!("{label}: {name}")
        };
        let style = ShapeStyle::from(&c).stroke_width(2);
        let drawn = if runs > 1 && run == 0 {
            chart.draw_series(DashedLineSeries::new(points, 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(points, style))?
        };
        drawn
            .label(legend)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    // Latency rises to the right: the lower right is where the lines are not.
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}
