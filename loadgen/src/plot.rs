//! SVG percentile plots (plotters): latency against percentile on HdrHistogram's usual
//! axes (x: 1/(1-p) on a log scale, so 90%, 99%, 99.9% ... are evenly spaced; y: latency
//! on a log scale), one line per operation and run.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;

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

/// Plots every operation of every run in `runs` (label, summary) into `path`. With two
/// runs, the first is drawn dashed so the second overlays it.
pub fn percentiles(path: &Path, runs: &[(&str, &Summary)]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    // x = log10(1 / (1 - p)), capped at 99.999%.
    let x_of = |pct: f64| {
        let q = (pct / 100.0).min(0.99999);
        (1.0 / (1.0 - q)).log10()
    };
    let mut lo = u64::MAX;
    let mut hi = 1u64;
    for (_, s) in runs {
        for o in s.ops.values() {
            for &(_, v) in &o.percentiles {
                lo = lo.min(v.max(1));
                hi = hi.max(v);
            }
        }
    }
    if lo > hi {
        lo = 1;
    }
    let (y_lo, y_hi) = ((lo as f64 / 1e3 / 2.0).max(0.001), hi as f64 / 1e3 * 2.0);

    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = match runs {
        [(_, s)] => format!("Roster latency by percentile: {}", s.workload),
        _ => "Roster latency by percentile: comparison".to_string(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_of(10.0)..5f64, (y_lo..y_hi).log_scale())
        .map_err(|e| err(&e))?;
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
        .draw()
        .map_err(|e| err(&e))?;
    let mut color = 0;
    for (run, (label, s)) in runs.iter().enumerate() {
        for (name, o) in &s.ops {
            let c = COLORS[color % COLORS.len()];
            color += 1;
            let points: Vec<(f64, f64)> = o
                .percentiles
                .iter()
                // p0 (the minimum) and p100 (the maximum) are not on this axis.
                .filter(|(p, _)| *p >= 10.0 && *p < 100.0)
                .map(|&(p, v)| (x_of(p), v.max(1) as f64 / 1e3))
                .collect();
            let legend = if label.is_empty() {
                name.clone()
            } else {
                format!("{label}: {name}")
            };
            let style = ShapeStyle::from(&c).stroke_width(2);
            let series = if runs.len() > 1 && run == 0 {
                chart.draw_series(DashedLineSeries::new(points, 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(points, style))
            };
            series
                .map_err(|e| err(&e))?
                .label(legend)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
