//! The report's plots, as inline SVG drawn with plotters (its SVG backend needs no font
//! files: text stays text, so the page prints sharp). Each function takes plain numbers
//! and returns one `<svg>` element.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// The size of every plot, in CSS pixels.
pub const W: u32 = 640;
pub const H: u32 = 360;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type R = Result<(), plotters::drawing::DrawingAreaErrorKind<std::io::Error>>;

/// What a point shows, by colour and shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    Completed,
    Infeasible,
    Best,
    Stopped,
    Failed,
}

pub const BLUE_: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE_: RGBColor = RGBColor(255, 127, 14);
pub const GREEN_: RGBColor = RGBColor(44, 160, 44);
pub const RED_: RGBColor = RGBColor(214, 39, 40);
pub const PURPLE_: RGBColor = RGBColor(148, 103, 189);
pub const GREY_: RGBColor = RGBColor(150, 150, 150);

impl Mark {
    pub fn colour(self) -> RGBColor {
        match self {
            Mark::Completed => BLUE_,
            Mark::Infeasible => ORANGE_,
            Mark::Best => GREEN_,
            Mark::Stopped => PURPLE_,
            Mark::Failed => RED_,
        }
    }
}

/// Draw with `f` on a fresh white plot; a plot that fails to draw says so in its place.
fn svg(f: impl FnOnce(&Area) -> R) -> String {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (W, H)).into_drawing_area();
        let drawn = root.fill(&WHITE).and_then(|_| f(&root)).and_then(|_| root.present());
        if let Err(e) = drawn {
            tracing::warn!("a plot of the report could not be drawn: {e}");
        }
    }
    s
}

/// A range around `values` with a margin, never empty.
pub fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * lo.abs().max(1.0) {
        let pad = lo.abs().max(1.0) * 0.05;
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn label(x: &f64) -> String {
    super::num(*x)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The chart of an x-y plot: its title, axes over the ranges with their descriptions, and a
/// light grid (or none, under a heatmap).
fn xy<'a, 'b>(
    root: &'a Area<'b>,
    title: &str,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    (x_desc, y_desc): (&str, &str),
    grid: bool,
) -> Result<Chart<'a, 'b>, plotters::drawing::DrawingAreaErrorKind<std::io::Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc).y_desc(y_desc).x_label_formatter(&label).y_label_formatter(&label);
    if grid {
        mesh.light_line_style(RGBColor(235, 235, 235));
    } else {
        mesh.disable_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

/// A scatter plot of marked points, with lines over it (each a polyline and its colour).
pub fn scatter(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(f64, f64, Mark)],
    lines: &[(Vec<(f64, f64)>, RGBColor)],
) -> String {
    let xs = points.iter().map(|p| p.0).chain(lines.iter().flat_map(|l| l.0.iter().map(|p| p.0)));
    let ys = points.iter().map(|p| p.1).chain(lines.iter().flat_map(|l| l.0.iter().map(|p| p.1)));
    let (x0, x1) = range(xs);
    let (y0, y1) = range(ys);
    svg(|root| {
        let mut chart = xy(root, title, (x0, x1), (y0, y1), (x_desc, y_desc), true)?;
        for (line, colour) in lines {
            chart.draw_series(LineSeries::new(line.iter().copied(), colour.stroke_width(2)))?;
        }
        // The best last, on top of the others.
        for mark in [Mark::Failed, Mark::Stopped, Mark::Infeasible, Mark::Completed, Mark::Best] {
            let c = mark.colour();
            let these = points.iter().filter(|p| p.2 == mark).map(|p| (p.0, p.1));
            match mark {
                Mark::Failed => {
                    chart.draw_series(these.map(|p| Cross::new(p, 4, c.stroke_width(1))))?;
                }
                Mark::Infeasible => {
                    chart.draw_series(these.map(|p| Circle::new(p, 3, c.stroke_width(1))))?;
                }
                Mark::Best => {
                    chart.draw_series(these.map(|p| Circle::new(p, 5, c.filled())))?;
                }
                _ => {
                    chart.draw_series(these.map(|p| Circle::new(p, 3, c.mix(0.7).filled())))?;
                }
            }
        }
        Ok(())
    })
}

/// Polylines (learning curves): each its points, and whether it is marked (stopped).
pub fn curves(title: &str, x_desc: &str, y_desc: &str, lines: &[(Vec<(f64, f64)>, bool)]) -> String {
    let (x0, x1) = range(lines.iter().flat_map(|l| l.0.iter().map(|p| p.0)));
    let (y0, y1) = range(lines.iter().flat_map(|l| l.0.iter().map(|p| p.1)));
    svg(|root| {
        let mut chart = xy(root, title, (x0, x1), (y0, y1), (x_desc, y_desc), true)?;
        for stopped in [false, true] {
            for (l, _) in lines.iter().filter(|l| l.1 == stopped) {
                let c = if stopped { RED_.mix(0.6) } else { BLUE_.mix(0.35) };
                chart.draw_series(LineSeries::new(l.iter().copied(), c.stroke_width(1)))?;
            }
        }
        Ok(())
    })
}

/// A colour from good (0) to bad (1): green, yellow, grey.
pub fn ramp(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: u8, b: u8, t: f64| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    if t < 0.5 {
        let u = t * 2.0;
        RGBColor(lerp(26, 240, u), lerp(150, 200, u), lerp(65, 40, u))
    } else {
        let u = (t - 0.5) * 2.0;
        RGBColor(lerp(240, 190, u), lerp(200, 190, u), lerp(40, 190, u))
    }
}

/// Parallel coordinates: one vertical axis per parameter (values in [0, 1] along its range,
/// each axis labelled with its name), one polyline per trial coloured by its rank (0 best).
pub fn parallel(title: &str, names: &[String], lines: &[(Vec<f64>, f64)]) -> String {
    let n = names.len().max(2);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(30)
            .y_label_area_size(10)
            .build_cartesian_2d(-0.3..(n as f64 - 0.7), -0.05..1.05)?;
        // Worst first, so that the best are drawn on top.
        let mut order: Vec<&(Vec<f64>, f64)> = lines.iter().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (ys, rank) in order {
            let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect();
            chart.draw_series(LineSeries::new(pts, ramp(*rank).mix(0.5).stroke_width(1)))?;
        }
        for (i, name) in names.iter().enumerate() {
            let x = i as f64;
            chart.draw_series(LineSeries::new([(x, 0.0), (x, 1.0)], BLACK.stroke_width(1)))?;
            chart.draw_series(std::iter::once(Text::new(
                name.clone(),
                (x - 0.1, -0.04),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))?;
        }
        Ok(())
    })
}

/// A filled contour (a heatmap of `grid`, rows along y) over [x0, x1] x [y0, y1], with the
/// trials' points on it; low values green (for a minimized objective).
#[allow(clippy::too_many_arguments)]
pub fn contour(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    grid: &[Vec<f64>],
    low_is_good: bool,
    points: &[(f64, f64)],
) -> String {
    let (lo, hi) = range(grid.iter().flatten().copied());
    svg(|root| {
        let mut chart = xy(root, title, (x0, x1), (y0, y1), (x_desc, y_desc), false)?;
        let rows = grid.len().max(1);
        let cols = grid.first().map_or(1, Vec::len).max(1);
        let (dx, dy) = ((x1 - x0) / cols as f64, (y1 - y0) / rows as f64);
        for (j, row) in grid.iter().enumerate() {
            chart.draw_series(row.iter().enumerate().map(|(i, v)| {
                let t = (v - lo) / (hi - lo);
                let c = ramp(if low_is_good { t } else { 1.0 - t });
                let (ax, ay) = (x0 + i as f64 * dx, y0 + j as f64 * dy);
                Rectangle::new([(ax, ay), (ax + dx, ay + dy)], c.filled())
            }))?;
        }
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 2, BLACK.filled())))?;
        Ok(())
    })
}

/// Horizontal bars: each name and its value (importance), largest first.
pub fn bars(title: &str, x_desc: &str, items: &[(String, f64)]) -> String {
    let n = items.len().max(1) as f64;
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-12);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(10)
            .build_cartesian_2d(0.0..max * 1.35, 0.0..n)?;
        chart.configure_mesh().disable_y_mesh().disable_y_axis().x_desc(x_desc).x_label_formatter(&label).draw()?;
        for (k, (name, v)) in items.iter().enumerate() {
            let y = n - k as f64 - 1.0;
            chart.draw_series(std::iter::once(Rectangle::new([(0.0, y + 0.15), (*v, y + 0.85)], BLUE_.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{name} {:.0}%", v * 100.0),
                (*v + max * 0.02, y + 0.65),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))?;
        }
        Ok(())
    })
}

/// Bars over time: each (row, start, end, mark), rows named; x in seconds from the start.
pub fn timeline(title: &str, rows: &[String], spans: &[(usize, f64, f64, Mark)]) -> String {
    let n = rows.len().max(1) as f64;
    let (_, x1) = range(spans.iter().map(|s| s.2));
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..x1.max(1e-3), 0.0..n)?;
        let names = rows.to_vec();
        let row_label = move |y: &f64| {
            let k = y.floor() as usize;
            if (y - y.floor() - 0.5).abs() < 1e-6 {
                names.get(k).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("seconds since the first trial started")
            .x_label_formatter(&label)
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&row_label)
            .draw()?;
        chart.draw_series(spans.iter().map(|(row, a, b, mark)| {
            let y = *row as f64;
            Rectangle::new([(*a, y + 0.15), (b.max(a + x1 * 0.002), y + 0.85)], mark.colour().mix(0.8).filled())
        }))?;
        Ok(())
    })
}
