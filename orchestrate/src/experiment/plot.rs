//! Line charts as SVG strings, drawn by the `plotters` crate, for the HTML reports.

use plotters::prelude::*;

/// One line of a chart, with an optional highlighted point (a chosen checkpoint). Lines that
/// share a `color` are one group (a recipe's seeds); only labelled lines enter the legend.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Option<(f64, f64)>,
    /// Palette index [default: the series' position].
    pub color: Option<usize>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points,
            mark: None,
            color: None,
        }
    }
}

/// The finite range of `xs`, padded by 5% (a unit around a single value).
fn range(xs: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = xs
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return lo - 0.5..hi + 0.5;
    }
    let pad = 0.05 * (hi - lo);
    lo - pad..hi + pad
}

/// A line chart of `series` (non-finite points are left out) as an SVG document.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    size: (u32, u32),
) -> anyhow::Result<String> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let xr = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let yr = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(52)
            .build_cartesian_2d(xr, yr)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(6)
            .y_labels(6)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(s.color.unwrap_or(i)).to_rgba();
            let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
            let drawn = chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if !s.label.is_empty() {
                drawn.label(s.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(m) = s.mark.filter(|m| m.0.is_finite() && m.1.is_finite()) {
                chart
                    .draw_series(std::iter::once(Circle::new(m, 6, color.stroke_width(2))))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        if series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 11))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_its_label_and_survives_bad_points() {
        let mut a = Series::new("rl-r-1", vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)]);
        a.mark = Some((1.0, 2.0));
        let b = Series::new("rl-u-1", vec![(0.5, 1.5)]);
        let svg =
            line_chart("reward against KL", "KL", "reward", &[a, b], (400, 300)).expect("chart");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        for text in ["reward against KL", "rl-r-1", "rl-u-1", "KL"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("<polyline"), "no line drawn");
        // Nothing finite at all still draws an empty chart.
        let empty =
            line_chart("empty", "x", "y", &[Series::new("", vec![])], (200, 150)).expect("chart");
        assert!(empty.contains("empty"));
    }
}
