//! The per-minute chart as SVG, drawn by plotters (no font rendering needed: SVG text is drawn by
//! the browser).

use plotters::prelude::*;
use serde_json::Value;

const EVENTS: RGBColor = RGBColor(37, 99, 235);
const USERS: RGBColor = RGBColor(234, 88, 12);

/// The chart of `data["events_per_minute"]` (events and users per minute); a note when there is none.
pub fn svg(data: &Value) -> String {
    let points: Vec<(String, i64, i64)> = data["events_per_minute"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let minute = p["minute"].as_str().unwrap_or_default();
            // "2026-12-03T10:29:00Z" → "10:29"
            let label = minute.get(11..16).unwrap_or(minute).to_owned();
            (label, p["events"].as_i64().unwrap_or(0), p["users"].as_i64().unwrap_or(0))
        })
        .collect();
    let mut out = String::new();
    if let Err(e) = draw(&points, &mut out) {
        tracing::warn!(error = %e, "drawing the dashboard chart");
    }
    out
}

fn draw<'a>(points: &'a [(String, i64, i64)], out: &'a mut String) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(out, (960, 300)).into_drawing_area();
    root.fill(&WHITE)?;
    if points.is_empty() {
        root.draw(&Text::new("no events in the last 24 hours", (380, 140), ("sans-serif", 18).into_font()))?;
        root.present()?;
        return Ok(());
    }
    let top = points.iter().map(|p| p.1.max(p.2)).max().unwrap_or(0).max(1);
    let last = i32::try_from(points.len()).unwrap_or(i32::MAX) - 1;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0..last.max(1), 0..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_labels(12)
        .x_label_formatter(&|i| points.get(usize::try_from(*i).unwrap_or(0)).map(|p| p.0.clone()).unwrap_or_default())
        .y_desc("per minute")
        .draw()?;
    let series = |pick: fn(&(String, i64, i64)) -> i64| {
        points.iter().enumerate().map(move |(i, p)| (i32::try_from(i).unwrap_or(i32::MAX), pick(p)))
    };
    chart
        .draw_series(LineSeries::new(series(|p| p.1), EVENTS.stroke_width(2)))?
        .label("events")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], EVENTS.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(series(|p| p.2), USERS.stroke_width(2)))?
        .label("users")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], USERS.stroke_width(2)));
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_chart_is_svg_with_both_series_and_minute_labels() {
        let points: Vec<Value> = (0..60)
            .map(|i| json!({"minute": format!("2026-12-03T10:{i:02}:00Z"), "events": i * 2, "users": i}))
            .collect();
        let out = svg(&json!({ "events_per_minute": points }));
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"), "{out}");
        std::fs::write(std::env::temp_dir().join("tributary-chart-test.svg"), &out).ok();
        for colour in ["#2563EB", "#EA580C"] {
            assert!(out.matches(colour).count() >= 2, "the series and its legend in {colour}");
        }
        assert!(out.contains("10:00") && out.contains("events") && out.contains("users"));
        let empty = svg(&json!({ "events_per_minute": [] }));
        assert!(empty.contains("no events"), "{empty}");
    }
}
