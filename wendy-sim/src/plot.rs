//! SVG plots of a report: the hop histogram, and delivery, correctness and control traffic
//! over simulated time.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// A named line: label, points, colour.
type Series<'a> = (&'a str, &'a Vec<(f64, f64)>, RGBColor);

/// Writes `hops.svg`, `delivery.svg`, `correctness.svg`, `control.svg` and `nodes.svg` into `dir`.
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
    errors(report, &dir.join("correctness.svg"))?;
    let ctl: Vec<(f64, f64)> =
        report.timeline.iter().filter(|b| b.live_mean > 0.0).map(|b| (b.t_s, b.control_msgs_per_node_per_s)).collect();
    let steady = vec![
        (report.steady_from_s, report.control_msgs_per_node_per_s),
        (report.steady_to_s, report.control_msgs_per_node_per_s),
    ];
    let live: Vec<(f64, f64)> = report.timeline.iter().map(|b| (b.t_s, b.live as f64)).collect();
    line(
        &dir.join("control.svg"),
        "Control traffic per live node (each bucket over its own live node-seconds)",
        "control msgs / node / s",
        &[("per bucket", &ctl, BLUE), ("steady-state rate over its window", &steady, RED)],
    )?;
    line(&dir.join("nodes.svg"), "Live nodes", "nodes", &[("live", &live, BLACK)])?;
    Ok(())
}

/// A logarithmic axis for error rates in percent: from `floor` (below the smallest non-zero
/// rate; zero rates are drawn on it) to 100 %.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorAxis {
    /// The bottom of the axis, percent.
    pub floor: f64,
}

impl ErrorAxis {
    /// The axis for these rates (percent): its floor is the power of ten at or below the
    /// smallest non-zero rate, and at most 0.01 %.
    pub fn for_rates(rates: impl IntoIterator<Item = f64>) -> ErrorAxis {
        let least = rates.into_iter().filter(|&r| r > 0.0).fold(0.01f64, f64::min);
        ErrorAxis { floor: 10f64.powi(least.log10().floor() as i32) }
    }

    /// Where `rate` (percent) sits on the axis, from 0 (bottom) to 1 (100 %).
    pub fn position(&self, rate: f64) -> f64 {
        let r = rate.max(self.floor);
        (r / self.floor).log10() / (100.0 / self.floor).log10()
    }
}

/// `correctness.svg`: the rates of incorrect and lost lookups per bucket (by issue time) on a
/// log axis, so that a fraction of a percent is as visible as a total failure.
fn errors(report: &Report, path: &Path) -> PlotResult {
    let rate = |f: &dyn Fn(&crate::report::Bucket) -> u64| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .filter(|b| b.lookups.issued > 0)
            .map(|b| (b.t_s, 100.0 * f(b) as f64 / b.lookups.issued as f64))
            .collect()
    };
    let incorrect = rate(&|b| b.lookups.incorrect);
    let lost = rate(&|b| b.lookups.lost);
    let axis = ErrorAxis::for_rates(incorrect.iter().chain(&lost).map(|p| p.1));
    let at_floor =
        |v: &Vec<(f64, f64)>| -> Vec<(f64, f64)> { v.iter().map(|&(t, r)| (t, r.max(axis.floor))).collect() };
    let x1 = report.timeline.last().map_or(1.0, |b| b.t_s).max(1.0);
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Lookups incorrect and lost (by issue time, log scale)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x1, (axis.floor..100f64).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("simulated time (s)")
        .y_desc(format!("% of lookups (0 drawn at {}%)", axis.floor))
        .draw()?;
    for (name, data, color) in [("incorrect", at_floor(&incorrect), RED), ("lost", at_floor(&lost), MAGENTA)] {
        chart
            .draw_series(LineSeries::new(data, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_of_a_percent_of_errors_is_visible() {
        // 6 incorrect out of 1000 (0.6 %): on a linear 0-100 % axis it sat 0.6 % up the plot.
        let axis = ErrorAxis::for_rates([0.6, 0.0, 0.0]);
        assert!((axis.floor - 0.01).abs() < 1e-15, "{axis:?}");
        assert!(axis.position(0.6) > 0.4, "0.6 % sits at {:.3} of the height", axis.position(0.6));
        assert_eq!(axis.position(0.0), 0.0);
        assert!((axis.position(100.0) - 1.0).abs() < 1e-12);
        // A smaller rate lowers the floor so that it stays above the bottom.
        let axis = ErrorAxis::for_rates([0.002]);
        assert!((axis.floor - 0.001).abs() < 1e-15, "{axis:?}");
        assert!(axis.position(0.002) > 0.0);
    }
}
