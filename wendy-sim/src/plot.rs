//! SVG plots of a report: the hop histogram, and delivery, correctness and control traffic
//! over simulated time.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// A named line: label, points, colour.
type Series<'a> = (&'a str, &'a Vec<(f64, f64)>, RGBColor);

/// Writes `hops.svg`, `delivery.svg`, `correctness.svg` and `control.svg` into `dir`.
pub fn write_svgs(report: &Report, dir: &Path) -> PlotResult {
    std::fs::create_dir_all(dir)?;
    hops(report, &dir.join("hops.svg"))?;
    let t: Vec<f64> = report.timeline.iter().map(|b| b.t_s).collect();
    let ratio = |f: &dyn Fn(&crate::report::Bucket) -> u64| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .zip(&t)
            .filter(|(b, _)| b.lookups.issued > 0)
            .map(|(b, &x)| (x, 100.0 * f(b) as f64 / b.lookups.issued as f64))
            .collect()
    };
    let delivered = ratio(&|b| b.lookups.delivered);
    let lost = ratio(&|b| b.lookups.lost);
    line(
        &dir.join("delivery.svg"),
        "Lookups delivered and lost (by issue time)",
        "% of lookups",
        &[("delivered", &delivered, BLUE), ("lost", &lost, RED)],
    )?;
    let correct = ratio(&|b| b.lookups.correct);
    let incorrect = ratio(&|b| b.lookups.incorrect);
    line(
        &dir.join("correctness.svg"),
        "Lookups correct and incorrect (by issue time)",
        "% of lookups",
        &[("correct", &correct, GREEN), ("incorrect", &incorrect, RED)],
    )?;
    let width = report.timeline.get(1).map_or(1.0, |b| b.t_s) - report.timeline.first().map_or(0.0, |b| b.t_s);
    let ctl: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .filter(|b| b.live > 0)
        .map(|b| (b.t_s, b.control_msgs as f64 / b.live as f64 / width.max(1e-9)))
        .collect();
    let live: Vec<(f64, f64)> = report.timeline.iter().map(|b| (b.t_s, b.live as f64)).collect();
    line(&dir.join("control.svg"), "Control traffic", "control msgs / node / s", &[("msgs/node/s", &ctl, BLUE)])?;
    line(&dir.join("nodes.svg"), "Live nodes", "nodes", &[("live", &live, BLACK)])?;
    Ok(())
}

fn hops(report: &Report, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = report.hops_histogram.len().max(1) as u32;
    let top = report.hops_histogram.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Hops per lookup ({} nodes, mean {:.2})", report.nodes, report.hops_mean), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..n).into_segmented(), 0u64..top + top / 10 + 1)?;
    chart.configure_mesh().disable_x_mesh().x_desc("hops").y_desc("lookups").draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.filled())
            .margin(4)
            .data(report.hops_histogram.iter().enumerate().map(|(h, &c)| (h as u32, c))),
    )?;
    root.present()?;
    Ok(())
}

fn line(path: &Path, title: &str, y_desc: &str, series: &[Series<'_>]) -> PlotResult {
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = series.iter().flat_map(|s| s.1.iter());
    let (mut x1, mut y1) = (1.0f64, 1.0f64);
    for &(x, y) in all {
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x1, 0f64..y1 * 1.05)?;
    chart.configure_mesh().x_desc("simulated time (s)").y_desc(y_desc).draw()?;
    for &(name, data, color) in series {
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
