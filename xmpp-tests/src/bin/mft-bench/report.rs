//! The report: a measurement series, a table of series with ratios to a
//! baseline, rendered as Markdown.

use std::fmt::Write as _;

/// Figures of one measurement series.
pub struct Series(pub Vec<f64>);

impl Series {
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        v[v.len() / 2]
    }
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

pub struct Table {
    pub title: String,
    pub unit: String,
    pub rows: Vec<(String, Series, Option<String>)>,
    pub baseline: Option<usize>,
    pub note: String,
    /// The targets: row, the row it is compared with, the ratio
    /// its median must reach.
    pub targets: Vec<(usize, usize, f64)>,
}

impl Table {
    pub fn new(title: &str, unit: &str) -> Table {
        Table {
            title: title.into(),
            unit: unit.into(),
            rows: Vec::new(),
            baseline: None,
            note: String::new(),
            targets: Vec::new(),
        }
    }
    /// Adds a row; returns its index (for baselines and targets).
    pub fn add(&mut self, name: &str, s: Series) -> usize {
        self.rows.push((name.into(), s, None));
        self.rows.len() - 1
    }
    pub fn add_failed(&mut self, name: &str, why: String) -> usize {
        self.rows.push((name.into(), Series(vec![]), Some(why)));
        self.rows.len() - 1
    }
    /// Requires row `row`'s median to reach `ratio` × row `against`'s.
    pub fn target(&mut self, row: usize, against: usize, ratio: f64) {
        self.targets.push((row, against, ratio));
    }
    /// One line per target: the ratio reached and whether it is met.
    fn render_targets(&self) -> String {
        let mut out = String::new();
        for &(row, against, want) in &self.targets {
            let (name, s, failed) = &self.rows[row];
            let (other, o, other_failed) = &self.rows[against];
            let got = s.median() / o.median();
            let verdict = if failed.is_some() || other_failed.is_some() || !got.is_finite() {
                "not measured".to_owned()
            } else if got >= want {
                format!("{got:.2}×, met")
            } else {
                format!(
                    "{got:.2}×, **not met** (short by {:.0} %)",
                    (1.0 - got / want) * 100.0
                )
            };
            let _ = writeln!(out, "- target: {name} ≥ {want:.1}× {other}: {verdict}");
        }
        out
    }
    pub fn render(&self) -> String {
        let mut out = format!(
            "### {}\n\n| | median {u} | min | max | ratio to baseline |\n|---|---|---|---|---|\n",
            self.title,
            u = self.unit
        );
        let base = self.baseline.map(|i| self.rows[i].1.median());
        for (i, (name, s, failed)) in self.rows.iter().enumerate() {
            if let Some(why) = failed {
                let _ = writeln!(out, "| {name} | failed: {why} | | | |");
                continue;
            }
            let ratio = match (base, self.baseline == Some(i)) {
                (_, true) => "baseline".to_owned(),
                (Some(b), false) if b > 0.0 => format!("{:.2}×", s.median() / b),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {:.1} | {ratio} |",
                s.median(),
                s.min(),
                s.max()
            );
        }
        if !self.targets.is_empty() {
            let _ = write!(out, "\n{}", self.render_targets());
        }
        if !self.note.is_empty() {
            let _ = writeln!(out, "\n{}", self.note);
        }
        out.push('\n');
        out
    }
}
