//! Plain-text output for people: aligned tables and proportional bars.
//! No IO; callers print the strings.

/// Column alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table that pads every column to its widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[(&str, Align)]) -> Self {
        Self {
            headers: headers.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// The table as lines joined by newlines, with a trailing newline. The
    /// last column is not padded, so bars do not leave trailing spaces.
    pub(crate) fn render(&self) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(self.headers[i].0.chars().count()))
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                let last = i + 1 == widths.len();
                if i > 0 {
                    out.push_str("  ");
                }
                match self.headers[i].1 {
                    Align::Left if last => out.push_str(cell),
                    Align::Left => {
                        out.push_str(cell);
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        out.extend(std::iter::repeat_n(' ', pad));
                        out.push_str(cell);
                    }
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&mut self.headers.iter().map(|h| h.0.as_str()));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
            out.push('\n');
        }
        out
    }
}

/// A horizontal bar `value / scale * width` cells long, drawn in eighths of
/// a cell; `mark` (say, the average) is drawn as `│` in the cell it lands
/// on, replacing what was there.
pub(crate) fn bar(value: f64, scale: f64, width: usize, mark: Option<f64>) -> String {
    const EIGHTHS: [char; 9] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let frac = if scale > 0.0 {
        (value / scale).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let eighths = (frac * (width * 8) as f64).round() as usize;
    let mut cells: Vec<char> = (0..width)
        .map(|i| EIGHTHS[eighths.saturating_sub(i * 8).min(8)])
        .collect();
    if let Some(m) = mark {
        if scale > 0.0 {
            let at = ((m / scale).clamp(0.0, 1.0) * width as f64).round() as usize;
            let at = at.min(width.saturating_sub(1));
            cells[at] = '│';
        }
    }
    let s: String = cells.into_iter().collect();
    s.trim_end().to_owned()
}

/// A fraction as a percentage with `digits` decimals.
pub(crate) fn pct(f: f64, digits: usize) -> String {
    format!("{:.*}%", digits, f * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&[
            ("name", Align::Left),
            ("n", Align::Right),
            ("bar", Align::Left),
        ]);
        t.row(vec!["a".into(), "10".into(), "██".into()]);
        t.row(vec!["long".into(), "2".into(), "".into()]);
        assert_eq!(t.render(), "name   n  bar\na     10  ██\nlong   2\n");
    }

    #[test]
    fn bar_is_proportional_and_marks_the_average() {
        assert_eq!(bar(1.0, 1.0, 4, None), "████");
        assert_eq!(bar(0.5, 1.0, 4, None), "██");
        assert_eq!(bar(0.5 + 1.0 / 32.0, 1.0, 4, None), "██▏");
        assert_eq!(bar(0.25, 1.0, 4, Some(0.5)), "█ │");
        assert_eq!(bar(0.0, 0.0, 4, Some(0.5)), "");
    }
}
