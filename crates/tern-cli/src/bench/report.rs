//! Plain-text and markdown rendering of benchmark results.

use std::fmt::Write as _;

use super::{Better, Outcome};

/// `16B`, `1KiB`, `4KiB`, `100B`.
pub(crate) fn size_label(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

/// A number with thousands separators when large, a few decimals when small.
pub(crate) fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let abs = value.abs();
    if abs >= 1000.0 {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if rounded < 0 {
            out.insert(0, '-');
        }
        out
    } else if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `higher` / `lower`.
pub(crate) fn better_text(better: Better) -> &'static str {
    match better {
        Better::Higher => "higher",
        Better::Lower => "lower",
    }
}

/// The human table printed by `tern bench run`.
pub(crate) fn run_table(outcomes: &[Outcome]) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "scenario".into(),
        "figure".into(),
        "value".into(),
        "unit".into(),
        "better".into(),
    ]];
    for outcome in outcomes {
        for figure in &outcome.figures {
            rows.push([
                outcome.label(),
                figure.label.to_owned(),
                format_value(figure.value),
                figure.unit.to_owned(),
                better_text(figure.better).to_owned(),
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (i, (w, cell)) in widths.iter().zip(row).enumerate() {
            let pad = w - cell.chars().count();
            // Right-align the value column.
            if i == 2 {
                let _ = write!(out, "{}{}  ", " ".repeat(pad), cell);
            } else {
                let _ = write!(out, "{}{}  ", cell, " ".repeat(pad));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    for outcome in outcomes {
        for note in &outcome.notes {
            let _ = writeln!(out, "note  {}: {note}", outcome.label());
        }
        for error in &outcome.errors {
            let _ = writeln!(out, "ERROR {}: {error}", outcome.label());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_readable() {
        assert_eq!(format_value(1_234_567.4), "1,234,567");
        assert_eq!(format_value(999.6), "1000");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(0.987), "0.99");
        assert_eq!(format_value(-1234.0), "-1,234");
    }

    #[test]
    fn sizes() {
        assert_eq!(size_label(16), "16B");
        assert_eq!(size_label(1024), "1KiB");
        assert_eq!(size_label(1500), "1500B");
    }
}
